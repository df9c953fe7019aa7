"""Exceptions of the iii SDK.

Tree::

    IIIError
    ├── ProtocolError        a frame that does not fit the protocol (bad JSON, unknown type, ...)
    │   └── FrameTooLarge    a frame over the size limit
    ├── InvocationError      a call failed: carries the wire error's code, message, stacktrace
    ├── RegistrationRefused  the daemon refused a function, trigger or type registration
    ├── ObserveRejection     an observer turned ``error`` or ``disposed`` before ``active``
    ├── ConnectionFailed     the daemon could not be reached
    │   └── Unreachable      nothing answers there (a client's connect)
    │       └── Broken       something answers, but not like a daemon
    │           └── Closed   it closed the connection with no answer
    ├── Refused              the daemon refused a request before answering it
    ├── Lost                 it took the call and went away before answering
    ├── Timeout              no answer within the exchange's deadline
    ├── WatchRefused         the daemon refused a watch (a bad filter)
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


class Unreachable(ConnectionFailed):
    """No daemon answers at the address; the message says why."""


class Broken(Unreachable):
    """Something answers but does not behave like a daemon (malformed or oversized
    replies, no greeting, a closed connection); the message says what happened."""


class Closed(Broken):
    """The connection closed with no answer to what we asked."""


class Refused(IIIError):
    """The daemon refused what we sent before answering it (a frame over its limit)."""


class Lost(IIIError):
    """The daemon greeted us, took the call, and closed before answering it (it died or
    stopped): the call was lost in transit."""


class Timeout(IIIError):
    """No answer within the exchange's deadline."""


class WatchRefused(IIIError):
    """The daemon refused the watch (a bad filter); the message says why."""


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
