"""``iii worker add | list | start | stop | restart | remove | logs``: the workers the daemon
runs and supervises for the user.

An entry lives in the config file (``[[workers]]``), so the daemon starts it again
whenever it starts; ``add`` and ``remove`` change the file and tell a running daemon.
Everything is checked before anything is stored: the name, the directory, the program.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from iii_cli import exit_codes as ec
from iii_cli import output
from iii_cli.common import (
    FormatOption,
    QuietOption,
    SocketOption,
    call_function,
    fail,
    say,
    where,
)
from iii_cli.daemon_call import socket_of
from iii_sdk.worker_specs import (
    DEFAULT_RESTART,
    DEFAULT_STOP_GRACE_MS,
    RESTART_POLICIES,
    entry_problem,
    name_problem,
)

worker_app = typer.Typer(help="Workers the daemon runs and supervises for you.",
                         no_args_is_help=True)

COLUMNS = [("name", "NAME"), ("status", "STATUS"), ("pid", "PID"), ("uptime", "UPTIME"),
           ("restarts", "RESTARTS"), ("last_exit", "LAST EXIT"), ("functions", "FUNCTIONS")]

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The worker's name.")]


def _config_entries() -> tuple[Path, dict[str, Any]]:
    from iii_sdk import config

    path = config.config_path()
    try:
        return path, config.read_file(path)
    except config.ConfigError as exc:
        fail(ec.USAGE, f"config error: {exc}")


def _write_config(path: Path, values: dict[str, Any]) -> None:
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(values), encoding="utf-8")
    os.replace(tmp, path)  # never a half-written config


def _daemon_call(socket: Path | None, function_id: str, data: Any,
                 deadline_s: float = 10.0) -> Any:
    return call_function(where(socket), function_id, data, deadline_s)


def _answers(socket: Path | None) -> bool:
    """A daemon serves on the socket (never starting one)."""
    from iii_cli import daemon_control

    return daemon_control.answers(socket_of(socket))


def _program_problem(command: list[str], cwd: str, env: dict[str, str]) -> str | None:
    program = command[0]
    if os.sep in program:
        path = Path(cwd, program)
        if not path.is_file():
            return f"no such program: {program} (in {cwd})"
        if not os.access(path, os.X_OK):
            return f"{program} is not executable"
        return None
    search = env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=search) is None:
        return f"no such program: {program} (not on PATH)"
    return None


@worker_app.command("add")
def add(name: NameArgument,
        command: Annotated[list[str], typer.Argument(
            metavar="-- COMMAND...", help="What to run, after --.", show_default=False)],
        cwd: Annotated[str | None, typer.Option(
            "--cwd", help="Run it here (default: the current directory).")] = None,
        env: Annotated[list[str] | None, typer.Option(
            "--env", metavar="K=V", help="Set this in its environment (repeatable).")] = None,
        restart: Annotated[str, typer.Option(
            "--restart", metavar="|".join(RESTART_POLICIES),
            help="When it exits: start it again always, on failure, or never.")
        ] = DEFAULT_RESTART,
        stop_grace_ms: Annotated[int, typer.Option(
            "--stop-grace-ms", help="SIGKILL this long after SIGTERM.")
        ] = DEFAULT_STOP_GRACE_MS,
        socket: SocketOption = None, quiet: QuietOption = False) -> None:
    """Store a worker in the config file and start it: iii worker add math -- python
    examples/math_worker.py. It gets III_SOCKET, and is started again with the daemon."""
    problem = name_problem(name)
    if problem:
        fail(ec.USAGE, problem)
    variables: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(ec.USAGE, f"--env takes K=V, got {item!r}")
        variables[key] = value
    where_to = os.path.abspath(os.path.expanduser(cwd)) if cwd else os.getcwd()
    if not os.path.isdir(where_to):
        fail(ec.USAGE, f"--cwd: no such directory: {where_to}")
    entry: dict[str, Any] = {"name": name, "command": list(command), "cwd": where_to,
                             "restart": restart, "stop_grace_ms": stop_grace_ms}
    if variables:
        entry["env"] = variables
    problem = entry_problem(entry) or _program_problem(list(command), where_to, variables)
    if problem:
        fail(ec.USAGE, problem)
    path, values = _config_entries()
    entries = values.setdefault("workers", [])
    if any(isinstance(e, dict) and e.get("name") == name for e in entries):
        fail(ec.USAGE, f"a worker named '{name}' is in {path} already "
                       f"(iii worker remove {name} first)")
    running = _answers(socket)
    if running:
        rows = _daemon_call(socket, "engine::managed::list", {})["workers"]
        if any(row["name"] == name for row in rows):
            fail(ec.USAGE, f"the daemon runs a worker named '{name}' already")
    entries.append(entry)
    _write_config(path, values)
    if not running:
        say(f"{name}: stored in {path}; it starts with the daemon (iii daemon start)",
            quiet)
        return
    row = _daemon_call(socket, "engine::managed::add", entry)
    say(f"{name}: {_state_line(row)}", quiet)


def _state_line(row: dict[str, Any]) -> str:
    status = str(row.get("status"))
    if row.get("pid"):
        status += f" (pid {row['pid']})"
    if row.get("next_start_in_s") is not None:
        status += f", next start in {row['next_start_in_s']} s"
    if row.get("error"):
        status += f": {row['error']}"
    return status


@worker_app.command("list")
def list_workers(fmt: FormatOption = None, socket: SocketOption = None) -> None:
    """Each managed worker: status, pid, uptime, restarts, last exit, its functions."""
    rows = _daemon_call(socket, "engine::managed::list", {})["workers"]
    chosen = fmt.value if fmt else output.default_format()
    if chosen == "table":
        for row in rows:
            uptime = row.get("uptime_s")
            row["uptime"] = "" if uptime is None else output.duration_text(uptime)
            if row.get("next_start_in_s") is not None:
                row["status"] = f"backoff ({row['next_start_in_s']} s)"
            row["functions"] = ", ".join(row.get("functions") or [])
    typer.echo(output.render(rows, COLUMNS, chosen))


def _one(command: str, name: str, socket: Path | None, quiet: bool) -> None:
    # stop and restart wait for the process to go: its grace, and a margin.
    row = _daemon_call(socket, f"engine::managed::{command}", {"name": name},
                       deadline_s=MAX_WAIT_S)
    if row.get("already_running"):
        say(f"{name}: already running (pid {row.get('pid')})", quiet)
        return
    say(f"{name}: {_state_line(row)}", quiet)


#: How long stop, restart and remove wait for the daemon's answer (the longest grace
#: a worker may have, and a margin).
MAX_WAIT_S = 620.0


@worker_app.command("start")
def start(name: NameArgument, socket: SocketOption = None, quiet: QuietOption = False) -> None:
    """Start a stopped or exited worker."""
    _one("start", name, socket, quiet)


@worker_app.command("stop")
def stop(name: NameArgument, socket: SocketOption = None, quiet: QuietOption = False) -> None:
    """SIGTERM to its process group, SIGKILL after its grace; returns once it is gone.
    It stays stopped until started (or the daemon starts again)."""
    _one("stop", name, socket, quiet)


@worker_app.command("restart")
def restart(name: NameArgument, socket: SocketOption = None,
            quiet: QuietOption = False) -> None:
    """Stop it, then start it again."""
    _one("restart", name, socket, quiet)


@worker_app.command("remove")
def remove(name: NameArgument, socket: SocketOption = None,
           quiet: QuietOption = False) -> None:
    """Stop it and take it out of the config file."""
    path, values = _config_entries()
    entries = values.get("workers") or []
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
    in_file = len(kept) != len(entries)
    running = _answers(socket)
    if running:
        rows = _daemon_call(socket, "engine::managed::list", {})["workers"]
        if any(row["name"] == name for row in rows):
            _daemon_call(socket, "engine::managed::remove", {"name": name},
                         deadline_s=MAX_WAIT_S)
        elif not in_file:
            fail(ec.NOT_FOUND, f"no managed worker named '{name}'")
    elif not in_file:
        fail(ec.NOT_FOUND, f"no managed worker named '{name}' in {path}")
    if in_file:
        values["workers"] = kept
        _write_config(path, values)
    say(f"{name}: removed", quiet)


@worker_app.command("logs")
def logs(name: NameArgument,
         follow: Annotated[bool, typer.Option("-f", "--follow",
                                              help="Keep printing what it writes.")] = False,
         lines: Annotated[int, typer.Option("-n", "--lines", help="Lines to show first.")
                          ] = 50,
         socket: SocketOption = None) -> None:
    """What the worker wrote (stdout and stderr), with its starts and exits marked."""
    problem = name_problem(name)
    if problem:
        fail(ec.USAGE, problem)
    path = _log_path(name, socket)
    if not path.exists():
        fail(ec.NOT_FOUND, f"no log for worker '{name}' ({path})")
    position = _print_tail(path, max(lines, 0))
    if not follow:
        return
    try:
        _follow(path, position)
    except KeyboardInterrupt:
        raise typer.Exit(ec.INTERRUPTED) from None


def _log_path(name: str, socket: Path | None) -> Path:
    """Where the running daemon says; else where it would put it."""
    if _answers(socket):
        rows = _daemon_call(socket, "engine::managed::list", {})["workers"]
        for row in rows:
            if row["name"] == name and row.get("log_file"):
                return Path(row["log_file"])
        fail(ec.NOT_FOUND, f"no managed worker named '{name}'")
    from iii_cli.daemon_control import log_dir

    return log_dir() / "workers" / f"{name}.log"


def _print_tail(path: Path, lines: int) -> int:
    """Print the last ``lines`` lines; return where the file ended."""
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - max(64 * 1024, lines * 512))
        file.seek(start)
        data = file.read(size - start)
    tail = data.splitlines(keepends=True)[-lines:] if lines else []
    sys.stdout.buffer.write(b"".join(tail))
    sys.stdout.flush()
    return size


def _follow(path: Path, position: int) -> None:
    """Print what is added, across rotations (a new file under the same name)."""
    file = path.open("rb")
    file.seek(position)
    inode = os.fstat(file.fileno()).st_ino
    try:
        while True:
            data = file.read(64 * 1024)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                time.sleep(0.2)
                continue
            if current.st_ino != inode or current.st_size < file.tell():
                file.close()  # rotated: the rest is in the new file
                file = path.open("rb")
                inode = os.fstat(file.fileno()).st_ino
                continue
            time.sleep(0.2)
    finally:
        file.close()
