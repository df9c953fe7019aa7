"""The options a worker or client is created with, and what a trigger-type provider is
handed for each binding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES, DEFAULT_TIMEOUT_MS

DEFAULT_INVOCATION_TIMEOUT_MS = DEFAULT_TIMEOUT_MS
DEFAULT_MAX_CONCURRENCY = 64


@dataclass(slots=True)
class ReconnectionConfig:
    """Backoff between connection attempts: 1 s doubling, capped at 30 s, with jitter."""

    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.1
    #: -1: retry forever.
    max_retries: int = -1


@dataclass(slots=True)
class InitOptions:
    """Options of :func:`register_worker`."""

    #: Shown in ``iii list workers``; ``III_WORKER_NAME`` overrides it; default ``host:pid``.
    worker_name: str | None = None
    #: Local timeout of :meth:`III.trigger` calls that do not set ``timeout_ms``.
    invocation_timeout_ms: int = DEFAULT_INVOCATION_TIMEOUT_MS
    reconnection_config: ReconnectionConfig = field(default_factory=ReconnectionConfig)
    #: How long :func:`register_worker` waits for the first connection before it
    #: returns anyway (it keeps retrying in the background).
    connect_timeout_s: float = 30.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Calls of sync handlers this worker runs at once (each holds a thread); one more
    #: is refused at once with ``worker_busy``, so stuck handlers never stall the rest.
    #: Async handlers hold no thread and are not counted.
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    #: Extra WebSocket handshake headers; ``Authorization: Bearer $III_TOKEN`` is added
    #: unless given here (as the official SDK does).
    headers: dict[str, str] | None = None


@dataclass(slots=True)
class TriggerConfig:
    """What a trigger-type provider is told about a binding to start or stop."""

    id: str
    function_id: str
    config: Any
    metadata: Any = None


@dataclass(slots=True)
class HttpInvocationConfig:
    """A function the daemon calls over HTTP itself (Lambda, Cloudflare Workers, any
    webhook), as the official SDK's ``iii_helpers.http.HttpInvocationConfig``:
    ``register_function(id, HttpInvocationConfig(url=...))``.

    ``auth``: ``{"type": "bearer", "token_key": ENV}``, ``{"type": "api_key", "header":
    NAME, "value_key": ENV}`` or ``{"type": "hmac", "secret_key": ENV}``; each ``*_key``
    names an environment variable of the daemon that its config allows
    (``[http_functions] allowed_env``)."""

    url: str
    method: str = "POST"
    timeout_ms: int | None = None
    headers: dict[str, str] | None = None
    auth: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"url": self.url, "method": self.method}
        for key in ("timeout_ms", "headers", "auth"):
            value = getattr(self, key)
            if value is not None:
                wire[key] = value
        return wire
