"""Defaults and limits shared by the SDK, the daemon and the CLI, written once.

Imports nothing, so the ``iii trigger`` fast path can use it for free.
"""

from __future__ import annotations

#: How long a caller waits for an answer unless told otherwise (SDK and CLI).
DEFAULT_TIMEOUT_MS = 30_000
#: The longest ``timeout_ms`` a call may ask for (about 24.8 days, as JavaScript's timers).
MAX_TIMEOUT_MS = 2**31 - 1
#: Largest frame either side accepts by default (protocol.md § Transports).
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Largest reply a client reads by default (a frame and its envelope); config
#: ``max_frame_bytes`` raises it.
DEFAULT_MAX_REPLY = DEFAULT_MAX_FRAME_BYTES + 1024
#: How long a daemon may take to greet a new connection (``workerregistered``): one that
#: has not by then is no daemon that works (the CLI exits 3), whatever the call's timeout.
GREETING_TIMEOUT_S = 5.0
