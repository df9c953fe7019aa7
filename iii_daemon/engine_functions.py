"""Functions the daemon itself provides (``engine::*``).

Each is a plain function of the router's state; the router calls it like a worker
function for every action, so it must not block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iii_sdk.protocol import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.registry import Connection
    from iii_daemon.router import Router


class CallError(Exception):
    """Raised by an engine function to answer the caller with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[["Router", "Connection", Any], Any]


@dataclass(frozen=True, slots=True)
class BuiltinFunction:
    id: str
    description: str
    handler: Handler


def list_functions(router: Router, conn: Connection, data: Any) -> Any:
    functions: list[dict[str, Any]] = [
        {"function_id": b.id, "description": b.description, "request_format": None,
         "response_format": None, "metadata": None, "worker_id": None}
        for b in router.builtins.values()
    ]
    connections = router.registry.connections
    for entry in router.registry.functions.values():
        functions.append({
            "function_id": entry.id,
            "description": entry.description,
            "request_format": entry.request_format,
            "response_format": entry.response_format,
            "metadata": entry.metadata,
            "worker_id": connections[entry.owner].worker_id,
        })
    functions.sort(key=lambda f: f["function_id"])
    return {"functions": functions}


def list_workers(router: Router, conn: Connection, data: Any) -> Any:
    workers = []
    for worker in router.registry.connections.values():
        if not worker.is_worker:
            continue
        info = worker.info
        workers.append({
            "id": worker.worker_id,
            "name": info.get("name"),
            "runtime": info.get("runtime"),
            "version": info.get("version"),
            "pid": info.get("pid"),
            "os": info.get("os"),
            "transport": worker.transport,
            "connected_at": worker.connected_at,
            "functions": sorted(worker.functions),
        })
    return {"workers": workers}


def list_actions(router: Router, conn: Connection, data: Any) -> Any:
    """Worker-provided TriggerActions (``void`` and ``enqueue`` are the daemon's own)."""
    connections = router.registry.connections
    return {"actions": sorted(
        ({"id": a.id, "function_id": a.function_id, "description": a.description,
          "worker_id": connections[a.owner].worker_id}
         for a in router.registry.actions.values()),
        key=lambda a: a["id"])}


def status(router: Router, conn: Connection, data: Any) -> Any:
    """The daemon's facts and counts (``iii daemon status``)."""
    registry = router.registry
    return {
        **router.info,
        "connections": len(registry.connections),
        "workers": sum(1 for c in registry.connections.values() if c.is_worker),
        "functions": len(registry.functions),
        "actions": len(registry.actions),
        "pending_invocations": len(router.invocations),
    }


def register_worker(router: Router, conn: Connection, data: Any) -> Any:
    """Record what a worker says about itself (name, runtime, version, pid, ...)."""
    if not isinstance(data, dict):
        raise CallError(ErrorCode.BAD_REQUEST, "worker metadata must be an object")
    conn.info = data
    return None


BUILTINS: dict[str, BuiltinFunction] = {
    b.id: b
    for b in (
        BuiltinFunction("engine::functions::list", "lists every registered function",
                        list_functions),
        BuiltinFunction("engine::workers::list", "lists the connected workers", list_workers),
        BuiltinFunction("engine::actions::list", "lists the worker-provided actions",
                        list_actions),
        BuiltinFunction("engine::status", "the daemon's pid, listeners and counts", status),
        BuiltinFunction("engine::workers::register",
                        "records a worker's name, runtime, version and pid", register_worker),
    )
}
