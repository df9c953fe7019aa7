"""The daemon's process settles its garbage collector once it is ready (a process of its
own: settling freezes every live object, which an embedding process must not get)."""

from __future__ import annotations

import json
import subprocess
import sys

from iii_daemon.lifecycle import collector

PROBE = """
import gc, json
from iii_daemon.lifecycle import collector
kept = [[n] for n in range(1000)]  # live containers: frozen by settle
before = gc.get_threshold()
collector.settle()
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))
"""


def test_settle_freezes_what_lives_and_spaces_young_collections() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True)
    before, after, frozen = json.loads(out.stdout)
    assert after == [collector.YOUNG_THRESHOLD, *before[1:]]
    assert before[0] < collector.YOUNG_THRESHOLD
    assert frozen >= 1000

