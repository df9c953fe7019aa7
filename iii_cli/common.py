"""What every ``iii`` command that talks to the daemon shares: its options, where the
daemon is, one call with one deadline, and failing with one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from iii_cli.daemon_call import CALL_DEADLINE_S, call_daemon, target_of
from iii_cli.style import error_prefix, printable

E = TypeVar("E", bound=StrEnum)


def one_of(kind: type[E]) -> Callable[[str], E]:
    """A parser for an option that takes one of ``kind``'s values: a wrong value is told
    what is allowed, in our words (typer's own message reads "Value error, ...")."""
    def parse(value: str) -> E:
        try:
            return kind(value)
        except ValueError:
            allowed = [member.value for member in kind]  # type: ignore[attr-defined]
            raise typer.BadParameter(f"use {', '.join(allowed[:-1])} or {allowed[-1]}, "
                                     f"not {value!r}") from None
    return parse


class ListFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


SocketOption = Annotated[Path | None, typer.Option(
    "--socket", envvar="III_SOCKET", show_envvar=True,
    help="Daemon socket (default: config `socket`, else the user runtime dir).")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="No chatter on stderr.")]
DataDirOption = Annotated[str | None, typer.Option("--data-dir", envvar="III_DATA_DIR",
                                                   help="Daemon data directory.")]
WsPortOption = Annotated[int | None, typer.Option("--ws-port", help="WebSocket port, 0: off.")]
HttpPortOption = Annotated[int | None, typer.Option("--http-port", help="HTTP port, 0: off.")]
StreamsPortOption = Annotated[int | None, typer.Option(
    "--streams-port", help="Stream socket port (browsers join streams; 3112 upstream), 0: off.")]
FormatOption = Annotated[ListFormat | None, typer.Option(
    "-o", "--output", parser=one_of(ListFormat), metavar="table|json|jsonl",
    help="table (default on a terminal), json (default when piped) or jsonl.")]


UrlOption = Annotated[str | None, typer.Option(
    "--url", envvar="III_URL", show_envvar=True,
    help="ws://HOST:PORT (this daemon's listener or an iii engine) or unix://PATH; "
         "beats --socket.")]


def where(socket: Path | None, url: str | None = None) -> str:
    """Where to send a daemon function call: a ws:// URL, or a socket path."""
    return target_of(socket, url, fail)


def fail(code: int, message: str) -> NoReturn:
    sys.stderr.write(error_prefix(sys.stderr) + printable(message) + "\n")
    raise typer.Exit(code)


def say(message: str, quiet: bool) -> None:
    if not quiet:
        sys.stderr.write(printable(message) + "\n")


def call_function(target: str | Path, function_id: str, data: Any = None,
                  deadline_s: float = CALL_DEADLINE_S) -> Any:
    """One call of a daemon function; every failure ends the command with one line and
    its exit code (see :func:`iii_cli.daemon_call.call_daemon`)."""
    return call_daemon(target, function_id, data, fail, deadline_s)
