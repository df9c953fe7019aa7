"""The arguments of a fast-path command (no typer): positionals, options that take a
value (``--name value``, ``--name=value``; ``-o`` is ``--output``) and switches."""

from __future__ import annotations


def split_args(argv: list[str], takes: tuple[str, ...], switches: tuple[str, ...] = ()
               ) -> tuple[list[str], dict[str, str], set[str]] | None:
    """``(positionals, options, switches given)``; None for anything else (``--help``,
    an unknown option, an option without its value): typer takes those and says what
    is wrong better. After ``--`` everything is positional (a value starting with -)."""
    positionals: list[str] = []
    options: dict[str, str] = {}
    given: set[str] = set()
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            positionals += rest
            break
        name, equals, inline = arg.partition("=")
        if name in takes:
            value = inline if equals else next(rest, None)
            if value is None:
                return None
            options["--output" if name == "-o" else name] = value
        elif arg in switches:
            given.add(arg)
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positionals.append(arg)
    return positionals, options, given
