"""The iii worker SDK: serve and call functions through the iii daemon.

Mirrors the official Python ``iii-sdk`` API (``from iii import register_worker``)::

    from iii_sdk import register_worker, TriggerAction

    worker = register_worker()
    worker.register_function("math::add", lambda data: {"sum": data["a"] + data["b"]})
    worker.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 2}})
"""

from iii_sdk.actions import TriggerAction, TriggerActionEnqueue, TriggerActionVoid
from iii_sdk.errors import (
    ConnectionFailed,
    FrameTooLarge,
    IIIError,
    InvocationError,
    ProtocolError,
)
from iii_sdk.worker import (
    III,
    FunctionRef,
    InitOptions,
    ReconnectionConfig,
    register_worker,
)

__version__ = "0.1.0"

__all__ = [
    "III",
    "ConnectionFailed",
    "FrameTooLarge",
    "FunctionRef",
    "IIIError",
    "InitOptions",
    "InvocationError",
    "ProtocolError",
    "ReconnectionConfig",
    "TriggerAction",
    "TriggerActionEnqueue",
    "TriggerActionVoid",
    "register_worker",
]
