"""The iii worker SDK: serve and call functions through the iii daemon.

Mirrors the official Python ``iii-sdk`` API (``from iii import register_worker``)::

    from iii_sdk import register_worker, TriggerAction

    worker = register_worker()
    worker.register_function("math::add", lambda data: {"sum": data["a"] + data["b"]})
    worker.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 2}})

Names are loaded on first use, so ``import iii_sdk.protocol`` (the CLI's fast path)
does not pay for asyncio and the worker machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iii_sdk.actions import TriggerAction, TriggerActionEnqueue, TriggerActionVoid
    from iii_sdk.errors import (
        ConnectionFailed,
        FrameTooLarge,
        IIIError,
        InvocationError,
        ObserveRejection,
        ProtocolError,
        RegistrationRefused,
    )
    from iii_sdk.handles import FunctionRef, Trigger, TriggerTypeRef
    from iii_sdk.invocation_context import InvocationContext, current_invocation
    from iii_sdk.observing import ObserverHandle
    from iii_sdk.options import (
        HttpInvocationConfig,
        InitOptions,
        ReconnectionConfig,
        TriggerConfig,
    )
    from iii_sdk.worker import III, connect, register_worker

from iii_sdk.version import __version__ as __version__

_WHERE = {
    "TriggerAction": "iii_sdk.actions",
    "TriggerActionEnqueue": "iii_sdk.actions",
    "TriggerActionVoid": "iii_sdk.actions",
    "ConnectionFailed": "iii_sdk.errors",
    "FrameTooLarge": "iii_sdk.errors",
    "IIIError": "iii_sdk.errors",
    "InvocationError": "iii_sdk.errors",
    "ObserveRejection": "iii_sdk.errors",
    "ObserverHandle": "iii_sdk.observing",
    "InvocationContext": "iii_sdk.invocation_context",
    "current_invocation": "iii_sdk.invocation_context",
    "ProtocolError": "iii_sdk.errors",
    "RegistrationRefused": "iii_sdk.errors",
    "III": "iii_sdk.worker",
    "FunctionRef": "iii_sdk.handles",
    "InitOptions": "iii_sdk.options",
    "HttpInvocationConfig": "iii_sdk.options",
    "ReconnectionConfig": "iii_sdk.options",
    "Trigger": "iii_sdk.handles",
    "TriggerConfig": "iii_sdk.options",
    "TriggerTypeRef": "iii_sdk.handles",
    "connect": "iii_sdk.worker",
    "register_worker": "iii_sdk.worker",
}

__all__ = [
    "III",
    "ConnectionFailed",
    "FrameTooLarge",
    "FunctionRef",
    "HttpInvocationConfig",
    "IIIError",
    "InitOptions",
    "InvocationContext",
    "InvocationError",
    "ObserveRejection",
    "ObserverHandle",
    "ProtocolError",
    "ReconnectionConfig",
    "RegistrationRefused",
    "Trigger",
    "TriggerAction",
    "TriggerActionEnqueue",
    "TriggerActionVoid",
    "TriggerConfig",
    "TriggerTypeRef",
    "connect",
    "current_invocation",
    "register_worker",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'iii_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
