"""A guided tour: a daemon, an example worker, and calls of every kind.

Starts the daemon if none answers on the socket (and stops it again afterwards),
attaches the example worker (``iii_cli.examples.math_worker``, shipped in the package) as a
separate process, calls its functions
synchronously, fire-and-forget and through a durable queue, fires triggers, and prints
what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from iii_cli import daemon_control as dc
from iii_cli.style import printable
from iii_sdk import InvocationError, TriggerAction, connect

#: The example worker, run as a module: it ships inside the package, not the checkout.
WORKER_MODULE = "iii_cli.examples.math_worker"
#: The state scope the demo writes to (and cleans up).
DEMO_SCOPE = "iii-demo"
#: The queue the demo enqueues through.
DEMO_QUEUE = "iii-demo"


def _say(text: str) -> None:
    # Worker names, function ids and errors come from the daemon: escape what could
    # rewrite the terminal, as every other command does.
    print(printable(text), flush=True)


def run(socket_path: Path) -> int:
    started = False
    worker_proc: subprocess.Popen[str] | None = None
    env = dict(os.environ, III_SOCKET=str(socket_path))
    try:
        if dc.answers(socket_path):
            _say(f"daemon: already running on {socket_path}")
        else:
            try:
                pid, started = dc.start_daemon(socket_path)
            except dc.DaemonError as exc:
                _say(f"iii demo: cannot start the daemon: {exc}")
                return 1
            _say(f"daemon: started on {socket_path} (pid {pid})")

        client = connect(str(socket_path))  # a caller, not a worker: not listed as one
        try:
            if _served(client, "math::add"):
                # Its functions are taken: a second copy would only be refused.
                _say("worker: the math worker is already attached; the demo uses it")
            else:
                worker_proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE],
                                               env=env, stdout=subprocess.PIPE, text=True)
                assert worker_proc.stdout is not None
                if "ready" not in worker_proc.stdout.readline():
                    _say("iii demo: the example worker did not start")
                    return 1
                _say(f"worker: {WORKER_MODULE} attached (pid {worker_proc.pid})")
            _tour(client)
            if worker_proc is not None:
                _say(f"next: let the daemon run it for you: iii worker add math -- "
                     f"{Path(sys.executable).name} -m {WORKER_MODULE}")
        finally:
            client.shutdown()
        return 0
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            worker_proc.wait(10)
        if started:
            dc.stop_daemon(socket_path)
            _say("daemon: stopped (the demo started it)")


def _served(client: Any, function_id: str) -> bool:
    functions = client.trigger({"function_id": "engine::functions::list"})["functions"]
    return any(f["function_id"] == function_id for f in functions)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def _events(client: Any, trigger_ids: set[str], kind: str) -> list[dict[str, Any]]:
    events = client.trigger({"function_id": "engine::events::list",
                             "payload": {"event": kind, "limit": 1000}})["events"]
    return [e for e in events if e.get("trigger_id") in trigger_ids]


def _row(kind: str, call: str, outcome: str) -> None:
    _say(f"{kind:9} {call:35} -> {outcome}")


def _triggers(client: Any) -> None:
    """Worker-owned triggers: they vanish with the demo's connection."""
    tick = client.register_trigger({"type": "cron", "function_id": "math::echo",
                                    "config": {"expression": "* * * * * *"}})
    on_order = client.register_trigger({"type": "state", "function_id": "math::echo",
                                        "config": {"scope": DEMO_SCOPE}})
    news = client.register_trigger({"type": "subscribe", "function_id": "math::echo",
                                    "config": {"topic": "news",
                                               "condition_function_id": "math::is_positive"}})
    client.ping()
    ids = {tick.id, on_order.id, news.id}
    client.trigger({"function_id": "state::set",
                    "payload": {"scope": DEMO_SCOPE, "key": "o1", "value": {"total": 3}}})
    client.trigger({"function_id": "publish", "payload": {"topic": "news", "data": {"n": 1}}})
    client.trigger({"function_id": "publish", "payload": {"topic": "news", "data": {"n": 0}}})
    deadline = time.monotonic() + 5  # leaves as soon as it has seen enough
    while time.monotonic() < deadline:  # until cron ticked twice and the rest finished
        finished = _events(client, ids, "invocation.finished")
        ticks = sum(1 for e in finished if e["trigger_id"] == tick.id)
        if ticks >= 2 and len(finished) - ticks >= 2:
            break
        time.sleep(0.05)
    finished = _events(client, ids, "invocation.finished")
    skipped = _events(client, {news.id}, "trigger.skipped")
    _row("cron", "* * * * * * -> math::echo",
        f"ran {sum(1 for e in finished if e['trigger_id'] == tick.id)} times")
    _row("state", f"state::set {DEMO_SCOPE}/o1 -> math::echo",
        f"ran {sum(1 for e in finished if e['trigger_id'] == on_order.id)} time")
    _row("subscribe", "publish news {n: 1}, then {n: 0}",
        f"ran {sum(1 for e in finished if e['trigger_id'] == news.id)}, skipped "
        f"{len(skipped)} (condition math::is_positive)")
    for trigger in (tick, on_order, news):
        trigger.unregister()
    # The demo leaves nothing behind in the user's state.
    client.trigger({"function_id": "state::delete", "payload": {"scope": DEMO_SCOPE,
                                                                "key": "o1"}})


