"""The router's entry points for the processes of managed workers: what the driver tells
of them (started, could not start, exited) goes to the :class:`Supervisor`, and what
that decides comes back as effects (:class:`~iii_daemon.core.supervision.Spawn`,
``Kill``, ``LogNote``)."""

from __future__ import annotations

from typing import Any

from iii_daemon.core.effects import Output
from iii_daemon.core.router_state import RouterState, log
from iii_daemon.core.supervision import exit_text
from iii_sdk.worker_specs import WorkerSpec


class Processes(RouterState):
    def start_managed(self, specs: list[WorkerSpec], now: float) -> Output:
        """The config's ``[[workers]]``, at start-up: each is started."""
        out: Output = []
        self._now = now
        for spec in specs:
            self.supervisor.add(spec, now, out)
        return out

    def process_spawned(self, name: str, pid: int, now: float) -> Output:
        out: Output = []
        self._now = now
        log.info("managed worker %s started (pid %d)", name, pid)
        self.supervisor.spawned(name, pid, now, out)
        managed = self.supervisor.workers.get(name)
        self.record("managed.started", out, name=name, pid=pid,
                    restarts=managed.restarts if managed is not None else 0)
        return out

    def process_failed(self, name: str, reason: str, now: float) -> Output:
        out: Output = []
        self._now = now
        log.warning("managed worker %s could not start: %s", name, reason)
        self.supervisor.spawn_failed(name, reason, now, out)
        self._record_exit(name, None, reason, out)
        return out

    def process_exited(self, name: str, pid: int, code: int, now: float) -> Output:
        out: Output = []
        self._now = now
        log.info("managed worker %s (pid %d) exited with %s", name, pid, exit_text(code))
        self.supervisor.exited(name, pid, code, now, out)
        self._record_exit(name, code, None, out)
        return out

    def _record_exit(self, name: str, code: int | None, reason: str | None,
                     out: Output) -> None:
        """``managed.exited``: how it ended, and what happens now (its status then:
        backoff with the next start, stopped, exited)."""
        managed = self.supervisor.workers.get(name)
        row = self.supervisor.row(managed, self._now) if managed is not None else {}
        status = str(row.get("status", "removed"))
        fields: dict[str, Any] = {}
        if reason is not None or (code != 0 and status not in ("stopped", "removed")):
            # A crash or a start that failed: a failure for `iii watch --errors` too.
            fields["error"] = {"code": "worker_exited",
                               "message": reason or f"{name} exited with {exit_text(code)}"}
        self.record("managed.exited", out, name=name, code=code, status=status,
                    restart_in_s=row.get("next_start_in_s"), **fields)

    def stop_managed(self, now: float) -> Output:
        """The daemon stops: every managed worker is stopped (SIGTERM, SIGKILL after
        its grace, by the same deadlines as ``iii worker stop``)."""
        out: Output = []
        self._now = now
        for name, managed in self.supervisor.workers.items():
            if managed.alive:
                self.supervisor.stop(name, now, out)
        return out
