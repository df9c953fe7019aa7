"""Starting, stopping and asking after the daemon (``iii daemon ...``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iii_sdk.client.blocking import Connection, connect
from iii_sdk.paths import pidfile_path

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


class DaemonError(Exception):
    """A lifecycle step failed; the message is one line for the user."""


def log_dir() -> Path:
    from_env = os.environ.get("III_LOG_DIR")
    if from_env:
        return Path(from_env)
    import platformdirs

    return Path(platformdirs.user_log_dir("iii"))


def log_file() -> Path:
    return log_dir() / "daemon.log"


def running_pid(socket_path: Path) -> int | None:
    """The pid of the daemon holding the socket's pidfile lock, or None.

    The lock (not the file's existence, nor a pid that may have been reused) says
    whether a daemon lives.
    """
    try:
        # Not through a symlink: the daemon never makes one, so it is someone else's.
        fd = os.open(pidfile_path(socket_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = handle.read(32).strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def answers(socket_path: Path, timeout_s: float = 2.0) -> bool:
    try:
        with Connection(socket_path, timeout_s) as conn:
            conn.receive()  # workerregistered: the daemon is serving, not just bound
    except Exception:
        return False
    return True


def daemon_status(target: Path | str, timeout_s: float = 5.0) -> dict[str, Any]:
    """``engine::status`` plus uptime, from a socket path or a ws:// URL.

    Raises:
        Unreachable: no daemon there (Broken: something that is not one).
        Timeout: no answer within ``timeout_s``.
        Refused, DaemonError: it answered, but not with a status (an iii engine that
            is not this daemon has no ``engine::status``).
    """
    with connect(str(target), timeout_s) as conn:
        answer = conn.call("engine::status")
    info = answer.get("result")
    error = answer.get("error")
    if isinstance(error, dict) and error.get("code") == "function_not_found":
        raise DaemonError("it has no engine::status: an iii engine rather than this "
                          "daemon? `iii list workers` shows what it serves")
    if error or not isinstance(info, dict):
        raise DaemonError(f"engine::status failed: {error}")
    started = info.get("started_at")
    info["uptime_s"] = round(time.time() - started, 1) if isinstance(started, int | float) \
        else 0.0
    return info


@dataclass
class StartOptions:
    data_dir: str | None = None
    ws_port: int | None = None
    http_port: int | None = None
    streams_port: int | None = None


def daemon_command(socket_path: Path, options: StartOptions) -> list[str]:
    command = [sys.executable, "-m", "iii_daemon", "--socket", str(socket_path)]
    if options.data_dir:
        command += ["--data-dir", options.data_dir]
    if options.ws_port is not None:
        command += ["--ws-port", str(options.ws_port)]
    if options.http_port is not None:
        command += ["--http-port", str(options.http_port)]
    if options.streams_port is not None:
        command += ["--streams-port", str(options.streams_port)]
    return command


def start_daemon(socket_path: Path, options: StartOptions | None = None,
                 quiet: bool = False) -> tuple[int, bool]:
    """Start a detached daemon unless one answers; return ``(pid, started_now)``.

    Raises:
        DaemonError: it exited or did not answer in time (with the log's last line).
    """
    _refuse_symlink(socket_path)
    pid = running_pid(socket_path)
    if pid is not None and answers(socket_path):
        return pid, False
    options = options or StartOptions()
    log = log_file()
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [*daemon_command(socket_path, options), "--log-file", str(log)]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # Started at the same time as another `iii daemon start` (CI steps in
            # parallel): that one's daemon won the socket, and it is the one we wanted.
            winner = running_pid(socket_path)
            if winner is not None and _answers_by(socket_path, deadline):
                return winner, False
            assert proc.stderr is not None
            reason = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise DaemonError(reason[-1] if reason else
                              f"the daemon exited with {proc.returncode}; see {log}")
        if answers(socket_path, 0.5):
            # Who answers is whoever holds the pidfile lock: ours, or another starter's.
            holder = running_pid(socket_path)
            if holder not in (None, proc.pid):
                _wait_out(proc, deadline)  # ours lost the race and exits by itself
            if proc.stderr is not None:
                proc.stderr.close()
            return (proc.pid, True) if holder in (None, proc.pid) else (holder, False)
        time.sleep(0.02)
    proc.terminate()
    raise DaemonError(f"the daemon did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def _refuse_symlink(socket_path: Path) -> None:
    """A socket path that is a symlink would let us talk to (and report) a daemon that
    is not on this path; the daemon itself never binds through one."""
    if socket_path.is_symlink():
        raise DaemonError(f"{socket_path} is a symlink (to {os.readlink(socket_path)}); "
                          f"give the daemon a socket path of its own")


def _wait_out(proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait for a daemon that lost the race for the socket to exit (it does, once it
    finds the pidfile locked), so that one daemon runs when we return."""
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.terminate()


def _answers_by(socket_path: Path, deadline: float) -> bool:
    """The socket answers before ``deadline`` (a daemon that is starting binds last)."""
    while time.monotonic() < deadline:
        if answers(socket_path, 0.5):
            return True
        time.sleep(0.02)
    return False


def stop_daemon(socket_path: Path) -> int | None:
    """SIGTERM the daemon and wait until it is gone; return its pid, or None if none ran.

    Raises:
        DaemonError: it did not stop in time.
    """
    pid = running_pid(socket_path)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if running_pid(socket_path) is None:
            return pid
        time.sleep(0.02)
    raise DaemonError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")
