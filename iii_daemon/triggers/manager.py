"""Trigger bindings: registration, ownership, types coming and going, firing.

Part of the sans-I/O core: it writes messages into the router's output list and starts
calls through the router; it never touches a socket or a clock of its own.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from iii_daemon.store import Store
from iii_daemon.triggers.base import ACTIVE, ERROR, PENDING, Binding, Clock, TriggerType
from iii_daemon.triggers.cron import CronType
from iii_daemon.triggers.provided import ProvidedType
from iii_daemon.triggers.state import StateType
from iii_daemon.triggers.subscribe import SubscribeType
from iii_sdk import protocol as p

if TYPE_CHECKING:
    from msgspec import Raw

    from iii_daemon.router import Output, Router

#: How long a condition function may take before the firing is skipped.
CONDITION_TIMEOUT_MS = 30_000
#: Types the daemon provides or will provide; no worker may register these ids.
RESERVED_TYPES = frozenset({"cron", "state", "subscribe", "http"})


class TriggerError(Exception):
    """A registration the daemon refuses; the message says why."""


def is_truthy(value: Any) -> bool:
    """protocol.md: false, null, 0 and "" are falsy; anything else (even [] or {}) runs."""
    return not (value is None or value is False or value == "" or
                (isinstance(value, int | float) and not isinstance(value, bool)
                 and value == 0))


class TriggerManager:
    def __init__(self, router: Router, store: Store) -> None:
        self.router = router
        self.store = store
        self.cron = CronType()
        self.state = StateType()
        self.subscribe = SubscribeType()
        self.types: dict[str, TriggerType] = {
            t.id: t for t in (self.cron, self.state, self.subscribe)}
        self.bindings: dict[str, Binding] = {}

    # --- registration -------------------------------------------------------------------

    def load(self, clock: Clock, out: Output) -> None:
        """Bind the daemon-owned triggers kept in the store (at startup)."""
        for row in self.store.load_triggers():
            self._add(Binding(id=row["id"], trigger_type=row["trigger_type"],
                              function_id=row["function_id"], config=row["config"],
                              metadata=row["metadata"], owner=None), clock, out)

    def register(self, owner: int | None, trigger_id: str, trigger_type: str,
                 function_id: str, config: Any, metadata: Any, clock: Clock,
                 out: Output) -> Binding:
        """Add (or replace, same owner) a binding.

        Raises:
            TriggerError: bad id, config or condition, or the id belongs to someone else.
        """
        if not trigger_id:
            raise TriggerError("trigger id must not be empty")
        if not function_id:
            raise TriggerError("function_id must not be empty")
        if not isinstance(config, dict):
            raise TriggerError("config must be an object")
        condition = config.get("condition_function_id")
        if condition is not None and (not isinstance(condition, str) or not condition):
            raise TriggerError("config.condition_function_id must be a non-empty string")
        kind = self.types.get(trigger_type)
        if kind is not None:
            problem = kind.validate(config)
            if problem:
                raise TriggerError(problem)
        existing = self.bindings.get(trigger_id)
        if existing is not None:
            if existing.owner != owner:
                raise TriggerError(f"trigger id '{trigger_id}' is already registered by "
                                   f"{self._owner_name(existing)}")
            self._remove(existing, out)
        binding = Binding(id=trigger_id, trigger_type=trigger_type, function_id=function_id,
                          config=config, metadata=metadata, owner=owner)
        if owner is None:
            self.store.save_trigger(trigger_id, trigger_type, function_id, config, metadata)
        self._add(binding, clock, out)
        return binding

    def _add(self, binding: Binding, clock: Clock, out: Output) -> None:
        self.bindings[binding.id] = binding
        kind = self.types.get(binding.trigger_type)
        binding.status = PENDING if kind is None else kind.bind(binding, clock, out)

    def unregister(self, trigger_id: str, owner: int | None, out: Output) -> bool:
        """Remove a binding of ``owner``'s; False if there is none.

        Raises:
            StoreError: the store refused the deletion; the binding is kept, so memory
                and disk never disagree.
        """
        binding = self.bindings.get(trigger_id)
        if binding is None or binding.owner != owner:
            return False
        if owner is None:
            self.store.delete_trigger(trigger_id)
        self._remove(binding, out)
        return True

    def _remove(self, binding: Binding, out: Output) -> None:
        del self.bindings[binding.id]
        kind = self.types.get(binding.trigger_type)
        if kind is not None and binding.status != PENDING:
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
                binding.status = PENDING  # no one left to tell
            self._remove(binding, out)
        for type_id in [t.id for t in self.types.values() if t.owner == conn_id]:
            self._drop_type(type_id)

    def add_type(self, conn_id: int, message: p.RegisterTriggerType, clock: Clock,
                 out: Output) -> None:
        """A worker provides a type: bind every binding waiting for it.

        Raises:
            TriggerError: the id is reserved or another worker provides it.
        """
        if not message.id or message.id in RESERVED_TYPES:
            raise TriggerError(f"trigger type '{message.id}' is reserved by the daemon")
        existing = self.types.get(message.id)
        if existing is not None and existing.owner != conn_id:
            raise TriggerError(f"trigger type '{message.id}' is already provided by "
                               f"worker {self.router.worker_id(existing.owner)}")
        kind = ProvidedType(message, conn_id)
        self.types[message.id] = kind
        for binding in self.bindings.values():
            if binding.trigger_type == message.id and binding.status == PENDING:
                binding.error = None
                binding.status = kind.bind(binding, clock, out)

    def remove_type(self, conn_id: int, type_id: str) -> None:
        kind = self.types.get(type_id)
        if kind is not None and kind.owner == conn_id:
            self._drop_type(type_id)

    def _drop_type(self, type_id: str) -> None:
        del self.types[type_id]
        for binding in self.bindings.values():
            if binding.trigger_type == type_id:
                binding.status = PENDING

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
            error = message.error
            binding.error = error.get("message", str(error)) if isinstance(error, dict) \
                else str(error)
        if binding.owner is not None:
            out.append((binding.owner, p.TriggerRegistrationResult(
                id=binding.id, trigger_type=binding.trigger_type,
                function_id=binding.function_id, error=message.error)))

    # --- firing -------------------------------------------------------------------------

    def fire(self, binding: Binding, payload: Any, clock: Clock, out: Output) -> None:
        """Run the binding's function like a void call, after its condition if it has one."""
        data = p.to_raw(payload)
        condition = binding.config.get("condition_function_id")
        if condition is None:
            self._run(binding, data, clock, out)
            return

        def decide(result: Raw | None, error: Any, out: Output) -> None:
            if error is not None:
                self._skip(binding, f"condition '{condition}' failed: "
                                    f"{error.get('code')}: {error.get('message')}")
            elif not is_truthy(p.from_raw(result or p.NULL)):
                self._skip(binding, f"condition '{condition}' returned "
                                    f"{bytes(result or p.NULL).decode()}")
            else:
                self._run(binding, data, self.router.clock, out)

        self.router.call_internal(condition, data, decide, clock, out,
                                  timeout_ms=CONDITION_TIMEOUT_MS)

    def _run(self, binding: Binding, data: Raw, clock: Clock, out: Output) -> None:
        started = clock.now
        self.router.record("trigger.fired", trigger_id=binding.id,
                           trigger_type=binding.trigger_type, function_id=binding.function_id)

        def finished(result: Raw | None, error: Any, out: Output) -> None:
            self.router.record(
                "invocation.finished", function_id=binding.function_id,
                source=f"trigger:{binding.trigger_type}", trigger_id=binding.id,
                status="error" if error is not None else "ok", error=error,
                duration_ms=round((self.router.clock.now - started) * 1000, 3))

        self.router.call_internal(binding.function_id, data, finished, clock, out)

    def _skip(self, binding: Binding, reason: str) -> None:
        self.router.record("trigger.skipped", trigger_id=binding.id,
                           trigger_type=binding.trigger_type, function_id=binding.function_id,
                           reason=reason)

    def fire_due(self, clock: Clock, out: Output) -> None:
        for binding, payload in self.cron.pop_due(clock):
            self.fire(binding, payload, clock, out)

    def state_changed(self, scope: str, key: str, event_type: str, old: Any, new: Any,
                      clock: Clock, out: Output) -> None:
        payload = {"type": "state", "event_type": event_type, "scope": scope, "key": key,
                   "old_value": old, "new_value": new}
        for binding in self.state.matching(scope, key):
            self.fire(binding, payload, clock, out)

    def published(self, topic: str, data: Any, clock: Clock, out: Output) -> int:
        subscribers = self.subscribe.subscribers(topic)
        for binding in subscribers:
            self.fire(binding, data, clock, out)
        return len(subscribers)

    # --- listing ------------------------------------------------------------------------

    def _owner_name(self, binding: Binding) -> str:
        return "the daemon" if binding.owner is None else \
            f"worker {self.router.worker_id(binding.owner)}"

    def describe(self, binding: Binding) -> dict[str, Any]:
        return {"id": binding.id, "trigger_type": binding.trigger_type,
                "function_id": binding.function_id, "config": binding.config,
                "metadata": binding.metadata,
                "owner": "daemon" if binding.owner is None
                else self.router.worker_id(binding.owner),
                "status": binding.status, "error": binding.error}

    def describe_types(self) -> list[dict[str, Any]]:
        """Every provided type, and every type bindings wait for that nobody provides
        (provider None), with how many bindings each has; sorted by id."""
        counts = collections.Counter(b.trigger_type for b in self.bindings.values())
        rows = [{"id": kind.id, "description": kind.description,
                 "provider": "daemon" if kind.owner is None
                 else self.router.worker_id(kind.owner),
                 "triggers": counts[kind.id]} for kind in self.types.values()]
        rows += [{"id": type_id, "description": None, "provider": None, "triggers": count}
                 for type_id, count in counts.items() if type_id not in self.types]
        return sorted(rows, key=lambda row: row["id"])
