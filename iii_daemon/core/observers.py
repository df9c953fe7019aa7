"""Observers (``observe.v1``), in the core: every finished call of a source function that
passes an observer's filters calls its target.

An observer belongs to the connection that sent ``observe`` and goes with it (a
reattaching connection takes it over, so it stays live in between). Its states:
``pending`` until its target is served, ``active``, ``suspended`` while the target is
gone again, ``error`` when refused (not kept), ``disposed`` after ``max_fires``
activations, ``expires_in_ms``, ``unobserve`` or its connection closing. Each change is
told to the owner as ``observerstatechanged`` and put in the event stream.

The router looks a call's function up in :attr:`Observers.by_source` before it keeps
anything of the call for them,
so a call of a function nobody observes pays one dict lookup. A matched call becomes an
activation: a call of the target with the envelope (what ``capture`` keeps), the
observer's ``metadata`` sidecar, ``activation {observer_id, activation_id}`` and
``observe_depth`` one more than the observed call's. At most ``max_in_flight`` run at
once; the rest wait in a bounded backlog (what does not fit is dropped and counted). A
call already ``MAX_OBSERVE_DEPTH`` hops from an outside call activates nothing: that is
the loop guard (an observer whose target calls its own source).
"""

from __future__ import annotations

import collections
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from msgspec import Raw

from iii_daemon.core.observe_filter import Filter, InvalidFilter, compile_filter
from iii_sdk import protocol as p

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output
    from iii_daemon.core.invocations import Continuation
    from iii_daemon.core.registry import Connection, Registry
    from iii_daemon.core.triggers.base import Clock

CAPTURES = frozenset({"input", "output", "error", "caller", "metadata"})
DEFAULT_CAPTURE = ("input", "output", "caller")
#: ``on``: which outcomes activate (``any`` is taken for upstream's ``complete``).
OUTCOMES = {"success": "success", "error": "error", "complete": "complete",
            "any": "complete"}
DELIVERIES = frozenset({"envelope", "input", "output"})
#: Observe hops a chain of calls may take before the loop guard stops it.
MAX_OBSERVE_DEPTH = 8
DEFAULT_MAX_IN_FLIGHT = 16
MAX_IN_FLIGHT = 1000
#: Matched calls an observer keeps waiting for a free slot, and their bytes at most;
#: more are dropped (and counted).
MAX_BACKLOG = 1000
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
#: An ``observe`` as sent (its metadata included): what an observer may hold.
MAX_OBSERVE_BYTES = 64 * 1024
#: Observers one connection may hold.
MAX_PER_CONNECTION = 10_000
REPLAY_WARNING = "a replay with another definition keeps the observer as first sent"


