"""Managed workers' processes: start them, learn when they end, signal them, keep their
output (the policy — when, how often — is the core's ``Supervisor``).

Each worker runs in a session (and so a process group) of its own: a stop signals the
whole group, and a worker that forked leaves no orphan. Its lifeline: the kernel kills
it (SIGKILL, ``PR_SET_PDEATHSIG``) if the daemon dies without stopping it, and the
groups it left are listed in ``<data dir>/managed.json``, which the next daemon reads
to stop whatever of them still runs before it starts the workers again. An exit is
seen through a pidfd on the event loop (no SIGCHLD handler, no thread per child).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from iii_daemon.core.effects import Kill, LogNote, Spawn
from iii_daemon.drivers.links import Carrier
from iii_daemon.drivers.worker_logs import LogPump
from iii_sdk.worker_specs import WorkerSpec

log = logging.getLogger("iii_daemon.drivers.processes")

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError, TypeError):
        return None  # not Linux: the state file is the only lifeline
    return prctl


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot): a pid the kernel gave to
    another process since has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Processes:
    """The processes of managed workers, by name."""

    def __init__(self, hub: Carrier, log_dir: Path, state_file: Path,
                 environment: dict[str, str]) -> None:
        self.hub = hub
        self.log_dir = log_dir
        self.state_file = state_file
        #: What every worker gets in its environment (III_SOCKET, III_URL ...).
        self.environment = environment
        self.logs = LogPump(log_dir)
        self.running: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        self._pidfds: dict[int, int] = {}
        self._prctl = _prctl()
        self._daemon_pid = os.getpid()

    # --- what the core asks -----------------------------------------------------------------

    def carry(self, effect: Spawn | Kill | LogNote) -> None:
        """Carry out one of the core's effects for managed workers."""
        if isinstance(effect, Spawn):
            self.spawn(effect.spec)
        elif isinstance(effect, Kill):
            self.kill(effect.name, effect.pid, effect.signal)
        else:
            self.logs.note(effect.name, effect.text)

    def spawn(self, spec: WorkerSpec) -> None:
        now = time.monotonic()
        router = self.hub.router
        try:
            process = self._popen(spec)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = _reason(spec, exc)
            self.hub.deliver(router.process_failed(spec.name, reason, now))
            return
        pid = process.pid
        assert process.stdout is not None
        self.logs.follow(spec.name, os.dup(process.stdout.fileno()))
        process.stdout.close()
        self.running[spec.name] = (pid, process)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._reaped(spec.name, pid, process)
            return
        except OSError:  # no pidfds (an old kernel): a thread waits for it
            self._save()
            self.hub.deliver(router.process_spawned(spec.name, pid, now))
            waited = self.hub.loop.run_in_executor(None, process.wait)
            waited.add_done_callback(lambda _: self._exited(spec.name, pid, process))
            return
        self._pidfds[pid] = pidfd
        self.hub.loop.add_reader(pidfd, self._exited, spec.name, pid, process)
        self._save()
        self.hub.deliver(router.process_spawned(spec.name, pid, now))

    def kill(self, name: str, pid: int, how: str) -> None:
        sig = signal.SIGKILL if how == "KILL" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    # --- inside -----------------------------------------------------------------------------

    def _popen(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.environment, "III_WORKER_NAME": spec.name,
               **dict(spec.env)}
        cwd = os.path.expanduser(spec.cwd) if spec.cwd else None
        prctl, parent = self._prctl, self._daemon_pid

        def lifeline() -> None:  # in the child, before exec: nothing that may lock
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent:  # the daemon died before that took hold
                    os._exit(1)

        return subprocess.Popen(
            list(spec.command), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lifeline)

    def _exited(self, name: str, pid: int, process: subprocess.Popen[bytes]) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            self.hub.loop.remove_reader(pidfd)
            os.close(pidfd)
        # What it forked goes with it (while it is a zombie its pid, and so its group's
        # id, cannot be anyone else's).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self._reaped(name, pid, process)
        self.hub.flush()

    def _reaped(self, name: str, pid: int, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        if self.running.get(name, (None,))[0] == pid:
            del self.running[name]
        self._save()
        self.hub.deliver(self.hub.router.process_exited(name, pid, code, time.monotonic()))

    def _save(self) -> None:
        """Which process groups are ours now, for the next daemon if this one dies."""
        groups = {name: {"pid": pid, "start": _start_time(pid)}
                  for name, (pid, _) in self.running.items()}
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(groups))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.state_file, exc)

    # --- start and stop of the daemon ---------------------------------------------------------

    def clear_leftovers(self) -> None:
        """Stop what a daemon that died left running (groups listed in the state file
        whose leader is still the same process)."""
        try:
            groups = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(groups, dict):
            return
        for name, entry in groups.items():
            pid = entry.get("pid") if isinstance(entry, dict) else None
            if not isinstance(pid, int) or pid <= 1:
                continue
            if entry.get("start") is not None and _start_time(pid) != entry.get("start"):
                continue  # not ours any more
            log.warning("stopping what a previous daemon left of worker %s (group %d)",
                        name, pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.state_file.unlink()

    async def stop_all(self) -> None:
        """Stop every worker the core's way (SIGTERM, SIGKILL after its grace) and
        return once all are gone, or 2 s after the longest grace."""
        import asyncio

        router = self.hub.router
        graces = [m.spec.stop_grace_ms / 1000 for m in router.supervisor.workers.values()
                  if m.alive]
        self.hub.deliver(router.stop_managed(time.monotonic()))
        self.hub.flush()
        give_up = time.monotonic() + max(graces, default=0.0) + 2.0
        while self.running and time.monotonic() < give_up:
            await asyncio.sleep(0.02)
        for pid, _ in list(self.running.values()):  # not even SIGKILL took: try again
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        for pidfd in self._pidfds.values():
            with contextlib.suppress(Exception):
                self.hub.loop.remove_reader(pidfd)
            with contextlib.suppress(OSError):
                os.close(pidfd)
        self._pidfds.clear()
        self.logs.close()


def _reason(spec: WorkerSpec, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        if spec.cwd and exc.filename == spec.cwd:
            return f"no such directory: {spec.cwd}"
        return f"no such program: {spec.command[0]}"
    if isinstance(exc, PermissionError):
        return f"not allowed to run {spec.command[0]}"
    if isinstance(exc, NotADirectoryError):
        return f"not a directory: {spec.cwd}"
    return str(exc) or type(exc).__name__
