"""Trigger bindings: registration, ownership, types coming and going, firing.

Part of the sans-I/O core: it writes messages into the router's output list and starts
calls through the router; it never touches a socket or a clock of its own.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii_daemon.core.errors import TriggerConfigError, TriggerError
from iii_daemon.core.triggers import catalog
from iii_daemon.core.triggers.base import (
    ACTIVE,
    ERROR,
    PENDING,
    Binding,
    Clock,
    Exclusive,
    Reactive,
    Scheduled,
    TriggerHost,
    TriggerType,
)
from iii_daemon.core.triggers.provided import ProvidedType
from iii_daemon.core.unsettled import MISSING, Unsettled
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.names import id_problem

if TYPE_CHECKING:
    from msgspec import Raw

    from iii_daemon.core.effects import Output
    from iii_daemon.core.writes import StoredTrigger

log = logging.getLogger("iii_daemon")

#: Scheduled firings handled in one go (one timer turn) before others get a turn. With
#: 10 000 every-second crons another client's p99 was 21-22 ms at 256 (a turn is about
#: 6 ms), 8-16 ms at 64, no better at 16, for the same daemon CPU (benchmarks/crons.py).
FIRINGS_PER_TURN = 64
#: How long a condition function may take before the firing is skipped.
CONDITION_TIMEOUT_MS = 30_000

#: How a firing that someone waits for ended: ``answer(skipped, result, error, out)``,
#: where ``skipped`` is the reason it did not run (else None).
Answered = Callable[["str | None", "Raw | None", "p.ErrorBody | None", "Output"], None]



class _Reaction:
    """The firings one event asked for, and how many of them have fired."""

    __slots__ = ("depth", "done", "firings")

    def __init__(self, firings: list[tuple[Binding, Any]], depth: int) -> None:
        self.firings = firings
        self.depth = depth  # the observe hops of the call that made the event
        self.done = 0


def _load(path: str) -> Any:
    """A class named ``"module:Class"`` (catalog entries)."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def is_truthy(value: Any) -> bool:
    """protocol.md: false, null, 0 and "" are falsy; anything else (even [] or {}) runs."""
    return not (value is None or value is False or value == "" or
                (isinstance(value, int | float) and not isinstance(value, bool)
                 and value == 0))


def _log_outcome(binding: Binding, error: p.ErrorBody | None) -> None:
    """Log when a trigger starts failing and when it works again; not every failure (an
    every-second cron into a broken function must not flood the log)."""
    if error is not None and not binding.failing:
        binding.failing = True
        log.warning("trigger %r (%s) -> %s failed: %s: %s (logged again when it works)",
                    binding.id, binding.trigger_type, binding.function_id,
                    error.code, error.message)
    elif error is None and binding.failing:
        binding.failing = False
        log.info("trigger %r (%s) -> %s works again", binding.id, binding.trigger_type,
                 binding.function_id)