class Refused(Exception):
    """An ``observe`` the daemon cannot take: ``code`` is the protocol's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True, eq=False)
class Observed:
    """What the router keeps of a call for its observers (only when it has any)."""

    input: Raw
    metadata: Raw
    caller: dict[str, Any] | None
    depth: int
    source: str
    started_wall: float


def observed(msg: p.InvokeFunction, conn: Connection | None, source: str,
             started_wall: float) -> Observed:
    """What observers need of call ``msg`` from ``conn`` (None: the daemon's own)."""
    return Observed(input=msg.data, metadata=msg.metadata,
                    caller=None if conn is None else caller_of(conn, msg.caller),
                    depth=depth_of(msg.observe_depth), source=source,
                    started_wall=started_wall)


@dataclass(slots=True, eq=False)
class Observer:
    id: str
    owner: int
    worker_id: str
    source: str
    target: str
    on: str
    capture: tuple[str, ...]
    deliver: str
    filter: Filter
    metadata: Raw
    max_fires: int | None
    expires_at: float | None
    max_in_flight: int
    #: The ``observe`` as first sent (a replay is compared with it).
    definition: bytes
    created: float
    state: str = "pending"
    reason: p.ErrorBody | None = None
    fires: int = 0
    in_flight: int = 0
    #: ``(activation_id, payload JSON, observe_depth)`` waiting for a slot.
    backlog: collections.deque[tuple[str, Raw, int]] = field(
        default_factory=collections.deque)
    backlog_bytes: int = 0
    dropped: int = 0
    #: Matches the loop guard stopped.
    looped: int = 0
    last_fire: float | None = None
    #: Starting activations from the backlog now (a target that answers at once
    #: must not recurse through the whole backlog).
    pumping: bool = False
    #: ``source.args`` (owner-delivered functions: what the owner keys its events by).
    args: dict[str, Any] = field(default_factory=dict)
    #: The source's owner accepted it (``observerack``; owner delivery waits for it).
    acked: bool = False
    #: Its source was last seen delivered by its owner (it waits for one while none
    #: serves it).
    via_owner: bool = False

    def row(self) -> dict[str, Any]:
        """The observer as ``engine::observers::list`` shows it."""
        return {
            "id": self.id, "function_id": self.source, "target": self.target,
            "state": self.state, "fires": self.fires, "max_fires": self.max_fires,
            "on": self.on, "capture": list(self.capture), "deliver": self.deliver,
            "filters": self.filter.source, "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight, "backlog": len(self.backlog),
            # Matches that started no activation, by why (as upstream shapes it).
            # Nothing expires once it waits: a disposed observer's backlog still runs.
            "dropped": {"BACKLOG_FULL": self.dropped, "LOOP_GUARD": self.looped},
            "worker_id": self.worker_id,
            "created": round(self.created, 3),
            "last_fire": None if self.last_fire is None else round(self.last_fire, 3),
            "reason": None if self.reason is None else
            {"code": self.reason.code, "message": self.reason.message},
        }


def _whole(value: Any, name: str, default: int | None, most: int) -> int | None:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise Refused("INVALID_ARGS", f"{name} must be a whole number from 1 to {most}")
    return value


def _choice(value: Any, name: str, choices: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise Refused("INVALID_ARGS", f"{name} must be one of {', '.join(sorted(choices))}")
    return str(choices[value]) if isinstance(choices, dict) else value


def caller_of(conn: Connection, asserted: Any) -> dict[str, Any]:
    """Who made a call: the worker stamped from its connection, the function and
    invocation the calling SDK asserts (strings only, ``parent`` one level deep).
    A top-level call (nothing asserted) gets the connection's stamp, made once: every
    routed call carries it, and nothing changes it."""
    if asserted is None:
        stamp = conn.caller_stamp
        if stamp is None:
            stamp = conn.caller_stamp = _stamp(conn)
        return stamp
    caller = _stamp(conn)
    if isinstance(asserted, dict):
        for key in ("function_id", "invocation_id"):
            if isinstance(asserted.get(key), str):
                caller[key] = asserted[key]
        parent = asserted.get("parent")
        if isinstance(parent, dict):
            caller["parent"] = {k: v for k, v in parent.items()
                                if k in ("worker_id", "worker_name", "function_id",
                                         "invocation_id") and isinstance(v, str)}
    return caller


def _stamp(conn: Connection) -> dict[str, Any]:
    stamp: dict[str, Any] = {"worker_id": conn.worker_id}
    name = conn.info.get("name")
    if isinstance(name, str):
        stamp["worker_name"] = name
    return stamp


def depth_of(value: Any) -> int:
    """``observe_depth`` as sent: a whole number above 0, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else 0


class _Document:
    """The filter's document of one finished call, each root decoded once, when read."""

    __slots__ = ("_decoded", "error", "observed", "result")

    def __init__(self, observed: Observed, result: Any, error: p.ErrorBody | None) -> None:
        self.observed = observed
        self.result = result
        self.error = error
        self._decoded: dict[str, Any] = {}

    def roots(self, wanted: Any) -> dict[str, Any]:
        """The ``wanted`` roots the call has (an absent root is left out)."""
        found: dict[str, Any] = {}
        for root in wanted:
            value = self._decoded.get(root, _UNREAD)
            if value is _UNREAD:
                value = self._decoded[root] = self._root(root)
            if value is not _MISSING:
                found[root] = value
        return found

    def _root(self, root: str) -> Any:
        observed = self.observed
        if root == "input":
            return _decode(observed.input)
        if root == "output":
            return _MISSING if self.error is not None else _decode(self.result)
        if root == "error":
            return _MISSING if self.error is None else \
                {"code": self.error.code, "message": self.error.message}
        if root == "caller":
            return _MISSING if observed.caller is None else observed.caller
        if root == "metadata":
            return _MISSING if observed.metadata == p.NULL else _decode(observed.metadata)
        return _MISSING


class _Reported:
    """The filter's document of a call or event its owner reported: the parts it sent
    (what its observers capture), already decoded."""

    __slots__ = ("item",)

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item

    def roots(self, wanted: Any) -> dict[str, Any]:
        item = self.item
        return {root: item[root] for root in wanted if root in item and root in CAPTURES}


@dataclass(frozen=True, slots=True)
class _Call:
    """What an activation's envelope says of the call (or event) behind it."""

    function_id: str
    invocation_id: str
    status: str
    duration_ms: float
    started_wall: float
    depth: int
    #: How the call came: cli, sdk, trigger:TYPE, queue:NAME; ``local`` (reported).
    source: str


_MISSING: Any = object()
_UNREAD: Any = object()


def _decode(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return p.from_raw(raw)
    except Exception:  # a worker's result that is not JSON reads as null
        return None


class ObserverHost(Protocol):
    """What the observers need from the core."""

    registry: Registry

    @property
    def clock(self) -> Clock: ...

    def serves(self, function_id: str) -> bool: ...

    def record(self, kind: str, out: Output, **fields: Any) -> None: ...

    def activate(self, target: str, observer_id: str, activation_id: str, payload: Raw,
                 metadata: Raw, depth: int, then: Continuation, out: Output) -> None: ...


class SourceSide(Protocol):
    """What the observers need from the owners of their sources (observe.v1; see
    core/observer_owners.py)."""

    def source_problem(self, source: str, args: Any) -> Refused | None: ...

    def owner_delivered(self, function_id: str) -> bool: ...

    def ready(self, observer: Observer) -> bool: ...

    def added(self, observer: Observer, out: Output) -> None: ...

    def removed(self, observer: Observer, out: Output) -> None: ...


class Observers:
    """Every observer, by id, by source function and by target."""

    def __init__(self, router: ObserverHost) -> None:
        self._router = router
        self.by_id: dict[str, Observer] = {}
        #: Source function id -> its observers (only functions that have some).
        self.by_source: dict[str, list[Observer]] = {}
        self._by_target: dict[str, list[Observer]] = {}
        self._per_owner: collections.Counter[int] = collections.Counter()
        self._expiries: list[tuple[float, str]] = []
        self._activations = 0
        #: The owner side (core/observer_owners.py), which sets itself here.
        self.owners: SourceSide | None = None

    def rows(self, function_id: str | None = None) -> list[dict[str, Any]]:
        """The observers (of source ``function_id``), by id."""
        chosen = self.by_id.values() if function_id is None \
            else self.by_source.get(function_id, ())
        return [o.row() for o in sorted(chosen, key=lambda o: o.id)]

    # --- observe / unobserve ------------------------------------------------------------

    def observe(self, conn: Connection, msg: p.Observe, definition: bytes,
                out: Output) -> None:
        existing = self.by_id.get(msg.id)
        if existing is not None:
            if existing.owner != conn.id:
                self._answer(conn.id, msg.id, "error", out, p.ErrorBody(
                    code="FORBIDDEN",
                    message=f"observer id '{msg.id}' belongs to another connection"))
                return
            warnings = None if existing.definition == definition else [REPLAY_WARNING]
            out.append((conn.id, p.ObserveResult(id=msg.id, state=existing.state,
                                                 error=existing.reason, warnings=warnings)))
            return
        try:
            observer = self._parse(conn, msg, definition)
        except Refused as exc:
            error = p.ErrorBody(code=exc.code, message=exc.message)
            self._answer(conn.id, msg.id, "error", out, error)
            self._router.record("observer.changed", out, id=msg.id, state="error",
                                function_id=msg.source.function_id,
                                target=msg.target.function_id, worker_id=conn.worker_id,
                                error={"code": exc.code, "message": exc.message})
            return
        self.by_id[observer.id] = observer
        self.by_source.setdefault(observer.source, []).append(observer)
        self._by_target.setdefault(observer.target, []).append(observer)
        self._per_owner[conn.id] += 1
        if observer.expires_at is not None:
            heapq.heappush(self._expiries, (observer.expires_at, observer.id))
        observer.state = "active" if self._ready(observer) else "pending"
        self._answer(conn.id, observer.id, observer.state, out)
        self._event(observer, out)
        if self.owners is not None:
            self.owners.added(observer, out)

    def _parse(self, conn: Connection, msg: p.Observe, definition: bytes) -> Observer:
        source, target = msg.source.function_id, msg.target.function_id
        for what, function_id in (("source", source), ("target", target)):
            if not function_id:
                raise Refused("INVALID_ARGS", f"{what}.function_id must not be empty")
            if function_id.startswith("engine::"):
                raise Refused("FORBIDDEN", f"the daemon's own functions cannot be "
                                           f"observed or targeted ('{function_id}')")
        if source == target:  # each call of it would call it again
            raise Refused("SELF_TARGET", f"'{source}' cannot observe itself: its target "
                                         f"must be another function")
        refusal = None if self.owners is None else \
            self.owners.source_problem(source, msg.source.args)
        if refusal is not None:
            raise refusal
        if len(definition) > MAX_OBSERVE_BYTES:
            raise Refused("INVALID_ARGS", f"an observe message (metadata included) is at "
                                          f"most {MAX_OBSERVE_BYTES} bytes")
        if self._per_owner[conn.id] >= MAX_PER_CONNECTION:
            raise Refused("INVALID_ARGS", f"a connection holds at most {MAX_PER_CONNECTION} "
                                          "observers")
        capture = msg.source.capture
        if capture is None:
            captured = DEFAULT_CAPTURE
        elif isinstance(capture, list) and all(c in CAPTURES for c in capture):
            captured = tuple(dict.fromkeys(capture))
        else:
            raise Refused("INVALID_ARGS", "source.capture must be a list of input, output, "
                                          "error, caller, metadata")
        try:
            compiled = compile_filter(msg.source.filters)
        except InvalidFilter as exc:
            raise Refused("INVALID_FILTER", str(exc)) from None
        expires_ms = _whole(msg.expires_in_ms, "expires_in_ms", None, 2**31 - 1)
        router = self._router
        return Observer(
            id=msg.id, owner=conn.id, worker_id=conn.worker_id, source=source,
            target=target,
            on=_choice(msg.source.on, "source.on", OUTCOMES, "success"),
            capture=captured,
            deliver=_choice(msg.source.deliver, "source.deliver", DELIVERIES, "envelope"),
            filter=compiled,
            metadata=p.to_raw(msg.metadata),
            max_fires=_whole(msg.max_fires, "max_fires", None, 2**53),
            expires_at=None if expires_ms is None else router.clock.now + expires_ms / 1000,
            max_in_flight=_whole(msg.max_in_flight, "max_in_flight", DEFAULT_MAX_IN_FLIGHT,
                                 MAX_IN_FLIGHT) or DEFAULT_MAX_IN_FLIGHT,
            definition=definition, created=router.clock.wall,
            args=msg.source.args if isinstance(msg.source.args, dict) else {},
            via_owner=self.owners is not None and self.owners.owner_delivered(source))

    def unobserve(self, conn: Connection, observer_id: str, out: Output) -> None:
        observer = self.by_id.get(observer_id)
        if observer is not None and observer.owner == conn.id:
            self.dispose(observer, "UNOBSERVED", "removed by its connection (unobserve)",
                         out)

    def _answer(self, conn_id: int, observer_id: str, state: str, out: Output,
                error: p.ErrorBody | None = None) -> None:
        out.append((conn_id, p.ObserveResult(id=observer_id, state=state, error=error)))

    # --- lifecycle ----------------------------------------------------------------------

    def _change(self, observer: Observer, state: str, out: Output,
                reason: p.ErrorBody | None = None) -> None:
        if observer.state == state:
            return
        observer.state = state
        observer.reason = reason
        if observer.owner in self._router.registry.connections:
            out.append((observer.owner, p.ObserverStateChanged(
                id=observer.id, state=state, reason=reason, fires=observer.fires)))
        self._event(observer, out)

    def _event(self, observer: Observer, out: Output) -> None:
        reason = observer.reason
        self._router.record(
            "observer.changed", out, id=observer.id, state=observer.state,
            function_id=observer.source, target=observer.target,
            worker_id=observer.worker_id, fires=observer.fires,
            reason=None if reason is None else {"code": reason.code,
                                                "message": reason.message})

    def refuse(self, observer: Observer, code: str, message: str, out: Output) -> None:
        """Its source refuses it after all (its owner, or a registration it does not
        fit): state ``error``, removed."""
        self.dispose(observer, code, message, out, state="error")

    def dispose(self, observer: Observer, code: str, message: str, out: Output,
                state: str = "disposed") -> None:
        """Remove it; activations already started or waiting still run."""
        if self.by_id.get(observer.id) is not observer:
            return
        if self.owners is not None:
            self.owners.removed(observer, out)
        del self.by_id[observer.id]
        for table, key in ((self.by_source, observer.source),
                           (self._by_target, observer.target)):
            rest = [o for o in table[key] if o is not observer]
            if rest:
                table[key] = rest
            else:
                del table[key]
        self._per_owner[observer.owner] -= 1
        if not self._per_owner[observer.owner]:
            del self._per_owner[observer.owner]
        self._change(observer, state, out, p.ErrorBody(code=code, message=message))

    def connection_closed(self, conn_id: int, out: Output) -> None:
        if conn_id not in self._per_owner:
            return
        for observer in [o for o in self.by_id.values() if o.owner == conn_id]:
            self.dispose(observer, "CONNECTION_CLOSED", "its connection closed", out)

    def reattached(self, previous: int, conn: Connection) -> None:
        """A reconnecting worker's new connection takes over its observers (their
        replays then find them, fires and all)."""
        count = self._per_owner.pop(previous, 0)
        if not count:
            return
        for observer in self.by_id.values():
            if observer.owner == previous:
                observer.owner = conn.id
                observer.worker_id = conn.worker_id
        self._per_owner[conn.id] += count

    def targets_changed(self, function_ids: Any, out: Output) -> None:
        """Functions were registered or went away: observers of those targets follow."""
        if not self._by_target:
            return
        for function_id in function_ids:
            for observer in list(self._by_target.get(function_id, ())):
                self.refresh(observer, out)

    def refresh_source(self, function_id: str, out: Output) -> None:
        """Its source was registered or went away: its observers follow."""
        for observer in list(self.by_source.get(function_id, ())):
            self.refresh(observer, out)

    def _ready(self, observer: Observer) -> bool:
        return self._router.serves(observer.target) and (
            self.owners is None or self.owners.ready(observer))

    def refresh(self, observer: Observer, out: Output) -> None:
        """Active when its target is served and its source lets it (an owner-delivered
        one: once its owner acked it); else it waits."""
        if observer.state in ("error", "disposed"):
            return
        if self._ready(observer):
            self._change(observer, "active", out)
            self._pump(observer, out)
        elif not self._router.serves(observer.target):
            if observer.state == "active":
                self._change(observer, "suspended", out, p.ErrorBody(
                    code="TARGET_GONE", message=f"'{observer.target}' is not served now"))
        elif observer.state == "active":
            self._change(observer, "pending", out, p.ErrorBody(
                code="OWNER_PENDING", message=f"'{observer.source}' waits for its owner"))

    def next_expiry(self) -> float | None:
        return self._expiries[0][0] if self._expiries else None

    def expire(self, now: float, out: Output) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, observer_id = heapq.heappop(self._expiries)
            observer = self.by_id.get(observer_id)
            if observer is not None:
                self.dispose(observer, "EXPIRED", "expires_in_ms has passed", out)

    # --- matching and activations -------------------------------------------------------

    def finished(self, function_id: str, invocation_id: str, observed: Observed,
                 result: Any, error: p.ErrorBody | None, duration_ms: float,
                 out: Output) -> None:
        """A call of an observed function ended: activate each observer it matches (its
        owner hands an owner-delivered function's events over itself)."""
        if self.owners is not None and self.owners.owner_delivered(function_id):
            return
        document = _Document(observed, result, error)
        status = "success" if error is None else "error"
        for observer in list(self.by_source.get(function_id, ())):
            if observer.state != "active" or observer.on not in (status, "complete"):
                continue
            if not observer.filter.match_all and not observer.filter.matches(
                    document.roots(observer.filter.roots)):
                continue
            self._fire(observer, document, _Call(function_id, invocation_id, status,
                                                 duration_ms, observed.started_wall,
                                                 observed.depth, observed.source), out)

    def fire_reported(self, observer: Observer, item: dict[str, Any], out: Output) -> None:
        """An item of ``invocationsobserved`` its owner says ``observer`` matched: a call
        it ran in-process, or an ``obs.emit`` event (its ``input``)."""
        status = "error" if item.get("status") == "error" else "success"
        started, duration = item.get("started_at_ms"), item.get("duration_ms")
        invocation_id = item.get("invocation_id")
        self._fire(observer, _Reported(item), _Call(
            observer.source, invocation_id if isinstance(invocation_id, str) else "",
            status, float(duration) if isinstance(duration, int | float) else 0.0,
            started / 1000 if isinstance(started, int | float) else
            self._router.clock.wall, depth_of(item.get("observe_depth")), "local"), out)

    def next_activation(self, observer: Observer, out: Output) -> str:
        """Count a fire of ``observer`` (its owner calls the target itself, ``obs.call``)
        and name the activation."""
        self._activations += 1
        observer.fires += 1
        observer.last_fire = self._router.clock.wall
        if observer.max_fires is not None and observer.fires >= observer.max_fires:
            self.dispose(observer, "MAX_FIRES", f"fired {observer.fires} times (max_fires)",
                         out)
        return f"{observer.id}:{self._activations}"

    def _fire(self, observer: Observer, document: _Document | _Reported, call: _Call,
              out: Output) -> None:
        if call.depth >= MAX_OBSERVE_DEPTH:
            observer.looped += 1
            self._router.record("observer.skipped", out, id=observer.id,
                                function_id=call.function_id, target=observer.target,
                                reason=f"observe_depth {call.depth} reached the "
                                       f"limit ({MAX_OBSERVE_DEPTH}): a loop?")
            return
        activation_id = f"{observer.id}:{self._activations + 1}"
        payload = p.to_raw(self._payload(observer, document, call, activation_id))
        if observer.in_flight < observer.max_in_flight:
            self._start(observer, activation_id, payload, call.depth + 1, out)
        elif len(observer.backlog) < MAX_BACKLOG and \
                observer.backlog_bytes + len(payload) <= MAX_BACKLOG_BYTES:
            observer.backlog.append((activation_id, payload, call.depth + 1))
            observer.backlog_bytes += len(payload)
        else:
            observer.dropped += 1
            self._router.record("observer.skipped", out, id=observer.id,
                                function_id=call.function_id, target=observer.target,
                                reason=f"{len(observer.backlog)} activations already "
                                       "wait (the backlog is full)")
        self.next_activation(observer, out)

    def _payload(self, observer: Observer, document: _Document | _Reported, call: _Call,
                 activation_id: str) -> Any:
        if observer.deliver != "envelope":
            return document.roots((observer.deliver,)).get(observer.deliver)
        envelope: dict[str, Any] = {
            "observer_id": observer.id, "activation_id": activation_id,
            "function_id": call.function_id, "invocation_id": call.invocation_id,
            "status": call.status,
            # Every function lives in the one namespace this daemon has (as upstream
            # names it, for the SDKs that read it).
            "namespace": "default",
            **document.roots(observer.capture),
            "started_at_ms": int(call.started_wall * 1000),
            "duration_ms": round(call.duration_ms, 3),
            "source": call.source,  # extension: cli, sdk, trigger:TYPE, queue:NAME, local
        }
        return envelope

    def _start(self, observer: Observer, activation_id: str, payload: Raw, depth: int,
               out: Output) -> None:
        observer.in_flight += 1

        def done(_result: Any, _error: Any, out: Output) -> None:
            observer.in_flight -= 1
            self._pump(observer, out)

        self._router.activate(observer.target, observer.id, activation_id, payload,
                              observer.metadata, depth, done, out)

    def _pump(self, observer: Observer, out: Output) -> None:
        """Start what waits, while slots are free and the target is served (else it
        waits for the target to come back)."""
        if observer.pumping:
            return
        observer.pumping = True
        try:
            serves = self._router.serves
            while observer.backlog and observer.in_flight < observer.max_in_flight \
                    and serves(observer.target):
                activation_id, payload, depth = observer.backlog.popleft()
                observer.backlog_bytes -= len(payload)
                self._start(observer, activation_id, payload, depth, out)
        finally:
            observer.pumping = False
