"""The owner side of observe.v1: what a worker that serves an observed function is told
and may do, as the official SDK 0.25 speaks it.

A worker that declares ``observe.v1`` (``engine::workers::register {features}``) gets
``functionregistered`` for each function it serves, with the function's observers, and
``observeradded`` / ``observerremoved`` as they change (each change bumps the function's
``revision``); it answers each observer with ``observerack`` (an ``error`` refuses it:
its hook said no). With ``local-dispatch.v1`` too, ``functionregistered`` lets it run
its own functions in-process (``local_dispatch``): such calls never reach the daemon,
so the worker reports the ones its observers match (``invocationsobserved``) and counts
the rest (``localinvocationstats``).

A function registered with ``observe {delivery: "owner", args_format}`` is delivered by
its owner: observers give it ``source.args`` (checked against ``args_format``, a JSON
Schema), its calls activate nothing by themselves, and an observer is active once its
owner acked it. The owner then hands events to it with ``obs.emit`` (reported as
``invocationsobserved``) or calls its target with ``obs.call`` (an ``invokefunction``
carrying ``activation {observer_id}``, routed here to the observer's target).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iii_daemon.core.observers import (
    MAX_OBSERVE_DEPTH,
    Observer,
    Observers,
    Refused,
    depth_of,
)
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output
    from iii_daemon.core.registry import Connection, FunctionEntry, Registry
    from iii_daemon.core.stats import Stats

OBSERVE_V1 = "observe.v1"
LOCAL_DISPATCH_V1 = "local-dispatch.v1"
NAMESPACE = "default"
#: Items one ``invocationsobserved`` may carry (the SDK sends batches of 256).
MAX_REPORT_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class Descriptor:
    """``registerfunction.observe``: how a function's observers are delivered."""

    owner: bool
    #: JSON Schema of ``source.args`` (owner delivery only).
    args_format: Any = None
    #: False: no observer is taken (``NOT_OBSERVABLE``).
    allow: bool = True


def descriptor_of(value: Any) -> Descriptor | None:
    """The descriptor a ``registerfunction`` carries (None: plain auto delivery).

    Raises:
        ValueError: it is not one (the registration is refused, saying why).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("observe must be an object {delivery?, args_format?, allow?}")
    delivery = value.get("delivery") or "auto"
    if delivery not in ("auto", "owner"):
        raise ValueError(f"observe.delivery must be 'auto' or 'owner', got {delivery!r}")
    allow = value.get("allow", True)
    if not isinstance(allow, bool):
        raise ValueError("observe.allow must be true or false")
    schema = value.get("args_format")
    if schema is not None:
        if delivery != "owner":
            raise ValueError("observe.args_format needs delivery 'owner'")
        from jsonschema import SchemaError, validators

        try:
            validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"observe.args_format is not a JSON Schema: "
                             f"{exc.message}") from None
    if delivery == "auto" and allow:
        return None
    return Descriptor(owner=delivery == "owner", args_format=schema, allow=allow)


def args_problem(descriptor: Descriptor | None, source: str, args: Any) -> Refused | None:
    """Why an observer's ``source.args`` cannot be taken for this source, or None."""
    if descriptor is not None and not descriptor.allow:
        return Refused("NOT_OBSERVABLE", f"'{source}' takes no observers (observe.allow)")
    owner = descriptor is not None and descriptor.owner
    if args in (None, {}) and not owner:
        return None
    if not owner:
        return Refused("INVALID_ARGS", f"'{source}' is delivered by the daemon (auto): "
                                       "source.args are for owner-delivered functions")
    args = {} if args is None else args
    if not isinstance(args, dict):
        return Refused("INVALID_ARGS", "source.args must be an object")
    assert descriptor is not None
    if descriptor.args_format is not None:
        from jsonschema import validators

        schema = descriptor.args_format
        error = next(iter(validators.validator_for(schema)(schema).iter_errors(args)), None)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "args"
            return Refused("INVALID_ARGS", f"source.args of '{source}' do not fit its "
                                           f"args_format: {where}: {error.message}")
    return None


def info(observer: Observer) -> p.ObserverInfo:
    """An observer as its source's owner sees it."""
    return p.ObserverInfo(id=observer.id, args=observer.args, filters=observer.filter.source,
                          target=observer.target, capture=list(observer.capture),
                          on=observer.on)


