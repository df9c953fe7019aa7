"""The cyclic garbage collector, set for a daemon whose heap is mostly long-lived.

What start-up built (config, restored rows and bindings, imported modules) stays for the
daemon's life, so it is frozen: no full collection walks it again. Young collections
come after 10 000 new container objects instead of 700: a burst of work (10 000 cron
firings in one second) then mostly lives and dies between two collections, where with
700 its calls in flight were promoted to the old generation, making full collections
(pauses of 15 to 40 ms with 10 000 triggers bound) frequent. Process-wide, like any
collector setting: ``python -m iii_daemon`` settles once it is ready; a process that
embeds the daemon keeps its own settings.
"""

from __future__ import annotations

import gc

#: New container objects between two young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect once, freeze what is left, and space the young collections out."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
