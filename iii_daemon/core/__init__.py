"""The pure core: messages in, effects out. Router and registry, invocations, queues,
observers, watchers, events, stats, trigger plug-ins. Imports no I/O module and nothing
from :mod:`iii_daemon.drivers` (a test says so)."""
