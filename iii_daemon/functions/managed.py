"""The daemon's functions for managed workers (``engine::managed::*``), what ``iii worker``
calls: list them, add one, start, stop, restart, remove.

Starting a process is running a command as the user: only the user's own CLI may ask,
over the Unix socket (same uid, checked at accept). Anything else — a WebSocket
worker, with the token or not — gets ``FORBIDDEN``. The config file is the other way in
(read by the daemon at start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.builtin import Answer, BuiltinFunction, CallContext, Later, field
from iii_daemon.core.errors import CallError
from iii_sdk.error_codes import ErrorCode
from iii_sdk.worker_specs import entry_problem, spec_of

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output
    from iii_daemon.core.supervision import Managed, Supervisor


def _supervisor(services: Services, ctx: CallContext) -> Supervisor:
    if ctx.conn is None or ctx.conn.transport != "unix":
        raise CallError(ErrorCode.FORBIDDEN,
                        "managed workers are changed from the Unix socket only (iii worker "
                        "on the daemon's machine, as its user), or in the config file")
    if services.supervisor is None:
        raise CallError(ErrorCode.FORBIDDEN, "this daemon runs no managed workers")
    return services.supervisor


def _named(services: Services, ctx: CallContext) -> tuple[Supervisor, Managed]:
    supervisor = _supervisor(services, ctx)
    name = field(ctx.data, "name", str)
    managed = supervisor.workers.get(name)
    if managed is None:
        known = ", ".join(sorted(supervisor.workers)) or "none"
        raise CallError(ErrorCode.WORKER_NOT_FOUND,
                        f"no managed worker named '{name}' (known: {known})")
    return supervisor, managed


def row(services: Services, managed: Managed) -> dict[str, Any]:
    """A worker as ``list`` shows it: the supervisor's row and the functions it serves."""
    assert services.supervisor is not None
    shown = services.supervisor.row(managed, services.clock().now)
    connections = services.registry.connections
    shown["functions"] = sorted(
        f for conn_id in managed.connections if conn_id in connections
        for f in connections[conn_id].functions)
    shown["worker_ids"] = [connections[c].worker_id for c in sorted(managed.connections)
                           if c in connections]
    log_dir = services.info.get("worker_log_dir")
    shown["log_file"] = f"{log_dir}/{managed.spec.name}.log" if log_dir else None
    return shown


def list_managed(services: Services, ctx: CallContext) -> Any:
    supervisor = _supervisor(services, ctx)
    return {"workers": [row(services, m) for _, m in sorted(supervisor.workers.items())]}


def add(services: Services, ctx: CallContext) -> Any:
    supervisor = _supervisor(services, ctx)
    problem = entry_problem(ctx.data)
    if problem:
        raise CallError(ErrorCode.BAD_REQUEST, problem)
    spec = spec_of(ctx.data)
    if spec.name in supervisor.workers:
        raise CallError(ErrorCode.WORKER_EXISTS,
                        f"a managed worker named '{spec.name}' exists already")
    supervisor.add(spec, ctx.clock.now, ctx.out)
    return row(services, supervisor.workers[spec.name])


def start(services: Services, ctx: CallContext) -> Any:
    supervisor, managed = _named(services, ctx)
    started = supervisor.start(managed.spec.name, ctx.clock.now, ctx.out)
    return {**row(services, managed), "already_running": not started}


def _until_gone(services: Services, ctx: CallContext, then: str) -> Later:
    supervisor, managed = _named(services, ctx)

    def begin(answer: Answer, out: Output) -> None:
        supervisor.stop(managed.spec.name, services.clock().now, out,
                        lambda result, error, out: answer(
                            row(services, managed) if then != "remove" else result,
                            error, out), then)

    return Later(begin)


def stop(services: Services, ctx: CallContext) -> Any:
    return _until_gone(services, ctx, "stop")


def restart(services: Services, ctx: CallContext) -> Any:
    return _until_gone(services, ctx, "start")


def remove(services: Services, ctx: CallContext) -> Any:
    return _until_gone(services, ctx, "remove")


FUNCTIONS = (
    BuiltinFunction("engine::managed::list", "lists the workers the daemon runs (Unix "
                    "socket only)", list_managed),
    BuiltinFunction("engine::managed::add", "runs a new managed worker {name, command, "
                    "cwd?, env?, restart?, stop_grace_ms?} (Unix socket only)", add),
    BuiltinFunction("engine::managed::start", "starts a managed worker {name}", start),
    BuiltinFunction("engine::managed::stop", "stops a managed worker {name}: SIGTERM, "
                    "SIGKILL after its grace; answers once it is gone", stop),
    BuiltinFunction("engine::managed::restart", "stops a managed worker {name} and starts "
                    "it again", restart),
    BuiltinFunction("engine::managed::remove", "stops a managed worker {name} and forgets "
                    "it", remove),
)
