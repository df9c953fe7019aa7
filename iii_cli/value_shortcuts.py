"""What ``iii state …`` and ``iii stream …`` run: each builds a payload from its arguments
and runs ``iii trigger`` with it (same output, same exit codes).

Typed in loops like ``iii trigger``, so the common forms take a fast path (:func:`fast`,
from ``iii_cli.main``) that imports no typer: ~150 ms a call instead of ~540 ms (measured;
``iii trigger`` ~135 ms, ``python -c pass`` ~85 ms).
Help, completion and anything it does not recognise go to the typer commands
(``iii_cli/value_commands.py``), which build the payload here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from iii_cli.fast_args import split_args
from iii_cli.json_input import UsageError, check, loads_or_text
from iii_cli.trigger_fast import read_json


class Shortcut(NamedTuple):  # not a dataclass: that would load inspect on the fast path
    function_id: str
    #: The positional arguments, as the payload keys they fill, in order.
    args: tuple[str, ...]
    #: Those that are values (JSON, a bare word, @file or -), not names.
    values: tuple[str, ...] = ()
    #: Options taking a value, as ``flag -> payload key``.
    options: tuple[tuple[str, str], ...] = ()


_ITEM = ("stream_name", "group_id", "item_id")
SHORTCUTS: dict[tuple[str, str], Shortcut] = {
    ("state", "get"): Shortcut("state::get", ("scope", "key")),
    ("state", "set"): Shortcut("state::set", ("scope", "key", "value"), ("value",)),
    ("state", "update"): Shortcut("state::update", ("scope", "key", "ops"), ("ops",)),
    ("state", "delete"): Shortcut("state::delete", ("scope", "key")),
    ("state", "list"): Shortcut("state::list", ("scope",)),
    ("state", "groups"): Shortcut("state::list_groups", ()),
    ("stream", "get"): Shortcut("stream::get", _ITEM),
    ("stream", "set"): Shortcut("stream::set", (*_ITEM, "data"), ("data",)),
    ("stream", "update"): Shortcut("stream::update", (*_ITEM, "ops"), ("ops",)),
    ("stream", "delete"): Shortcut("stream::delete", _ITEM),
    ("stream", "list"): Shortcut("stream::list", ("stream_name", "group_id")),
    ("stream", "groups"): Shortcut("stream::list_groups", ("stream_name",)),
    ("stream", "send"): Shortcut("stream::send", ("stream_name", "group_id", "type", "data"),
                                 ("data",), (("--id", "id"),)),
}
#: ``iii trigger``'s options that the shortcuts pass on.
PASSED = ("-o", "--output", "--socket", "--url")


def value(text: str, key: str) -> Any:
    """A value argument: ``-`` (stdin), ``@file``, JSON, else the text as a string.

    Raises:
        UsageError: an unreadable file, invalid JSON from a file or stdin, a value the
            wire cannot carry.
    """
    if text == "-" or text.startswith("@"):
        return read_json(text, "the value")
    return loads_or_text(text, key)


def _text(text: str, key: str) -> str:
    """A name argument (scope, key, ...), as typed, if UTF-8 can carry it."""
    check(text, f"the {key}")
    return text


def run(shortcut: Shortcut, positionals: list[str], options: Mapping[str, str | None]
        ) -> int:
    """Run ``iii trigger`` for ``shortcut``; its exit code.

    Raises:
        UsageError: a value that cannot be read (nothing is sent).
    """
    from iii_cli.trigger_fast import main

    payload = {key: value(text, key) if key in shortcut.values else _text(text, key)
               for key, text in zip(shortcut.args, positionals, strict=True)}
    own = dict(shortcut.options)
    passed: list[str] = []
    for flag, text in options.items():
        if text is None:  # a typer option not given
            continue
        if flag in own:
            payload[own[flag]] = text
        else:
            passed += [flag, text]
    return main([shortcut.function_id, "--json", json.dumps(payload), *passed])


def fast(argv: list[str]) -> int | None:
    """``iii state|stream COMMAND ARGS [options]`` run at once; None when typer should
    take it (help, a mistake: it says what is wrong better)."""
    shortcut = SHORTCUTS.get((argv[0], argv[1])) if len(argv) >= 2 else None
    if shortcut is None:
        return None
    split = split_args(argv[2:], (*PASSED, *(flag for flag, _ in shortcut.options)))
    if split is None:
        return None
    positionals, options, _ = split
    if len(positionals) != len(shortcut.args):
        return None
    try:
        return run(shortcut, positionals, options)
    except UsageError as exc:
        from iii_cli.exit_codes import USAGE
        from iii_cli.trigger_fast import fail

        fail(USAGE, str(exc))
