"""A connection's life: its greeting, ``ping``, ``reattach``, and what goes when it
closes (or the daemon stops)."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from iii_daemon.core.calls import Results
from iii_daemon.core.effects import Close, Output
from iii_daemon.core.registry import Connection
from iii_daemon.core.router_state import FEATURES, log, make_error, worker_name
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.rbac import Grants


class Sessions(Results):
    """Connections coming and going."""

    def connect(self, conn_id: int, transport: str, wall_time: float,
                process_group: int | None = None, grants: Grants | None = None) -> Output:
        """A new connection: it gets its worker id and reattach token first.
        ``process_group``: the peer's, when the transport knows (a managed worker's
        connection is told apart by it); ``grants``: what it may do, when it came in
        through an RBAC listener."""
        conn = Connection(
            id=conn_id,
            worker_id=self.invocations.new_id(),
            reattach_token=secrets.token_hex(16),
            transport=transport,
            connected_at=datetime.fromtimestamp(wall_time, UTC).isoformat(timespec="seconds"),
            connected_at_ms=int(wall_time * 1000),
        )
        conn.managed = self.supervisor.connected(conn_id, process_group)
        conn.grants = grants
        self.registry.add_connection(conn)
        return [(conn_id, p.WorkerRegistered(worker_id=conn.worker_id,
                                             reattach_token=conn.reattach_token,
                                             features=FEATURES))]

    def disconnect(self, conn_id: int) -> Output:
        """The connection is gone: drop what it owned and stop what it served."""
        out: Output = []
        conn = self.registry.remove_connection(conn_id)
        if conn is None:
            return out
        self.supervisor.disconnected(conn_id, conn.managed)
        watcher = self.watchers.pop(conn_id, None)
        if watcher is not None and watcher.started:
            self._watching_starts -= 1
        if conn.is_worker:
            log.info("worker %s left (pid %s, %d functions)", worker_name(conn),
                     conn.info.get("pid", "?"), len(conn.functions))
            self.record("worker.left", out, worker_id=conn.worker_id,
                        name=conn.info.get("name"), functions=sorted(conn.functions))
        for invocation_id in conn.serving:
            inv = self.invocations.pop(invocation_id)
            if inv is not None and inv.caller != conn_id:
                self._answer(inv, None, make_error(
                    ErrorCode.INVOCATION_STOPPED,
                    f"the worker serving '{inv.function_id}' disconnected",
                ), out)
        for invocation_id in conn.calling:
            inv = self.invocations.pop(invocation_id)
            if inv is not None:
                worker = self.registry.connections.get(inv.worker)
                if worker is not None:
                    worker.serving.discard(invocation_id)
        self.triggers.connection_closed(conn_id, out)
        self.observers.connection_closed(conn_id, out)
        if conn.functions:
            self.observers.targets_changed(conn.functions, out)
            for function_id in conn.functions:  # an owner-delivered source went
                self.observer_owners.source_gone(function_id, out)
        self._pump_now(out)
        return out

    def shutdown(self) -> Output:
        """The daemon stops: everyone still waiting gets ``invocation_stopped``."""
        out: Output = []
        for inv in self.invocations.drain():
            if inv.caller is not None and inv.caller_invocation_id is not None:
                out.append((inv.caller, p.InvocationResult(
                    invocation_id=inv.caller_invocation_id,
                    function_id=inv.function_id,
                    error=make_error(ErrorCode.INVOCATION_STOPPED, "the daemon is shutting down"),
                )))
        for conn in self.registry.connections.values():
            conn.serving.clear()
            conn.calling.clear()
        return out

    def _on_ping(self, conn: Connection, msg: p.Ping, now: float, out: Output) -> None:
        out.append((conn.id, p.Pong()))

    def _on_reattach(self, conn: Connection, msg: p.Reattach, now: float,
                     out: Output) -> None:
        """Retire the previous connection of a reconnecting worker, if the token proves it."""
        previous = self.registry.by_worker_id.get(msg.previous_worker_id)
        if previous is None or previous.id == conn.id or msg.reattach_token is None:
            return
        if not hmac.compare_digest(previous.reattach_token, msg.reattach_token):
            return
        self.observers.reattached(previous.id, conn)
        out.extend(self.disconnect(previous.id))
        out.append((previous.id, Close("replaced by a reattaching connection")))
