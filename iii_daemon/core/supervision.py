"""Managed workers: what the daemon does with the processes it runs for the user — when to
start one, when to start it again and after how long, when to stop asking nicely. Pure:
the driver (``drivers/processes.py``) spawns, signals and reads logs, tells this what
happened (:meth:`Supervisor.spawned`, :meth:`~Supervisor.exited`) and carries out the
effects it returns.

A worker that exits when it should run is started again by its ``restart`` policy
(``always``; ``on-failure``: a non-zero exit or a signal; ``never``), after a backoff of
1 s doubling to 30 s, counted again from 1 s once it stayed up 60 s. Stopping sends
SIGTERM to its process group, SIGKILL after ``stop_grace_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iii_daemon.core.effects import EVENTS, Kill, LogNote, Spawn
from iii_sdk.worker_specs import WorkerSpec

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
#: Up this long, a worker's next failure backs off from BACKOFF_FIRST_S again.
STABLE_S = 60.0
#: A started worker is ``starting`` until a connection of its own comes, or this long.
STARTING_S = 5.0

STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, EXITED = (
    "starting", "running", "backoff", "stopping", "stopped", "exited")


Waiter = Any  # ``(result, error, out)``: a daemon function's answer


@dataclass(slots=True, eq=False)
class Managed:
    spec: WorkerSpec
    status: str = STOPPED
    pid: int | None = None
    #: Monotonic time of the last start, and the wall time of it (for ``list``).
    started: float | None = None
    started_wall: float | None = None
    restarts: int = 0
    last_exit: int | None = None
    #: Why the last start failed (the program is missing, ...), when it did.
    error: str | None = None
    #: Failures in a row: the next backoff is BACKOFF_FIRST_S * 2 ** failures.
    failures: int = 0
    next_start: float | None = None
    kill_at: float | None = None
    #: What to do once the process is gone: "stop", "start" (a restart), "remove".
    then: str = "stop"
    #: Connections from its process group.
    connections: set[int] = field(default_factory=set)
    #: Answers waiting for the process to be gone (stop, restart, remove).
    waiters: list[Waiter] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.status in (STARTING, RUNNING, STOPPING)


def backoff_s(failures: int) -> float:
    return min(BACKOFF_FIRST_S * 2.0 ** max(failures, 0), BACKOFF_MAX_S)


def exit_text(code: int | None) -> str:
    """How an exit reads: ``code 1``, ``signal 9`` (negative codes are signals)."""
    if code is None:
        return "no exit code"
    return f"signal {-code}" if code < 0 else f"code {code}"


class Supervisor:
    """The managed workers by name, and what each is doing."""

    def __init__(self) -> None:
        self.workers: dict[str, Managed] = {}
        #: Wall time minus monotonic time, for the times ``list`` shows.
        self.wall_offset = 0.0

    # --- what the user asks -------------------------------------------------------------

    def add(self, spec: WorkerSpec, now: float, out: Output, start: bool = True) -> None:
        managed = self.workers[spec.name] = Managed(spec)
        if start:
            self._spawn(managed, now, out)

    def start(self, name: str, now: float, out: Output) -> bool:
        """Start it unless it runs; False when it already did."""
        managed = self.workers[name]
        if managed.alive:
            if managed.status == STOPPING:
                managed.then = "start"  # it goes on once the old process is gone
                return True
            return False
        managed.failures = 0
        self._spawn(managed, now, out)
        return True

    def stop(self, name: str, now: float, out: Output, waiter: Waiter = None,
             then: str = "stop") -> None:
        """Stop it (SIGTERM, SIGKILL after its grace); ``waiter`` is answered once its
        process is gone, at once when there is none."""
        managed = self.workers[name]
        managed.then = then
        if managed.pid is None:
            if managed.status in (STARTING, STOPPING):  # its start is on its way:
                managed.status = STOPPING             # stopped as soon as it is told
                if waiter is not None:
                    managed.waiters.append(waiter)
                return
            managed.next_start = None
            managed.status = STOPPED
            self._settled(managed, now, out, waiter)
            return
        if waiter is not None:
            managed.waiters.append(waiter)
        if managed.status != STOPPING:
            managed.status = STOPPING
            managed.kill_at = now + managed.spec.stop_grace_ms / 1000
            out.append((EVENTS, Kill(managed.spec.name, managed.pid, "TERM")))

    # --- what the driver tells ----------------------------------------------------------

    def spawned(self, name: str, pid: int, now: float, out: Output) -> None:
        managed = self.workers.get(name)
        if managed is None:
            out.append((EVENTS, Kill(name, pid, "KILL")))  # removed meanwhile
            return
        managed.pid, managed.started = pid, now
        managed.started_wall = now + self.wall_offset
        managed.error = None
        out.append((EVENTS, LogNote(name, f"started: pid {pid}")))
        if managed.status == STOPPING:  # stopped before the driver got to it
            managed.kill_at = now + managed.spec.stop_grace_ms / 1000
            out.append((EVENTS, Kill(name, pid, "TERM")))

    def spawn_failed(self, name: str, reason: str, now: float, out: Output) -> None:
        managed = self.workers.get(name)
        if managed is None:
            return
        managed.error = reason
        out.append((EVENTS, LogNote(name, f"could not start: {reason}")))
        self._gone(managed, None, now, out)

    def exited(self, name: str, pid: int, code: int, now: float, out: Output) -> None:
        managed = self.workers.get(name)
        if managed is None or managed.pid != pid:
            return  # an earlier process of a worker that was started again since
        managed.last_exit = code
        self._gone(managed, code, now, out)

    def connected(self, conn_id: int, process_group: int | None) -> str | None:
        """A connection from ``process_group``: the managed worker it belongs to."""
        if process_group is None:
            return None
        for managed in self.workers.values():
            if managed.pid == process_group and managed.alive:
                managed.connections.add(conn_id)
                if managed.status == STARTING:
                    managed.status = RUNNING
                return managed.spec.name
        return None

    def disconnected(self, conn_id: int, name: str | None) -> None:
        managed = self.workers.get(name) if name is not None else None
        if managed is not None:
            managed.connections.discard(conn_id)

    # --- time ---------------------------------------------------------------------------

    def next_due(self) -> float | None:
        due = [t for m in self.workers.values() for t in (
            m.next_start if m.status == BACKOFF else None,
            m.kill_at if m.status == STOPPING else None,
            m.started + STARTING_S if m.status == STARTING and m.started is not None
            else None) if t is not None]
        return min(due) if due else None

    def due(self, now: float, out: Output) -> None:
        for managed in list(self.workers.values()):
            if managed.status == BACKOFF and managed.next_start is not None \
                    and managed.next_start <= now:
                managed.restarts += 1
                self._spawn(managed, now, out)
            elif managed.status == STOPPING and managed.kill_at is not None \
                    and managed.kill_at <= now and managed.pid is not None:
                managed.kill_at = None
                out.append((EVENTS, LogNote(managed.spec.name,
                                            "did not stop within its grace: SIGKILL")))
                out.append((EVENTS, Kill(managed.spec.name, managed.pid, "KILL")))
            elif managed.status == STARTING and managed.started is not None \
                    and managed.started + STARTING_S <= now:
                managed.status = RUNNING

    # --- inside -------------------------------------------------------------------------

    def _spawn(self, managed: Managed, now: float, out: Output) -> None:
        managed.status = STARTING
        managed.pid = None
        managed.started = now
        managed.next_start = None
        managed.kill_at = None
        managed.then = "stop"
        out.append((EVENTS, Spawn(managed.spec)))

    def _gone(self, managed: Managed, code: int | None, now: float, out: Output) -> None:
        """Its process is gone (or never came): what now, by what was asked and policy."""
        name = managed.spec.name
        was_stopping = managed.status == STOPPING
        up_s = now - managed.started if managed.started is not None else 0.0
        managed.pid, managed.kill_at = None, None
        managed.connections.clear()
        if was_stopping:
            out.append((EVENTS, LogNote(name, f"stopped ({exit_text(code)})")))
            managed.status = STOPPED
            self._settled(managed, now, out, None)
            return
        failed = code is None or code != 0
        policy = managed.spec.restart
        if policy == "never" or (policy == "on-failure" and not failed):
            managed.status = EXITED
            out.append((EVENTS, LogNote(name, f"exited with {exit_text(code)}; "
                                              f"not restarted (restart = {policy})")))
            return
        if up_s >= STABLE_S:
            managed.failures = 0
        delay = backoff_s(managed.failures)
        managed.failures += 1
        managed.status = BACKOFF
        managed.next_start = now + delay
        out.append((EVENTS, LogNote(name, f"exited with {exit_text(code)}; restarting in "
                                          f"{delay:g} s")))

    def _settled(self, managed: Managed, now: float, out: Output, waiter: Waiter) -> None:
        """Stopped as asked: answer who waited, then restart or forget it if asked."""
        waiters = managed.waiters
        managed.waiters = []
        if waiter is not None:
            waiters.append(waiter)
        then, managed.then = managed.then, "stop"
        if then == "start":
            managed.failures = 0
            managed.restarts += 1
            self._spawn(managed, now, out)
        elif then == "remove":
            self.workers.pop(managed.spec.name, None)
        for answer in waiters:
            answer(self.row(managed, now) if then != "remove" else {"removed": managed.spec.name},
                   None, out)

    # --- what list shows ----------------------------------------------------------------

    def row(self, managed: Managed, now: float) -> dict[str, Any]:
        spec = managed.spec
        status = managed.status
        if status == EXITED:
            status = f"exited {managed.last_exit}" if managed.last_exit is not None \
                else "exited"
        return {
            "name": spec.name,
            "status": status,
            "pid": managed.pid,
            "uptime_s": round(now - managed.started, 1)
            if managed.alive and managed.started is not None and managed.pid else None,
            "started_at": managed.started_wall if managed.alive else None,
            "restarts": managed.restarts,
            "last_exit": managed.last_exit,
            "next_start_at": round(managed.next_start + self.wall_offset, 3)
            if status == BACKOFF and managed.next_start is not None else None,
            "next_start_in_s": round(max(0.0, managed.next_start - now), 1)
            if status == BACKOFF and managed.next_start is not None else None,
            "error": managed.error,
            "connections": sorted(managed.connections),
            **spec.as_entry(),
        }
