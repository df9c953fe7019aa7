"""A worker for the trust tests: ``stuck::hang`` never returns (until the process ends),
``stuck::ok`` answers at once, ``stuck::big`` returns ``size`` bytes.

    python tests/workers/stuck.py [MAX_CONCURRENCY [MAX_FRAME_BYTES]]

Prints ``ready`` once its functions are registered, then serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from iii_sdk import InitOptions, register_worker
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES
from iii_sdk.options import DEFAULT_MAX_CONCURRENCY

#: Set by nothing: a handler waiting on it hangs for good.
NEVER = threading.Event()


def main() -> None:
    concurrency = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MAX_CONCURRENCY
    frame = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_MAX_FRAME_BYTES
    worker = register_worker(options=InitOptions(max_concurrency=concurrency,
                                                 max_frame_bytes=frame,
                                                 worker_name="stuck"))

    def hang(data: Any) -> Any:
        NEVER.wait()

    worker.register_function("stuck::hang", hang)
    worker.register_function("stuck::ok", lambda data: {"ok": True, "data": data})
    worker.register_function("stuck::big", lambda data: "x" * int(data["size"]))
    worker.ping()
    worker.run_forever(ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
