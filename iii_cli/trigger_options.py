"""The options of ``iii trigger``, declared once.

The fast path parses them and prints ``--help`` from this table; the typer app builds its
``trigger`` command's options from it too (for completion and ``iii --help``), so the two
cannot drift. Imports nothing heavy: the fast path loads it on every call.
"""

from __future__ import annotations

from iii_sdk.limits import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS


class Option:
    __slots__ = ("help", "metavar", "names")

    def __init__(self, names: tuple[str, ...], metavar: str | None, help: str) -> None:
        self.names = names
        #: What the option takes, or None for a flag.
        self.metavar = metavar
        self.help = help


#: ``--batch`` lines sent and not yet printed, by default: as many as a worker runs at
#: once by default (its ``max_concurrency``), so that sync calls are not refused busy.
IN_FLIGHT = 64
#: The same with ``--void``: a void is answered when the daemon hands it on, so the window
#: bounds only the daemon's backlog, never the worker's; a larger one lets the daemon take
#: larger reads (measured: 10 000 voids 257 ms at 64, 197 ms at 256, 220 ms at 512).
VOID_IN_FLIGHT = 256

OPTIONS = (
    Option(("--json",), "PAYLOAD",
           "Payload: a JSON object, @file, or - for stdin; k=v pairs win over it."),
    Option(("--void",), None, "Fire and forget: exit once the daemon handed the call over."),
    Option(("--enqueue",), "QUEUE", "Through this durable queue; prints the receipt."),
    Option(("--action",), "JSON",
           'A worker-provided action, e.g. {"type":"delay","ms":5000}.'),
    Option(("--timeout-ms",), "N",
           f"Give up after N ms (default {DEFAULT_TIMEOUT_MS}, at most {MAX_TIMEOUT_MS})."),
    Option(("--batch",), "[FILE]",
           "One call per JSON line of FILE (default stdin): {\"function_id\", \"payload\", "
           "\"void\", \"enqueue\", \"timeout_ms\"}, or with FN each line is its payload. "
           "Pipelined; prints {\"line\": n, \"result\"|\"error\": ...} per line, in order."),
    Option(("--max-in-flight",), "N", "With --batch: lines sent and not yet printed, at most "
                                      f"(default {IN_FLIGHT}; {VOID_IN_FLIGHT} with --void)."),
    Option(("-o", "--output"), "json|pretty",
           "pretty (default on a terminal) or compact json (default when piped)."),
    Option(("--socket",), "PATH",
           "Daemon socket (default: $III_SOCKET, else config `socket`, else the runtime dir)."),
    Option(("--url",), "URL",
           "ws://HOST:PORT (this daemon's listener or an iii engine) or unix://PATH "
           "(default: $III_URL)."),
    Option(("-q", "--quiet"), None, "No chatter on stderr (errors that matter still show)."),
    Option(("-h", "--help"), None, "Show this message and exit."),
)

#: Option name -> its declaration.
BY_NAME = {name: option for option in OPTIONS for name in option.names}

SUMMARY = "Call a function and print its result."
EXIT_CODES = ("Exit codes: 0 ok, 1 the function failed (error JSON on stderr), 2 usage or "
              "bad payload, 3 daemon not running, 4 not found, 5 the call was lost in "
              "transit (its worker left, the daemon stopped: retry if idempotent), "
              "124 timed out, 130 interrupted. With --batch: 0 if every line succeeded, else "
              "the first of 3, 124, 5, 4, 2, 1 that a line got.")
USAGE = "usage: iii trigger FN [k=v ...] [OPTIONS] | iii trigger [FN] --batch [FILE]"


def help_text(columns: int = 80) -> str:
    """``iii trigger --help``, from the table above, wrapped to ``columns``."""
    import textwrap  # only for --help: the call path stays lean

    width = max(len(_label(option)) for option in OPTIONS)
    text_width = max(columns - width - 4, 30)
    lines = [USAGE, "", SUMMARY, ""]
    lines += textwrap.wrap("FN is a function id; each k=v adds a payload field (the value "
                           "is parsed as JSON, else taken as a string: n=3 is 3, name=bob "
                           'is "bob").', columns)
    lines += ["", *textwrap.wrap(EXIT_CODES, columns), "", "Options:"]
    for option in OPTIONS:
        wrapped = textwrap.wrap(option.help, text_width) or [""]
        lines.append(f"  {_label(option).ljust(width)}  {wrapped[0]}")
        lines += [" " * (width + 4) + more for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


def _label(option: Option) -> str:
    names = ", ".join(option.names)
    return names if option.metavar is None else f"{names} {option.metavar}"
