"""Exceptions of the daemon, in one tree.

Tree::

    DaemonError
    ├── StartupError        the daemon cannot start; the message says why, in one line
    ├── ListenerOff         a TCP listener cannot run (the daemon serves its socket anyway)
    ├── StoreError          the store cannot be opened or written (disk full, permissions)
    ├── CallError           a daemon function answers its caller with ``code`` and ``message``
    ├── TriggerError        a trigger registration is refused (an id someone else owns, ...)
    │   └── TriggerConfigError  the registration itself is malformed (a bad request)
    └── ScheduleEnded       a cron expression has no time after the one asked about

The SDK's own tree (``iii_sdk.errors.IIIError``) covers what clients raise.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base of every exception the daemon raises on purpose."""


class StartupError(DaemonError):
    """The daemon cannot start; the message says why, in one line."""


class ListenerOff(DaemonError):
    """The listener cannot run; the message says why (shown by ``iii daemon status``)."""


class StoreError(DaemonError):
    """The store cannot be opened or written (disk full, permissions, corruption)."""


class CallError(DaemonError):
    """Raised by a daemon function to answer the caller with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TriggerError(DaemonError):
    """A registration the daemon refuses; the message says why."""


class TriggerConfigError(TriggerError):
    """The registration itself is malformed (ids, config): a bad request, not a conflict."""


class ScheduleEnded(DaemonError):
    """The expression has no time after the one asked about (a past or last year, or a
    date that never exists such as 30 February)."""
