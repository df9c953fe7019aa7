"""Managed workers' processes: start them, learn when they end, signal them, keep their
output (the policy — when, how often — is the core's ``Supervisor``).

Each worker runs under a lifeline: a small process (:data:`LIFELINE`, ``python -I -S``)
that leads a process group of its own and runs the worker's command as its child. A
stop signals the whole group, so a worker that forked leaves no orphan. The lifeline
asks the kernel (``PR_SET_PDEATHSIG``) for a SIGHUP when the daemon dies, and then
kills its whole group; the worker gets a SIGKILL if the lifeline dies. The lifeline
waits for the worker and ends the way it did (its exit code, or its signal), so the
daemon sees the worker's exit. As a last resort, the groups a daemon ran are listed in
``<data dir>/managed.json``, and the next daemon stops whatever of them still runs. An
exit is seen through a pidfd on the event loop (no SIGCHLD handler, no thread a child).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from iii_daemon.core.effects import Kill, LogNote, Spawn
from iii_daemon.drivers.links import Carrier
from iii_daemon.drivers.worker_logs import LogPump
from iii_sdk.worker_specs import WorkerSpec

log = logging.getLogger("iii_daemon.drivers.processes")

#: The lifeline (see the module's docstring): ``python -I -S -c LIFELINE DAEMON_PID
#: COMMAND...``. Standard library only, so that it starts in a few milliseconds.
LIFELINE = r"""
import ctypes, ctypes.util, os, signal, sys
prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
daemon, command, me = int(sys.argv[1]), sys.argv[2:], os.getpid()
def group_goes(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGHUP, group_goes)
prctl(1, signal.SIGHUP)  # PR_SET_PDEATHSIG: the daemon dies, the group goes
if os.getppid() != daemon:
    group_goes()
for name in ("SIGTERM", "SIGINT", "SIGQUIT"):  # the group's stop is the worker's
    signal.signal(getattr(signal, name), signal.SIG_IGN)
child = os.fork()
if child == 0:
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    prctl(1, signal.SIGKILL)  # the lifeline dies, so does the worker
    if os.getppid() != me:
        os._exit(1)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"iii: cannot run {command[0]}: {exc.strerror}\n")
        os._exit(127)
while True:
    try:
        _, status = os.waitpid(child, 0)
        break
    except InterruptedError:
        pass
code = os.waitstatus_to_exitcode(status)
if code < 0:  # end as it did: the daemon reads the signal
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(me, -code)
os._exit(code & 0xFF)
"""


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
        self.state_file = state_file
        #: What every worker gets in its environment (III_SOCKET, III_URL ...).
        self.environment = environment
        self.logs = LogPump(log_dir)
        self.running: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        self._pidfds: dict[int, int] = {}

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
        self._save()
        # The core hears of the start before anything of its end.
        self.hub.deliver(router.process_spawned(spec.name, pid, now))
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._reaped(spec.name, pid, process)
            return
        except OSError:  # no pidfds (an old kernel): a thread waits for it
            waited = self.hub.loop.run_in_executor(None, process.wait)
            waited.add_done_callback(lambda _: self._exited(spec.name, pid, process))
            return
        self._pidfds[pid] = pidfd
        self.hub.loop.add_reader(pidfd, self._exited, spec.name, pid, process)

    def kill(self, name: str, pid: int, how: str) -> None:
        sig = signal.SIGKILL if how == "KILL" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    # --- inside -----------------------------------------------------------------------------

    def _popen(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.environment, "III_WORKER_NAME": spec.name,
               **dict(spec.env)}
        cwd = os.path.expanduser(spec.cwd) if spec.cwd else None
        program = spec.command[0]
        # Found here, the reason is the worker's status; past the lifeline, only its log's.
        found = os.path.exists(os.path.join(cwd or ".", program)) if os.sep in program \
            else shutil.which(program, path=env.get("PATH")) is not None
        if not found:
            raise FileNotFoundError(2, "not found", program)
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LIFELINE, str(os.getpid()), *spec.command],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)

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