def _delivered(client: Any, function_id: str) -> int:
    rows = client.trigger({"function_id": "engine::queues::list"})["queues"]
    return sum(r["delivered"] for r in rows
               if r["queue"] == DEMO_QUEUE and r["function_id"] == function_id)


def _queue(client: Any) -> None:
    """Through a durable queue: a receipt once the message is on disk, then delivery."""
    before = _delivered(client, "math::add")
    t0 = time.perf_counter()
    receipt = client.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 2},
                              "action": TriggerAction.Enqueue(queue=DEMO_QUEUE)})
    deadline = time.monotonic() + 5
    while _delivered(client, "math::add") == before and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    outcome = f"delivered in {elapsed_ms:.1f} ms" if _delivered(client, "math::add") > before \
        else "not delivered within 5 s (see iii queue list)"
    _row("queue", f"math::add {{a: 1, b: 2}} via {DEMO_QUEUE}",
         f"receipt {receipt['messageReceiptId'][:13]}..., {outcome}")


def _tour(client: Any) -> None:
    functions = client.trigger({"function_id": "engine::functions::list"})["functions"]
    ours = [f["function_id"] for f in functions if f["worker_id"] is not None]
    _say(f"functions served by workers: {', '.join(sorted(ours))}")

    t0 = time.perf_counter()
    answer = client.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}})
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    _row("sync", "math::add {a: 2, b: 3}", f"{_json(answer)}  ({elapsed_ms:.2f} ms)")

    t0 = time.perf_counter()
    n = 1000
    for i in range(n):
        client.trigger({"function_id": "math::add", "payload": {"a": i, "b": 1}})
    _row("sync", f"math::add x{n}", f"{(time.perf_counter() - t0) / n * 1e6:.0f} µs per call")

    client.trigger({"function_id": "math::echo", "payload": {"msg": "hi"},
                    "action": TriggerAction.Void()})
    _row("void", "math::echo {msg: 'hi'}", "accepted (fire and forget; the worker runs it)")

    failing = [
        ("math::divide {a: 1, b: 0}", {"function_id": "math::divide",
                                        "payload": {"a": 1, "b": 0}}),
        ("math::sleep {seconds: 2}, 100 ms", {"function_id": "math::sleep",
                                               "payload": {"seconds": 2}, "timeout_ms": 100}),
        ("math::nope", {"function_id": "math::nope", "payload": {}}),
    ]
    for call, request in failing:
        try:
            client.trigger(request)
        except InvocationError as exc:
            _row("error", call, f"{exc.code}: {exc.message}")

    _queue(client)
    _triggers(client)

    workers = client.trigger({"function_id": "engine::workers::list"})["workers"]
    names = ", ".join(f"{w['name']} ({len(w['functions'])} functions)" for w in workers)
    _say(f"workers: {names}")
