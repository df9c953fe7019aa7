"""Exceptions of the iii SDK.

Tree::

    IIIError
    ├── ProtocolError        a frame that does not fit the protocol (bad JSON, unknown type, ...)
    │   └── FrameTooLarge    a frame over the size limit
    ├── InvocationError      a call failed: carries the wire error's code, message, stacktrace
    ├── RegistrationRefused  the daemon refused a function, trigger or type registration
    ├── ObserveRejection     an observer turned ``error`` or ``disposed`` before ``active``
    ├── ConnectionFailed     the daemon could not be reached
    └── ConfigError          the config file cannot be used (iii_sdk.config)
"""

from __future__ import annotations


class IIIError(Exception):
    """Base of every exception this package raises on purpose."""


class ProtocolError(IIIError):
    """A frame that is not a valid message of the protocol."""


class FrameTooLarge(ProtocolError):
    """A frame larger than the configured limit."""


class ConnectionFailed(IIIError):
    """The daemon (or engine) could not be reached at an address."""


class InvocationError(IIIError):
    """A call answered with an error, or that timed out or was stopped.

    ``code`` is the wire error code (``function_not_found``, ``TIMEOUT``, a handler's own
    code, ...). Raise it from a handler to answer the caller with your own code and message.
    ``str(err)`` never includes the stacktrace.
    """

    def __init__(
        self,
        code: str,
        message: str,
        function_id: str | None = None,
        stacktrace: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.function_id = function_id
        self.stacktrace = stacktrace
        self.invocation_id = invocation_id


class RegistrationRefused(IIIError):
    """The daemon refused a registration (a trigger's config, a reserved or taken id).

    Raised by ``ready()`` of the handle that ``register_*`` returned."""

    def __init__(self, code: str, message: str, registration_id: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.registration_id = registration_id


class ObserveRejection(IIIError):
    """An observer the daemon refused (``INVALID_ARGS``, ``INVALID_FILTER``,
    ``FORBIDDEN``) or that was disposed before it became active.

    Raised by ``ready()`` of the handle that ``observe()`` returned."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
