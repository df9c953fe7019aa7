"""One call of a daemon function from a command, with its deadline and its failures
as one line and an exit code. Loads no typer: the fast paths use it too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from iii_cli import exit_codes as ec
from iii_sdk.client.addresses import BadAddress, parse_url
from iii_sdk.client.blocking import connect, unreachable_message
from iii_sdk.errors import Lost, Refused, Timeout, Unreachable

#: ``iii list``, ``register-trigger``, ``status``: the whole exchange with the daemon.
CALL_DEADLINE_S = 5.0
#: Completion and ``--version`` ask the daemon, but never make the shell wait for long.
COMPLETION_BUDGET_S = 0.3

#: ``fail(exit code, message)``: says it on one line and ends the command.
Fail = Callable[[int, str], NoReturn]


def socket_of(socket: Path | None) -> Path:
    from iii_sdk.paths import resolve_socket_path

    return resolve_socket_path(socket)


def version_line(budget_s: float) -> str:
    """``iii --version``'s line: the CLI's version, and the daemon's when one answers
    within ``budget_s``."""
    from iii_cli.style import printable
    from iii_sdk import __version__
    from iii_sdk.client.blocking import Connection

    line = f"iii {__version__}"
    try:
        with Connection(str(socket_of(None)), budget_s) as conn:
            answer = conn.call("engine::status")
        line += f" (daemon {printable(str(answer['result']['version']))})"
    except Exception:  # no daemon, or not one that says: the CLI's version is enough
        pass
    return line


def target_of(socket: Path | None, url: str | None, fail: Fail) -> str:
    """Where to send a daemon function call: a ws:// URL, or a socket path."""
    if url:
        try:
            where = parse_url(url)
        except BadAddress as exc:
            fail(ec.USAGE, str(exc))
        return where.target if where.kind == "unix" else url
    return str(socket_of(socket))


def not_running(exc: Unreachable, target: str | Path) -> str:
    """The not-running line for ``target``; its "start it with" hint names the socket
    when ``iii daemon start`` alone would not use that one."""
    target = str(target)
    other = not target.startswith(("ws://", "wss://")) and target != str(socket_of(None))
    return unreachable_message(exc, target if other else None)


def call_daemon(target: str | Path, function_id: str, data: Any, fail: Fail,
                deadline_s: float = CALL_DEADLINE_S) -> Any:
    """One call of a daemon function (``target``: a socket path or a ws:// URL), all of
    it within ``deadline_s``; every failure ends the command through ``fail``."""
    try:
        with connect(str(target), deadline_s) as conn:
            answer = conn.call(function_id, data)
    except Unreachable as exc:
        fail(ec.UNREACHABLE, not_running(exc, target))
    except Refused as exc:
        fail(ec.USAGE, f"{function_id}: the daemon refused the request: {exc}")
    except Lost as exc:
        fail(ec.LOST, f"{function_id}: {exc} before answering")
    except Timeout:
        fail(ec.TIMEOUT, f"{function_id}: no answer within {deadline_s:.0f} s")
    error = answer.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        fail(ec.for_error(error), f"{function_id}: {message}")
    return answer.get("result")
