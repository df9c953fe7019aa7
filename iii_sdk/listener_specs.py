"""Extra worker listeners as the config file holds them (``[[websocket.listeners]]``, keys
as the upstream worker manager names them): a port where an auth function decides, per
connection, what the worker may call and register (RBAC). One rule for their shape.
And the stream socket's settings (``[streams]``), checked as every plain key is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iii_sdk.names import id_problem

KEYS = frozenset({"host", "port", "middleware_function_id", "rbac"})
RBAC_KEYS = frozenset({"auth_function_id", "on_function_registration_function_id",
                       "on_trigger_registration_function_id",
                       "on_trigger_type_registration_function_id", "expose_functions"})


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    host: str
    port: int
    auth_function_id: str
    #: ``match("glob")`` strings, exact ids, or ``{"metadata": {...}}`` tables.
    expose_functions: tuple[Any, ...] = ()
    middleware_function_id: str | None = None
    on_function_registration_function_id: str | None = None
    on_trigger_registration_function_id: str | None = None
    on_trigger_type_registration_function_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamSocketSpec:
    """``[streams]``: where the stream socket listens and who may join."""

    port: int
    host: str = "127.0.0.1"
    auth_function_id: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_subscriptions: int = 256
    max_clients: int = 10_000
    client_buffer_bytes: int = 4 * 1024 * 1024


def listeners_problem(entries: Any) -> str | None:
    """What is wrong with the ``[[websocket.listeners]]`` entries, or None."""
    if not isinstance(entries, list):
        return "[[websocket.listeners]] must be a list of tables"
    ports: set[int] = set()
    for n, entry in enumerate(entries):
        where = f"[[websocket.listeners]] #{n + 1}"
        problem = _entry_problem(entry, where)
        if problem:
            return problem
        if entry["port"] in ports and entry["port"] != 0:
            return f"{where}: port {entry['port']} is used twice"
        ports.add(entry["port"])
    return None


def _entry_problem(entry: Any, where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} must be a table"
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        return f"{where} has unknown key '{unknown[0]}' (known: {', '.join(sorted(KEYS))})"
    host = entry.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host.strip():
        return f"{where}: host must be a non-empty string"
    port = entry.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        return f"{where} needs a port from 0 to 65535"
    middleware = entry.get("middleware_function_id")
    if middleware is not None and (not isinstance(middleware, str)
                                   or id_problem("middleware_function_id", middleware)):
        return f"{where}: middleware_function_id must be a function id"
    rbac = entry.get("rbac")
    if not isinstance(rbac, dict):
        return f"{where} needs an rbac table with auth_function_id (who may connect, and " \
               f"to do what)"
    unknown = sorted(set(rbac) - RBAC_KEYS)
    if unknown:
        return f"{where}.rbac has unknown key '{unknown[0]}' " \
               f"(known: {', '.join(sorted(RBAC_KEYS))})"
    for key in sorted(RBAC_KEYS - {"expose_functions"}):
        value = rbac.get(key)
        if value is None and key != "auth_function_id":
            continue
        if not isinstance(value, str) or id_problem(key, value):
            return f"{where}.rbac: {key} must be a function id"
    return rules_problem(rbac.get("expose_functions", []), f"{where}.rbac.expose_functions")


def rules_problem(rules: Any, where: str) -> str | None:
    if not isinstance(rules, list):
        return f"{where} must be a list"
    for rule in rules:
        if isinstance(rule, str):
            continue
        if isinstance(rule, dict) and set(rule) == {"metadata"} \
                and isinstance(rule["metadata"], dict):
            continue
        return f"{where}: {rule!r} is neither 'match(\"glob\")', a function id, nor " \
               f"{{ metadata = {{ ... }} }}"
    return None


def spec_of(entry: dict[str, Any]) -> ListenerSpec:
    rbac = entry["rbac"]
    return ListenerSpec(
        host=entry.get("host", "127.0.0.1"), port=entry["port"],
        auth_function_id=rbac["auth_function_id"],
        expose_functions=tuple(rbac.get("expose_functions", [])),
        middleware_function_id=entry.get("middleware_function_id"),
        on_function_registration_function_id=rbac.get("on_function_registration_function_id"),
        on_trigger_registration_function_id=rbac.get("on_trigger_registration_function_id"),
        on_trigger_type_registration_function_id=rbac.get(
            "on_trigger_type_registration_function_id"))