class ObserverOwners:
    """What the router does for the owners of observed functions."""

    def __init__(self, registry: Registry, observers: Observers, stats: Stats) -> None:
        self.registry = registry
        self.observers = observers
        self.stats = stats
        observers.owners = self

    def _owner(self, function_id: str) -> tuple[FunctionEntry, Connection] | None:
        """The function and its owner's connection, when the owner speaks observe.v1."""
        entry = self.registry.functions.get(function_id)
        conn = None if entry is None else self.registry.connections.get(entry.owner)
        if entry is None or conn is None or not conn.observe_v1:
            return None
        return entry, conn

    # --- telling the owner ------------------------------------------------------------------

    def declared(self, conn: Connection, out: Output) -> None:
        """``engine::workers::register`` told the connection's features: from now on it
        speaks observe.v1, starting with each function it registered already."""
        features = conn.info.get("features")
        if not isinstance(features, list) or OBSERVE_V1 not in features:
            return
        conn.observe_v1 = True
        # In-process calls would pass round an RBAC listener's middleware and rules.
        conn.local_dispatch = LOCAL_DISPATCH_V1 in features and conn.grants is None
        for function_id in sorted(conn.functions):
            self.confirm(self.registry.functions[function_id], conn, out)
            self.observers.refresh_source(function_id, out)  # now they wait for its acks

    def registered(self, conn: Connection, entry: FunctionEntry, out: Output) -> None:
        """``entry`` was (re-)registered: its observers start over with this owner."""
        for observer in list(self.observers.by_source.get(entry.id, ())):
            observer.acked = False
            observer.via_owner = entry.observe is not None and entry.observe.owner
            refusal = args_problem(entry.observe, entry.id, observer.args)
            if refusal is not None:
                self.observers.refuse(observer, refusal.code, refusal.message, out)
        if conn.observe_v1:
            self.confirm(entry, conn, out)
        self.observers.refresh_source(entry.id, out)

    def source_gone(self, function_id: str, out: Output) -> None:
        """Nobody serves ``function_id`` now: its observers wait for the next owner to
        take them in (an auto one stays active for routed calls)."""
        for observer in self.observers.by_source.get(function_id, ()):
            observer.acked = False
        self.observers.refresh_source(function_id, out)

    def confirm(self, entry: FunctionEntry, conn: Connection, out: Output) -> None:
        entry.revision += 1
        out.append((conn.id, p.FunctionRegistered(
            id=_own_name(conn, entry.id), namespace=NAMESPACE, revision=entry.revision,
            local_dispatch=conn.local_dispatch,
            observers=[info(o) for o in self.observers.by_source.get(entry.id, ())])))

    def added(self, observer: Observer, out: Output) -> None:
        self._tell(observer, out, lambda entry, name: p.ObserverAdded(
            function_id=name, namespace=NAMESPACE, revision=entry.revision,
            observer=info(observer)))

    def removed(self, observer: Observer, out: Output) -> None:
        self._tell(observer, out, lambda entry, name: p.ObserverRemoved(
            function_id=name, namespace=NAMESPACE, revision=entry.revision,
            id=observer.id))

    def _tell(self, observer: Observer, out: Output,
              message: Callable[[FunctionEntry, str], p.Message]) -> None:
        """A change of the observer set of ``observer``'s source, to its owner (one
        revision more), when the owner speaks observe.v1."""
        owned = self._owner(observer.source)
        if owned is not None:
            entry, conn = owned
            entry.revision += 1
            out.append((conn.id, message(entry, _own_name(conn, entry.id))))

    def source_problem(self, source: str, args: Any) -> Refused | None:
        """Why an observer of ``source`` with ``args`` cannot be taken now, or None (a
        source not registered yet is checked when it is)."""
        entry = self.registry.functions.get(source)
        if entry is None:
            return None if args is None or isinstance(args, dict) else \
                Refused("INVALID_ARGS", "source.args must be an object")
        return args_problem(entry.observe, source, args)

    def owner_delivered(self, function_id: str) -> bool:
        entry = self.registry.functions.get(function_id)
        return entry is not None and entry.observe is not None and entry.observe.owner

    def ready(self, observer: Observer) -> bool:
        """Whether the source side lets the observer be active: once the source's owner
        acked it, when the owner speaks observe.v1 (it may run the source in-process,
        and only reports calls to observers it has taken in); an owner-delivered source
        needs that owner."""
        if observer.acked:
            return True
        entry = self.registry.functions.get(observer.source)
        if entry is None:  # not served now: an auto one is active for when it is
            return not observer.via_owner
        conn = self.registry.connections.get(entry.owner)
        return not (conn is not None and conn.observe_v1) and \
            not (entry.observe is not None and entry.observe.owner)

    # --- what the owner says ------------------------------------------------------------

    def _own_observer(self, conn: Connection, observer_id: Any) -> Observer | None:
        """The observer, if ``conn`` serves its source."""
        observer = self.observers.by_id.get(observer_id) if isinstance(observer_id, str) \
            else None
        entry = None if observer is None else self.registry.functions.get(observer.source)
        return observer if entry is not None and entry.owner == conn.id else None

    def acked(self, conn: Connection, msg: p.ObserverAck, out: Output) -> None:
        observer = self._own_observer(conn, msg.id)
        if observer is None or observer.source != _registered(conn, msg.function_id):
            return  # removed meanwhile, or not this connection's to ack
        if msg.error is not None:
            error = p.error_body(msg.error, "OBSERVE_REJECTED")
            self.observers.refuse(observer, error.code, f"the owner of '{observer.source}' "
                                                        f"refused it: {error.message}", out)
            return
        observer.acked = True
        self.observers.refresh(observer, out)

    def reported(self, conn: Connection, msg: p.InvocationsObserved, out: Output) -> None:
        """Calls the owner ran in-process and ``obs.emit`` events: each activates the
        observers it names that are active and observe it."""
        for item in msg.items[:MAX_REPORT_ITEMS]:
            if not isinstance(item, dict) or not isinstance(item.get("matched"), list):
                continue
            function_id = item.get("function_id")
            if isinstance(function_id, str):
                function_id = _registered(conn, function_id)
            for observer_id in item["matched"]:
                observer = self._own_observer(conn, observer_id)
                if observer is not None and observer.source == function_id \
                        and observer.state == "active":
                    self.observers.fire_reported(observer, item, out)

    def local_stats(self, conn: Connection, msg: p.LocalInvocationStats, now: float) -> None:
        for row in msg.functions:
            name = row.get("function_id") if isinstance(row, dict) else None
            if not isinstance(name, str) or _registered(conn, name) not in conn.functions:
                continue
            count, errors = row.get("count"), row.get("errors", 0)
            total = row.get("duration_ms_sum", 0.0)
            if isinstance(count, int) and isinstance(errors, int) and 0 <= errors <= count \
                    and count > 0 and isinstance(total, int | float) and math.isfinite(total) \
                    and total >= 0:
                self.stats.add_local(_registered(conn, name), count, errors, float(total),
                                     now)

    def owner_call(self, conn: Connection, msg: p.InvokeFunction, out: Output) -> bool:
        """An ``obs.call``: ``msg`` becomes the activation of the observer's target (True:
        route it on), or is answered with why not (False)."""
        activation = msg.activation
        observer = self._own_observer(conn, activation.get("observer_id")) \
            if isinstance(activation, dict) else None
        problem = None
        if observer is None:
            problem = (ErrorCode.FORBIDDEN, "an activation names an observer of a function "
                                            "this worker serves")
        elif observer.state != "active":
            problem = ("OBSERVER_NOT_ACTIVE", f"observer {observer.id} of {observer.source} "
                                              f"is {observer.state}")
        elif depth_of(msg.observe_depth) >= MAX_OBSERVE_DEPTH:
            problem = ("LOOP_GUARD", f"observe_depth reached the limit ({MAX_OBSERVE_DEPTH})")
        if problem is not None:
            if msg.invocation_id is not None:
                out.append((conn.id, p.InvocationResult(
                    invocation_id=msg.invocation_id, function_id=msg.function_id,
                    error=p.ErrorBody(code=problem[0], message=problem[1]))))
            return False
        assert observer is not None
        msg.function_id = observer.target
        msg.activation = {"observer_id": observer.id,
                          "activation_id": self.observers.next_activation(observer, out)}
        msg.metadata = observer.metadata
        msg.observe_depth = depth_of(msg.observe_depth) + 1
        return True


def _own_name(conn: Connection, function_id: str) -> str:
    """A function as its worker named it (an RBAC listener may have prefixed it)."""
    return function_id if conn.grants is None else conn.grants.own_name(function_id)


def _registered(conn: Connection, name: str) -> str:
    """A function its worker names ``name``, as the daemon knows it."""
    return name if conn.grants is None else conn.grants.daemon_id(name, conn.functions)
