"""Who may do what, for a worker that came in through an RBAC listener
(``[[websocket.listeners]]``): what its listener exposes, and what the auth function
answered for its connection (the upstream ``AuthResult``). Pure: rules in, verdicts out.

A worker may call: the functions it registered itself; :data:`ALWAYS` (what every SDK
needs to attach); functions in ``allowed_functions``; functions an ``expose_functions``
rule matches (``match("glob")``, an exact id, or ``{metadata = {...}}``), never one in
``forbidden_functions``. Anything else is ``FORBIDDEN``, naming the function and the rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from iii_sdk.listener_specs import ListenerSpec

#: Daemon functions every worker may call: an SDK introduces itself with it on connect.
ALWAYS = frozenset({"engine::workers::register"})

_MATCH = re.compile(r'^match\(\s*"(.*)"\s*\)$')


class AuthRefused(ValueError):
    """The auth function's answer cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``expose_functions`` (or allowed/forbidden) entry."""

    pattern: str | None = None
    metadata: dict[str, Any] | None = None

    def matches(self, function_id: str, metadata: Any) -> bool:
        if self.pattern is not None:
            return fnmatch.fnmatchcase(function_id, self.pattern)
        wanted = self.metadata or {}
        return isinstance(metadata, dict) and all(
            metadata.get(key) == value for key, value in wanted.items())


def rule_of(entry: Any) -> Rule:
    """``'match("acme::*")'``, a bare id or glob, or ``{"metadata": {...}}``."""
    if isinstance(entry, dict):
        return Rule(metadata=dict(entry.get("metadata") or {}))
    found = _MATCH.match(str(entry).strip())
    return Rule(pattern=found.group(1) if found else str(entry))


@dataclass(slots=True)
class Grants:
    """One RBAC connection's rights, and what its listener runs for it."""

    expose: tuple[Rule, ...] = ()
    allowed: tuple[Rule, ...] = ()
    forbidden: tuple[Rule, ...] = ()
    #: Trigger types it may bind; None: every type.
    allowed_trigger_types: frozenset[str] | None = None
    allow_trigger_type_registration: bool = False
    allow_function_registration: bool = True
    #: Put before every function id it registers (callers use the prefixed id).
    prefix: str = ""
    #: The auth function's ``context``, for the listener's hooks and middleware.
    context: dict[str, Any] = field(default_factory=dict)
    #: The ids it registered, by the prefixed id (calls to it carry its own names).
    own_names: dict[str, str] = field(default_factory=dict)
    #: Its listener's middleware (runs instead of each call it makes, and decides) and
    #: registration hooks ("function", "trigger", "trigger_type": function ids).
    middleware: str | None = None
    hooks: dict[str, str] = field(default_factory=dict)

    def refusal(self, function_id: str, metadata: Any, own: bool) -> str | None:
        """None if it may call ``function_id``; else the rule that says no."""
        if own or function_id in ALWAYS:
            return None
        if any(rule.matches(function_id, metadata) for rule in self.forbidden):
            return "rbac.forbidden_functions"
        if any(rule.matches(function_id, metadata) for rule in self.allowed + self.expose):
            return None
        return "rbac.expose_functions"

    def registered_as(self, function_id: str) -> str:
        """The id a function it registers as ``function_id`` gets."""
        return self.prefix + function_id if self.prefix else function_id

    def own_name(self, function_id: str) -> str:
        """The name the worker registered ``function_id`` under (without the prefix)."""
        return self.own_names.get(function_id, function_id)

    def daemon_id(self, name: str, functions: Collection[str]) -> str:
        """``name`` as the daemon knows it: a name the worker registered (one of
        ``functions``, its connection's) becomes its prefixed id."""
        prefixed = self.registered_as(name)
        return prefixed if prefixed in functions else name


def grants_of(result: Any, listener: ListenerSpec) -> Grants:
    """The grants of an ``AuthResult`` (upstream shape), under its listener's rules.

    Raises:
        AuthRefused: the answer is not an ``AuthResult``.
    """
    if not isinstance(result, dict):
        raise AuthRefused(f"the auth function answered {type(result).__name__}, not an "
                          f"AuthResult object")

    def strings(key: str) -> list[str]:
        value = result.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AuthRefused(f"AuthResult.{key} must be a list of strings")
        return value

    def flag(key: str, default: bool) -> bool:
        value = result.get(key, default)
        if not isinstance(value, bool):
            raise AuthRefused(f"AuthResult.{key} must be true or false")
        return value

    trigger_types = result.get("allowed_trigger_types")
    prefix = result.get("function_registration_prefix") or ""
    context = result.get("context") or {}
    if not isinstance(prefix, str):
        raise AuthRefused("AuthResult.function_registration_prefix must be a string")
    if not isinstance(context, dict):
        raise AuthRefused("AuthResult.context must be an object")
    hooks = {kind: function_id for kind, function_id in (
        ("function", listener.on_function_registration_function_id),
        ("trigger", listener.on_trigger_registration_function_id),
        ("trigger_type", listener.on_trigger_type_registration_function_id)) if function_id}
    return Grants(
        middleware=listener.middleware_function_id, hooks=hooks,
        expose=tuple(rule_of(entry) for entry in listener.expose_functions),
        allowed=tuple(rule_of(entry) for entry in strings("allowed_functions")),
        forbidden=tuple(rule_of(entry) for entry in strings("forbidden_functions")),
        allowed_trigger_types=None if trigger_types is None
        else frozenset(strings("allowed_trigger_types")),
        allow_trigger_type_registration=flag("allow_trigger_type_registration", False),
        allow_function_registration=flag("allow_function_registration", True),
        prefix=prefix, context=context)
