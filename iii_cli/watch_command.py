"""``iii watch [GLOB] [--errors] [--kind K] [-o jsonl|pretty]``: follow the daemon's
events until Ctrl-C (exit 130). Pretty lines on a terminal, JSON lines when piped, so
``iii watch -o jsonl | jq`` works in scripts."""

from __future__ import annotations

import shutil
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from iii_cli import exit_codes as ec
from iii_cli.common import SocketOption, UrlOption, fail, one_of, where
from iii_cli.events_view import line
from iii_cli.style import use_color


class WatchFormat(StrEnum):
    pretty = "pretty"
    jsonl = "jsonl"


def watch(
    function: Annotated[str | None, typer.Argument(
        metavar="[GLOB]", help="Only events of matching functions, e.g. 'orders::*'.")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only failures.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", metavar="K", help="Only these kinds (repeatable): invocation, observer, "
                                    "invocation.finished, trigger, worker, queue, ...")] = None,
    replay: Annotated[int, typer.Option(
        "--replay", min=0, help="Recent events to show first.")] = 20,
    fmt: Annotated[WatchFormat | None, typer.Option(
        "-o", "--output", parser=one_of(WatchFormat), metavar="pretty|jsonl",
        help="pretty (default on a terminal) or jsonl (default when piped).")] = None,
    socket: SocketOption = None,
    url: UrlOption = None,
) -> None:
    """Follow invocations, trigger firings, workers and queue retries as they happen."""
    import asyncio  # here, not at the top: every other command would pay ~30 ms for it

    from iii_sdk.client.streaming import WatchRefused, watch_lines
    from iii_sdk.client.streaming import watch as follow
    from iii_sdk.errors import ConnectionFailed

    target = where(socket, url)
    chosen = fmt or (WatchFormat.pretty if sys.stdout.isatty() else WatchFormat.jsonl)
    colour = chosen is WatchFormat.pretty and use_color(sys.stdout)
    wanted: dict[str, Any] = {"errors": errors}
    if function:
        wanted["function"] = function
    if kind:
        wanted["kinds"] = kind

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    out = sys.stdout
    flush_due = [False]

    def flush() -> None:
        flush_due[0] = False
        out.flush()

    def written() -> None:
        if not flush_due[0]:  # once the events that came together are written
            flush_due[0] = True
            asyncio.get_running_loop().call_soon(flush)

    async def run() -> None:
        if chosen is WatchFormat.jsonl:  # as they come: no decoding, no encoding again
            raw = out.buffer
            async for event_line in watch_lines(target, wanted, replay):
                if b'"event":"watching"' not in event_line[:64]:
                    raw.write(event_line + b"\n")
                    written()
            return
        async for event in follow(target, wanted, replay):
            if event.get("event") != "watching":  # cut to the terminal's width
                out.write(line(event, colour, width) + "\n")
                written()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        raise typer.Exit(ec.INTERRUPTED) from None
    except WatchRefused as exc:
        fail(ec.USAGE, f"the daemon refused the watch: {exc}")
    except ConnectionFailed as exc:
        fail(ec.UNREACHABLE, f"daemon not running or gone: {exc}; start it with "
                             f"`iii daemon start`")
    except BrokenPipeError:  # `iii watch | head`: the reader is done
        sys.stderr.close()
        raise typer.Exit(0) from None
