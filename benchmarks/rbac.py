"""What an RBAC listener's checks cost a call (same run, same daemon, same client code).

    python benchmarks/rbac.py [--calls 5000]

One daemon with its main WebSocket listener and an RBAC listener (the auth function lets
everyone call ``bench::*``); a worker on the Unix socket serves ``bench::echo``. A raw
WebSocket client makes ``--calls`` calls, 64 in flight, through each listener; the figure
is calls/s through the RBAC listener next to the main one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from daemons import save, start_daemon, stop  # type: ignore[import-not-found]  # noqa: E402
from http_trigger import free_port  # type: ignore[import-not-found]  # noqa: E402

WINDOW = 64


def _rate(port: int, calls: int, headers: dict[str, str] | None = None) -> float:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}", additional_headers=headers,
                 max_size=None) as ws:
        json.loads(ws.recv(10))  # workerregistered
        started = time.perf_counter()
        sent = answered = 0
        while answered < calls:
            while sent < calls and sent - answered < WINDOW:
                ws.send(json.dumps({"type": "invokefunction", "function_id": "bench::echo",
                                    "invocation_id": f"c{sent}", "data": {"n": sent}}))
                sent += 1
            answer = json.loads(ws.recv(10))
            if answer.get("type") == "invocationresult":
                assert "error" not in answer, answer
                answered += 1
        return calls / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "rbac.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from iii_sdk import register_worker

    with tempfile.TemporaryDirectory(prefix="iii-rbac-", dir="/tmp") as name:
        tmp = Path(name)
        ws_port, rbac_port = free_port(), free_port()
        daemon, sock = start_daemon(tmp, "rbac", "--ws-port", str(ws_port), config=(
            f"[[websocket.listeners]]\nport = {rbac_port}\n[websocket.listeners.rbac]\n"
            f'auth_function_id = "bench::auth"\nexpose_functions = [\'match("bench::*")\']\n'))
        worker = register_worker(str(sock))
        try:
            worker.register_function("bench::auth", lambda data: {})
            worker.register_function("bench::echo", lambda data: data)
            worker.ping()
            main_rates, rbac_rates = [], []
            for _ in range(args.rounds):  # interleaved: noise hits both alike
                main_rates.append(_rate(ws_port, args.calls))
                rbac_rates.append(_rate(rbac_port, args.calls))
        finally:
            worker.shutdown()
            stop(daemon)
    best_main, best_rbac = max(main_rates), max(rbac_rates)
    figures = {"main_listener_calls_per_s": round(best_main),
               "rbac_listener_calls_per_s": round(best_rbac),
               "ratio": round(best_rbac / best_main, 3)}
    print(f"main WebSocket listener   {figures['main_listener_calls_per_s']:>8} calls/s")
    print(f"RBAC listener (checked)   {figures['rbac_listener_calls_per_s']:>8} calls/s")
    print(f"ratio                     {figures['ratio']:>8}x")
    save(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
