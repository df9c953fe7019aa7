"""Functions the daemon itself provides (``engine::*``), and the table of all of them.

Each is a plain function of the :class:`~iii_daemon.core.builtin.Services` it is handed (never the
router); the router calls it like a worker
function for every action, so it must not block.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from iii_daemon.core.builtin import Answer, BuiltinFunction, CallContext, Later, field
from iii_daemon.core.errors import CallError, TriggerConfigError, TriggerError
from iii_daemon.core.triggers.base import Binding
from iii_daemon.core.triggers.cron import cron_payload
from iii_daemon.core.unsettled import MISSING
from iii_daemon.core.writes import DropTrigger, PutTrigger
from iii_daemon.functions import managed as managed_functions
from iii_daemon.functions import queue as queue_functions
from iii_daemon.functions import state as state_functions
from iii_daemon.functions import stream as stream_functions
from iii_daemon.functions.introspection import (
    list_functions,
    list_registered_triggers,
    list_trigger_types,
    list_workers,
)
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from msgspec import Raw

    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output

log = logging.getLogger("iii_daemon")


def list_actions(services: Services, ctx: CallContext) -> Any:
    """Worker-provided TriggerActions (``void`` and ``enqueue`` are the daemon's own)."""
    connections = services.registry.connections
    return {"actions": sorted(
        ({"id": a.id, "function_id": a.function_id, "description": a.description,
          "worker_id": connections[a.owner].worker_id}
         for a in services.registry.actions.values()),
        key=lambda a: a["id"])}


def status(services: Services, ctx: CallContext) -> Any:
    """The daemon's facts and counts (``iii daemon status``)."""
    registry = services.registry
    clients, subscriptions = services.stream_clients()
    return {
        **services.info,
        "connections": len(registry.connections),
        "workers": sum(1 for c in registry.connections.values() if c.is_worker),
        "functions": len(registry.functions),
        "actions": len(registry.actions),
        "triggers": len(services.triggers.bindings),
        "pending_invocations": services.in_flight(),
        "queued_messages": services.queues.count(),
        "dead_letters": services.queues.dead_count(),
        "watchers": services.watching(),
        "stream_clients": clients,
        "stream_subscriptions": subscriptions,
    }


def register_worker(services: Services, ctx: CallContext) -> Any:
    """Record what a worker says about itself (name, runtime, version, pid, ...)."""
    if not isinstance(ctx.data, dict):
        raise CallError(ErrorCode.BAD_REQUEST, "worker metadata must be an object")
    if ctx.conn is None:
        raise CallError(ErrorCode.BAD_REQUEST, "only a worker can introduce itself")
    ctx.conn.info = ctx.data
    ctx.conn.caller_stamp = None  # its name may be new
    info = ctx.data
    log.info("worker %r joined over %s (%s %s, pid %s, id %s)", info.get("name"),
             ctx.conn.transport, info.get("runtime", "?"), info.get("version", "?"),
             info.get("pid", "?"), ctx.conn.worker_id)
    services.record("worker.joined", ctx.out, worker_id=ctx.conn.worker_id,
                    name=info.get("name"), runtime=info.get("runtime"), pid=info.get("pid"),
                    transport=ctx.conn.transport)
    services.observe_declared(ctx.conn, ctx.out)
    return None


def register_trigger(services: Services, ctx: CallContext) -> Any:
    """A daemon-owned trigger: stored, it survives the caller and daemon restarts."""
    data = ctx.data
    trigger_type = field(data, "trigger_type", str, optional=True) or field(data, "type", str)
    function_id = field(data, "function_id", str)
    trigger_id = field(data, "id", str, optional=True) or f"trg-{uuid.uuid4().hex[:12]}"
    config = data.get("config") or {}
    triggers = services.triggers
    before = triggers.bindings.get(trigger_id, MISSING)
    if isinstance(before, Binding) and before.owner is None and not data.get("replace") \
            and (before.trigger_type, before.function_id, before.config) != \
            (trigger_type, function_id, config):
        # Asked twice the same is fine (scripts re-run); a different trigger under a
        # taken id is a mistake unless said so.
        raise CallError(ErrorCode.BAD_REQUEST,
                        f"trigger '{trigger_id}' already exists ({before.trigger_type} -> "
                        f"{before.function_id}); pass replace: true (--replace) to change it")
    try:
        binding = triggers.register(None, trigger_id, trigger_type, function_id, config,
                                    data.get("metadata"), ctx.clock, ctx.out)
    except TriggerConfigError as exc:  # a malformed request: nothing was stored
        raise CallError(ErrorCode.BAD_REQUEST, str(exc)) from None
    except TriggerError as exc:
        raise CallError(ErrorCode.TRIGGER_REGISTRATION_FAILED, str(exc)) from None
    ctx.persist(PutTrigger(trigger_id, trigger_type, function_id, config, binding.metadata),
                triggers.unsettled.change(trigger_id, before, binding))
    return {"id": binding.id, "status": binding.status}


def unregister_trigger(services: Services, ctx: CallContext) -> Any:
    trigger_id = field(ctx.data, "id", str)
    owner = services.triggers.owned_by(trigger_id)
    if isinstance(owner, int):
        raise CallError(ErrorCode.BAD_REQUEST,
                        f"trigger '{trigger_id}' belongs to worker {services.worker_id(owner)} "
                        "and goes when that worker unregisters it or disconnects")
    removed = services.triggers.unregister(trigger_id, None, ctx.out)
    if removed is not None:
        ctx.persist(DropTrigger(trigger_id),
                    services.triggers.unsettled.change(trigger_id, removed, MISSING))
    return {"removed": removed is not None}


def fire_trigger(services: Services, ctx: CallContext) -> Any:
    """``{id, payload?, skip_condition?}``: run a trigger's function now, as a firing of
    its type would (a cron gets the payload a tick gives, scheduled now; other types the
    ``payload``, else ``{}``), through its condition unless told not to; answers with the
    function's result. Recorded with source ``manual``."""
    data = ctx.data
    trigger_id = field(data, "id", str)
    skip_condition = data.get("skip_condition") is True
    binding = services.triggers.bindings.get(trigger_id)
    if binding is None:
        raise CallError(ErrorCode.TRIGGER_NOT_FOUND, f"no trigger '{trigger_id}'")
    payload = data.get("payload")
    if payload is None:
        clock = ctx.clock
        payload = cron_payload(binding.id, clock.wall, clock.wall) \
            if binding.trigger_type == "cron" else {}

    def start(answer: Answer, out: Output) -> None:
        def ended(skipped: str | None, result: Raw | None, error: p.ErrorBody | None,
                  out: Output) -> None:
            if skipped is not None:
                answer(None, p.ErrorBody(code=ErrorCode.TRIGGER_SKIPPED,
                                         message=f"trigger '{trigger_id}' skipped: {skipped}"),
                       out)
            else:
                answer(None if result is None else result, error, out)

        services.triggers.fire(binding, payload, ctx.clock, out, ended, manual=True,
                               skip_condition=skip_condition)

    return Later(start)


def list_events(services: Services, ctx: CallContext) -> Any:
    """Recent events, oldest first: ``{limit?, event?, after?}`` filter them."""
    data = ctx.data if isinstance(ctx.data, dict) else {}
    limit = field(data, "limit", int, optional=True) or 100
    kind = field(data, "event", str, optional=True)
    after = field(data, "after", int, optional=True) or 0
    events = [e for e in services.events if e["seq"] > after and kind in (None, e["event"])]
    return {"events": events[-limit:]}


def list_observers(services: Services, ctx: CallContext) -> Any:
    """Every observer with its state and fires (``{function_id?}``: of that source)."""
    function_id = field(ctx.data, "function_id", str, optional=True) \
        if ctx.data is not None else None
    return {"observers": services.observers(function_id)}


def get_observer(services: Services, ctx: CallContext) -> Any:
    """One observer (``{observer_id}``), as ``engine::observers::list`` shows it."""
    observer_id = field(ctx.data, "observer_id", str)
    found = [row for row in services.observers(None) if row["id"] == observer_id]
    if not found:
        raise CallError(ErrorCode.OBSERVER_NOT_FOUND, f"no observer '{observer_id}'")
    return found[0]


def function_stats(services: Services, ctx: CallContext) -> Any:
    """Calls, errors, p50/p95/p99 and the last minute's rate of each function called
    through the daemon (``{function?}``: one function)."""
    function_id = field(ctx.data, "function", str, optional=True) \
        if ctx.data is not None else None
    assert services.stats is not None
    rows = services.stats.describe(ctx.clock.now)
    if function_id is not None:
        rows = [row for row in rows if row["function_id"] == function_id]
    return {"functions": rows}


_ENGINE = (
    BuiltinFunction("engine::functions::list", "lists the registered functions "
                                               "{include_internal?}", list_functions),
    BuiltinFunction("engine::workers::list", "lists the connected workers", list_workers),
    BuiltinFunction("engine::actions::list", "lists the worker-provided actions",
                    list_actions),
    BuiltinFunction("engine::status", "the daemon's pid, listeners and counts", status),
    BuiltinFunction("engine::workers::register",
                    "records a worker's name, runtime, version and pid", register_worker),
    BuiltinFunction("engine::register_trigger",
                    "adds a daemon-owned trigger {id?, trigger_type, function_id, config, "
                    "replace?}",
                    register_trigger),
    BuiltinFunction("engine::unregister_trigger", "removes a daemon-owned trigger {id}",
                    unregister_trigger),
    BuiltinFunction("engine::triggers::list", "lists the trigger types {trigger_type?, "
                                              "worker?, search?}", list_trigger_types),
    BuiltinFunction("engine::triggers::fire", "runs a trigger's function now {id, payload?, "
                                              "skip_condition?} (source manual)",
                    fire_trigger),
    BuiltinFunction("engine::registered-triggers::list",
                    "lists the triggers with owner and status {trigger_type?, function_id?, "
                    "worker?, search?, include_internal?}", list_registered_triggers),
    BuiltinFunction("engine::events::list", "recent events {limit?, event?, after?}",
                    list_events),
    BuiltinFunction("engine::observers::list", "lists the observers with state and fires "
                                               "{function_id?}", list_observers),
    BuiltinFunction("engine::observers::get", "one observer {observer_id}: state, fires, "
                                              "dropped by reason", get_observer),
    BuiltinFunction("engine::functions::stats", "calls, errors, p50/p95/p99 and rate per "
                                                "function {function?}", function_stats),
)

def create_channel(services: Services, ctx: CallContext) -> Any:
    buffer_size = field(ctx.data, "buffer_size", int, optional=True) \
        if ctx.data is not None else None
    if services.channels is None:
        raise CallError(ErrorCode.INVOCATION_FAILED, "this daemon has no channels")
    return services.channels.create_refs(buffer_size)


_CHANNELS = (
    BuiltinFunction("engine::channels::create", "a streaming channel {buffer_size?}: "
                                                "{writer, reader} refs", create_channel),
)

BUILTINS: dict[str, BuiltinFunction] = {
    b.id: b for b in (*_ENGINE, *_CHANNELS, *state_functions.FUNCTIONS,
                      *stream_functions.FUNCTIONS, *queue_functions.FUNCTIONS,
                      *managed_functions.FUNCTIONS)
}