class TriggerManager:
    def __init__(self, host: TriggerHost) -> None:
        self.host = host
        self.types: dict[str, TriggerType] = {
            type_id: _load(path)() for type_id, path in catalog.BUILTIN.items()}
        #: Built-in types with hooks, found once (worker-provided types have none).
        self._scheduled = [t for t in self.types.values() if isinstance(t, Scheduled)]
        self._reactive = {t.id: t for t in self.types.values() if isinstance(t, Reactive)}
        self.bindings: dict[str, Binding] = {}
        #: Firings events asked for beyond ``FIRINGS_PER_TURN``: fired on the next turns
        #: (10 000 state triggers on one scope must not hold every caller for 80 ms).
        #: Each event's list as its type gave it, with how far it got: copying 10 000
        #: firings into a queue of their own took 18 ms of the event's turn.
        self._reacting: collections.deque[_Reaction] = collections.deque()
        #: Daemon-owned bindings added or removed whose store writes have not landed.
        self.unsettled: Unsettled[str] = Unsettled(self._restore)
        #: When several daemons share a backend: ``claim(binding, event_id, fire, out)``
        #: runs ``fire(out)`` only on the daemon that claims that firing first (a cron
        #: tick fires once in the cluster). None: every firing is this daemon's.
        self.claim: Callable[[Binding, str, Callable[[Output], None], Output], None] | None \
            = None
        #: Who else hears every event of a type, bound or not (the stream socket's
        #: clients hear ``stream`` events), by type id.
        self.listeners: dict[str, Callable[[dict[str, Any], Output], None]] = {}

    # --- registration -------------------------------------------------------------------

    def load(self, rows: list[StoredTrigger], clock: Clock, out: Output) -> None:
        """Bind the daemon-owned triggers the store held at start-up.

        A row that cannot be used (bad JSON, wrong shape, a config that no longer
        validates) stays in the store and is listed with status ``error`` and the
        reason; it never stops the daemon from starting.
        """
        for row in rows:
            binding = Binding(id=row.id, trigger_type=row.trigger_type,
                              function_id=row.function_id,
                              config=row.config if isinstance(row.config, dict) else {},
                              metadata=row.metadata, owner=None)
            problem = row.problem or self._problem(binding.id, binding.trigger_type,
                                                   binding.function_id, row.config, clock)
            if problem:
                binding.status, binding.error = ERROR, f"cannot load the stored trigger: " \
                                                       f"{problem}"
                self.bindings[binding.id] = binding
                continue
            try:
                self._add(binding, clock, out)
            except Exception as exc:  # a bug in a type must not stop the daemon either
                binding.status, binding.error = ERROR, f"cannot bind: {exc}"
                self.bindings[binding.id] = binding

    def _problem(self, trigger_id: str, trigger_type: str, function_id: str, config: Any,
                 clock: Clock) -> str | None:
        """What is wrong with a registration's ids and config, or None."""
        problem = id_problem("trigger id", trigger_id) or \
            id_problem("trigger type", trigger_type) or id_problem("function_id", function_id)
        if problem:
            return problem
        if not isinstance(config, dict):
            return "config must be an object"
        condition = config.get("condition_function_id")
        if condition is not None:
            if not isinstance(condition, str):
                return "config.condition_function_id must be a non-empty string"
            problem = id_problem("config.condition_function_id", condition)
            if problem:
                return problem
        kind = self.types.get(trigger_type)
        return kind.validate(config, clock) if kind is not None else None

    def register(self, owner: int | None, trigger_id: str, trigger_type: str,
                 function_id: str, config: Any, metadata: Any, clock: Clock,
                 out: Output) -> Binding:
        """Add (or replace, same owner) a binding.

        Raises:
            TriggerConfigError: bad id, config or condition.
            TriggerError: the id belongs to someone else.
        """
        problem = self._problem(trigger_id, trigger_type, function_id, config, clock)
        if problem:
            raise TriggerConfigError(problem)
        existing = self.bindings.get(trigger_id)
        if existing is not None and existing.owner != owner:
            raise TriggerError(f"trigger id '{trigger_id}' is already registered by "
                               f"{self._owner_name(existing)}")
        binding = Binding(id=trigger_id, trigger_type=trigger_type, function_id=function_id,
                          config=config, metadata=metadata, owner=owner)
        kind = self.types.get(trigger_type)
        if isinstance(kind, Exclusive):
            problem = kind.conflict(binding)
            if problem:
                raise TriggerError(problem)
        if existing is not None:
            self._remove(existing, out)
        self._add(binding, clock, out)
        self.host.record("registration", out, what="trigger", id=trigger_id,
                         trigger_type=trigger_type, function_id=function_id,
                         owner="daemon" if owner is None else self.host.worker_id(owner),
                         status=binding.status)
        return binding

    def _add(self, binding: Binding, clock: Clock, out: Output) -> None:
        self.bindings[binding.id] = binding
        kind = self.types.get(binding.trigger_type)
        if kind is not None:
            binding.bound = True
        binding.status = PENDING if kind is None else kind.bind(binding, clock, out)

    def unregister(self, trigger_id: str, owner: int | None, out: Output) -> Binding | None:
        """Remove a binding of ``owner``'s; return it, or None if there is none."""
        binding = self.bindings.get(trigger_id)
        if binding is None or binding.owner != owner:
            return None
        self._remove(binding, out)
        return binding

    def _restore(self, trigger_id: str, binding: Any, out: Output) -> None:
        """A daemon-owned change did not reach the disk: bind what the disk holds
        (``binding``, or MISSING for none) again. A worker's binding that took the id
        meanwhile stays."""
        current = self.bindings.get(trigger_id)
        if current is binding or (current is not None and current.owner is not None):
            return
        if current is not None:
            self._remove(current, out)
        if binding is not MISSING:
            self._add(binding, self.host.clock, out)

    def _remove(self, binding: Binding, out: Output) -> None:
        del self.bindings[binding.id]
        kind = self.types.get(binding.trigger_type)
        if kind is not None and binding.bound:
            kind.unbind(binding, out)

    def owned_by(self, trigger_id: str) -> int | str | None:
        binding = self.bindings.get(trigger_id)
        return "nobody" if binding is None else binding.owner

    # --- connections and worker-provided types ------------------------------------------

    def connection_closed(self, conn_id: int, out: Output) -> None:
        """A worker left: its triggers go (providers are told), its types' bindings wait."""
        for binding in [b for b in self.bindings.values() if b.owner == conn_id]:
            kind = self.types.get(binding.trigger_type)
            if kind is not None and kind.owner == conn_id:
                binding.status, binding.bound = PENDING, False  # no one left to tell
            self._remove(binding, out)
        for type_id in [t.id for t in self.types.values() if t.owner == conn_id]:
            self._drop_type(type_id)

    def add_type(self, conn_id: int, message: p.RegisterTriggerType, clock: Clock,
                 out: Output) -> None:
        """A worker provides a type: bind every binding waiting for it.

        Raises:
            TriggerError: the id is reserved or another worker provides it.
        """
        problem = id_problem("trigger type", message.id)
        if problem:
            raise TriggerConfigError(problem)
        existing = self.types.get(message.id)
        if message.id in catalog.COMING or (existing is not None and existing.owner is None):
            raise TriggerError(f"trigger type '{message.id}' is reserved by the daemon")
        if existing is not None and existing.owner != conn_id:
            raise TriggerError(f"trigger type '{message.id}' is already provided by "
                               f"worker {self.host.worker_id(existing.owner)}")
        kind = ProvidedType(message, conn_id)
        self.types[message.id] = kind
        for binding in self.bindings.values():
            if binding.trigger_type == message.id and binding.status == PENDING:
                binding.error = None
                binding.bound = True
                binding.status = kind.bind(binding, clock, out)

    def remove_type(self, conn_id: int, type_id: str) -> None:
        kind = self.types.get(type_id)
        if kind is not None and kind.owner == conn_id:
            self._drop_type(type_id)

    def _drop_type(self, type_id: str) -> None:
        del self.types[type_id]
        for binding in self.bindings.values():
            if binding.trigger_type == type_id:
                binding.status, binding.bound = PENDING, False

    def provider_answered(self, conn_id: int, message: p.TriggerRegistrationResult,
                          out: Output) -> None:
        """The provider's verdict on a forwarded binding, relayed to who registered it."""
        binding = self.bindings.get(message.id)
        kind = self.types.get(message.trigger_type)
        if binding is None or kind is None or kind.owner != conn_id \
                or binding.trigger_type != message.trigger_type:
            return
        if message.error is None:
            binding.status, binding.error = ACTIVE, None
        else:
            binding.status = ERROR
            binding.error = p.error_body(message.error,
                                         ErrorCode.TRIGGER_REGISTRATION_FAILED).message
        if binding.owner is not None:
            out.append((binding.owner, p.TriggerRegistrationResult(
                id=binding.id, trigger_type=binding.trigger_type,
                function_id=binding.function_id, error=message.error)))

    # --- firing -------------------------------------------------------------------------

    def fire(self, binding: Binding, payload: Any, clock: Clock, out: Output,
             answer: Answered | None = None, timeout_ms: int | None = None,
             manual: bool = False, skip_condition: bool = False, depth: int = 0) -> None:
        """Run the binding's function like a void call, after its condition if it has one.

        A binding whose earlier firings still run (as many as its type allows) skips
        with reason ``still_running``: a silent target never piles up calls. With
        ``answer`` (http, a firing by hand), whoever fired it is told how it ended.
        ``manual``: fired by hand (``engine::triggers::fire``), recorded with source
        ``manual``; ``skip_condition`` runs the function without asking its condition;
        ``depth``: the observe hops of the write that fired it (its calls carry them).
        """
        kind = self.types.get(binding.trigger_type)
        if kind is not None and binding.running >= kind.max_running:
            self._skip(binding, "still_running", out, answer)
            return
        binding.running += 1
        data = p.to_raw(payload)
        source = "manual" if manual else f"trigger:{binding.trigger_type}"
        condition = binding.config.get("condition_function_id")
        if condition is None or skip_condition:
            self._run(binding, data, clock, out, answer, timeout_ms, source, depth)
            return

        def decide(result: Raw | None, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:
                binding.running -= 1
                self._skip(binding, f"condition '{condition}' failed: "
                                    f"{error.code}: {error.message}", out, answer)
            elif not is_truthy(p.from_raw(result or p.NULL)):
                binding.running -= 1
                self._skip(binding, f"condition '{condition}' returned "
                                    f"{bytes(result or p.NULL).decode()}", out, answer)
            else:
                self._run(binding, data, self.host.clock, out, answer, timeout_ms, source,
                          depth)

        self.host.call_internal(condition, data, decide, clock, out, CONDITION_TIMEOUT_MS,
                                source, {"condition_of": binding.id}, depth=depth)

    def _run(self, binding: Binding, data: Raw, clock: Clock, out: Output,
             answer: Answered | None, timeout_ms: int | None, source: str,
             depth: int = 0) -> None:
        # A scheduled or reactive firing's event says no more than it needs.
        by_hand = {"source": source} if source == "manual" else {}
        self.host.record("trigger.fired", out, trigger_id=binding.id,
                         trigger_type=binding.trigger_type, function_id=binding.function_id,
                         **by_hand)

        def finished(result: Raw | None, error: p.ErrorBody | None, out: Output) -> None:
            binding.running -= 1
            _log_outcome(binding, error)
            if answer is not None:
                answer(None, result, error, out)

        # The router records the invocation (source and trigger id with it).
        self.host.call_internal(binding.function_id, data, finished, clock, out, timeout_ms,
                                source, {"trigger_id": binding.id}, depth=depth)

    def _skip(self, binding: Binding, reason: str, out: Output,
              answer: Answered | None = None) -> None:
        self.host.record("trigger.skipped", out, trigger_id=binding.id,
                         trigger_type=binding.trigger_type, function_id=binding.function_id,
                         reason=reason)
        if answer is not None:
            answer(reason, None, None, out)

    def next_due(self) -> float | None:
        """The earliest time a scheduled type wants to fire something."""
        if self._reacting:
            return 0.0  # now: the firings an event left for the next turn
        due = [d for d in (t.next_due() for t in self._scheduled) if d is not None]
        return min(due) if due else None

    def fire_due(self, clock: Clock, out: Output) -> None:
        """Fire what is due, ``FIRINGS_PER_TURN`` at most: the rest stay due, and the
        driver comes back for them after the other connections had a turn (10 000 crons
        due in the same second must not hold every caller for a quarter of a second)."""
        left = self._react(clock, out, FIRINGS_PER_TURN)
        for kind in self._scheduled:
            for binding, payload in kind.pop_due(clock, left):
                if self.claim is None or not isinstance(payload, dict) \
                        or "scheduled_time" not in payload:
                    self.fire(binding, payload, clock, out)
                else:  # the tick's time names it in every daemon alike
                    self.claim(binding, str(payload["scheduled_time"]),
                               self.fire_later(binding, payload), out)
                left -= 1
            if left <= 0:
                return

    def fire_later(self, binding: Binding, payload: Any) -> Callable[[Output], None]:
        """Fire ``binding`` when told (a claim won), if it is still bound then."""

        def fire(out: Output) -> None:
            if self.bindings.get(binding.id) is binding:
                self.fire(binding, payload, self.host.clock, out)

        return fire

    def event(self, type_id: str, event: dict[str, Any], clock: Clock, out: Output,
              depth: int = 0) -> int:
        """Something happened that built-in type ``type_id`` reacts to (a state change,
        a publish): fire the bindings it picks; return how many. ``depth``: the observe
        hops of the call that made it happen."""
        self.tell(type_id, event, out)
        matched = self._reactive[type_id].matching(event)
        if matched:
            self._reacting.append(_Reaction(matched, depth))
            self._react(clock, out, FIRINGS_PER_TURN)
        return len(matched)

    def tell(self, type_id: str, event: dict[str, Any], out: Output) -> None:
        """Hand ``event`` to whoever listens to ``type_id`` events besides bindings (once
        per daemon: a change through a shared backend is told on every daemon)."""
        listener = self.listeners.get(type_id)
        if listener is not None:
            listener(event, out)

    def _react(self, clock: Clock, out: Output, limit: int) -> int:
        """Fire up to ``limit`` of the firings events asked for, oldest first; return how
        many more this turn may fire."""
        reacting = self._reacting
        bindings = self.bindings
        while reacting and limit > 0:
            reaction = reacting[0]
            start = reaction.done
            reaction.done = end = min(len(reaction.firings), start + limit)
            if end == len(reaction.firings):
                reacting.popleft()
            limit -= end - start
            for binding, payload in reaction.firings[start:end]:
                if bindings.get(binding.id) is binding:  # not removed meanwhile
                    self.fire(binding, payload, clock, out, depth=reaction.depth)
        return limit

    # --- listing ------------------------------------------------------------------------

    def _owner_name(self, binding: Binding) -> str:
        return "the daemon" if binding.owner is None else \
            f"worker {self.host.worker_id(binding.owner)}"

    def describe(self, binding: Binding) -> dict[str, Any]:
        return {"id": binding.id, "trigger_type": binding.trigger_type,
                "function_id": binding.function_id, "config": binding.config,
                "metadata": binding.metadata,
                "owner": "daemon" if binding.owner is None
                else self.host.worker_id(binding.owner),
                "status": binding.status, "error": binding.error}

    def describe_types(self) -> list[dict[str, Any]]:
        """Every provided type, and every type bindings wait for that nobody provides
        (provider None), with how many bindings each has; sorted by id."""
        counts = collections.Counter(b.trigger_type for b in self.bindings.values())
        rows = [{"id": kind.id, "description": kind.description,
                 "provider": "daemon" if kind.owner is None
                 else self.host.worker_id(kind.owner),
                 "triggers": counts[kind.id]} for kind in self.types.values()]
        rows += [{"id": type_id, "description": None, "provider": None, "triggers": count}
                 for type_id, count in counts.items() if type_id not in self.types]
        return sorted(rows, key=lambda row: row["id"])
