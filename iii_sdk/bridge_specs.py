"""A bridge to another iii engine as the config file holds it (``[bridge]``; keys as the
upstream ``iii-bridge`` worker names them): one rule for its shape, for the file and
the daemon.

What this checks is the table alone (types, names, the URL's scheme). Whether the URL
may go without a token (it may only on this machine) and whether the token's variable
is set are the daemon's checks when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from iii_sdk.client.addresses import is_loopback
from iii_sdk.names import id_problem

KEYS = frozenset({"url", "service_id", "token_env", "expose", "forward"})
#: Where the bridged engine's state and streams may live instead of this daemon's.
BACKENDS = ("local", "redis", "bridge")


@dataclass(frozen=True, slots=True)
class Link:
    """One function across the bridge: ``local_function`` here, ``remote_function`` on
    the other engine (and, forwarded, how long a call may take there)."""

    local_function: str
    remote_function: str
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    url: str
    service_id: str
    token_env: str | None = None
    #: Local functions the other engine may call (only these).
    expose: tuple[Link, ...] = ()
    #: Local names for the other engine's functions.
    forward: tuple[Link, ...] = ()


def table_problem(table: Any) -> str | None:
    """What is wrong with a ``[bridge]`` table, or None."""
    if not isinstance(table, dict):
        return "[bridge] must be a table"
    unknown = sorted(set(table) - KEYS)
    if unknown:
        return f"[bridge] has unknown key '{unknown[0]}' (known: {', '.join(sorted(KEYS))})"
    for key in ("url", "service_id", "token_env"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            return f"[bridge] {key} must be a non-empty string"
    url = table.get("url")
    if url is None:
        return "[bridge] needs a url (the other engine's worker listener, ws:// or wss://)"
    if urlsplit(url).scheme not in ("ws", "wss") or not urlsplit(url).hostname:
        return f"[bridge] url must be ws://HOST:PORT or wss://HOST:PORT, got {url!r}"
    service_id = table.get("service_id")
    if service_id is not None:
        problem = id_problem("[bridge] service_id", service_id)
        if problem:
            return problem
    for kind in ("expose", "forward"):
        problem = _links_problem(kind, table.get(kind, []))
        if problem:
            return problem
    return None


def _links_problem(kind: str, links: Any) -> str | None:
    if not isinstance(links, list):
        return f"[bridge] {kind} must be a list of tables"
    allowed = {"local_function", "remote_function"} | (
        {"timeout_ms"} if kind == "forward" else set())
    seen: set[str] = set()
    for n, link in enumerate(links):
        where = f"[bridge] {kind}[{n}]"
        if not isinstance(link, dict):
            return f"{where} must be a table"
        unknown = sorted(set(link) - allowed)
        if unknown:
            return f"{where} has unknown key '{unknown[0]}' (known: {', '.join(sorted(allowed))})"
        for key in ("local_function", "remote_function"):
            value = link.get(key)
            if not isinstance(value, str):
                return f"{where} needs '{key}' (a function id)"
            problem = id_problem(f"{where} {key}", value)
            if problem:
                return problem
        timeout = link.get("timeout_ms")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                    or not 1 <= timeout <= 2**31 - 1):
            return f"{where} timeout_ms must be a whole number of milliseconds from 1"
        # A name is served once: two exposures of one remote name, or two forwards
        # under one local name, would be a conflict at the other end or here.
        name = link["remote_function"] if kind == "expose" else link["local_function"]
        if name in seen:
            return f"{where}: '{name}' appears twice"
        seen.add(name)
    return None


def spec_of(table: dict[str, Any], default_service_id: str) -> BridgeSpec:
    """The spec of a valid ``[bridge]`` table."""

    def links(kind: str) -> tuple[Link, ...]:
        return tuple(Link(link["local_function"], link["remote_function"],
                          link.get("timeout_ms")) for link in table.get(kind, []))

    return BridgeSpec(url=table["url"], service_id=table.get("service_id") or default_service_id,
                      token_env=table.get("token_env"), expose=links("expose"),
                      forward=links("forward"))


def on_this_machine(url: str) -> bool:
    """The URL's host is a loopback address or ``localhost``."""
    return is_loopback(urlsplit(url).hostname or "")
