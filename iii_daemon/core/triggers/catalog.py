"""The built-in trigger types: one line each. Adding a type is one module implementing
:class:`~iii_daemon.core.triggers.base.TriggerType` plus one line here.

Imports nothing: reserved ids and the CLI's help come from this table without loading
the types themselves (cron pulls in croniter).
"""

from __future__ import annotations

#: type id -> "module:class" of its implementation.
BUILTIN = {
    "cron": "iii_daemon.core.triggers.cron:CronType",
    "state": "iii_daemon.core.triggers.state:StateType",
    "subscribe": "iii_daemon.core.triggers.subscribe:SubscribeType",
    "queue": "iii_daemon.core.triggers.queue:QueueType",
    "http": "iii_daemon.core.triggers.http:HttpType",
    "stream": "iii_daemon.core.triggers.stream:StreamType",
    "stream:join": "iii_daemon.core.triggers.stream_presence:StreamJoinType",
    "stream:leave": "iii_daemon.core.triggers.stream_presence:StreamLeaveType",
}

#: Built-in types announced by the design and not built yet: no worker may take their
#: ids, and their triggers wait as ``pending`` until they land.
COMING: tuple[str, ...] = ()
