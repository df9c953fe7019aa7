"""Durable queues on Redis Streams, with several real daemons and a real ``redis-server``:
delivered once among the daemons that serve a function, retries and dead letters
operated from any daemon, a daemon killed mid-delivery, topics, fifo order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import III, TriggerAction, connect, register_worker
from tests.helpers import (
    DaemonProcess,
    RedisServer,
    ThreadDaemon,
    ask,
    dead_letters,
    run_iii,
    wait_for,
)


class Worker:
    """A worker on one daemon whose functions record what they get (and may fail)."""

    def __init__(self, daemon: Any) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, Any]] = []
        self.client: III = register_worker(str(daemon.socket_path))

    def serve(self, function_id: str, fail: bool = False, hold: threading.Event | None = None
              ) -> None:
        def handler(data: Any) -> None:
            with self.lock:
                self.seen.append((function_id, data))
            if hold is not None:
                hold.wait(30)
            if fail:
                raise RuntimeError(f"cannot handle {data}")

        self.client.register_function(function_id, handler)
        self.client.ping()

    def of(self, function_id: str) -> list[Any]:
        with self.lock:
            return [d for f, d in self.seen if f == function_id]


def daemons(tmp: Path, server: RedisServer, names: str, config: str = "") -> list[ThreadDaemon]:
    started = []
    for name in names:
        (tmp / name).mkdir(parents=True, exist_ok=True)
        (tmp / name / "config.toml").write_text(config)
        started.append(ThreadDaemon(tmp / name, "--redis-url", server.url).start())
    return started


def queues(daemon: Any) -> list[dict[str, Any]]:
    """``iii queue list``'s rows, from the daemon's function."""
    return list(ask(daemon, "engine::queues::list")["queues"])


def test_a_message_enqueued_anywhere_is_delivered_once_among_the_daemons_serving_it(
        short_tmp: Path, redis_server: RedisServer) -> None:
    a, b, c = daemons(short_tmp, redis_server, "abc")
    workers = [Worker(b), Worker(c)]
    try:
        for worker in workers:
            worker.serve("job")
        with connect(str(a.socket_path)) as client:
            def enqueue(n: int) -> Any:
                return client.trigger({"function_id": "job", "payload": {"n": n},
                                       "action": TriggerAction.Enqueue(queue="jobs")})

            # a learns within a tick that b and c serve job.
            wait_for(lambda: enqueue(-1)["function_served"], message="job served")
            receipts = [enqueue(n) for n in range(60)]
        assert all(r["function_served"] for r in receipts)  # served on b and c
        assert len({r["messageReceiptId"] for r in receipts}) == 60

        def delivered() -> list[int]:
            return sorted(d["n"] for w in workers for d in w.of("job") if d["n"] >= 0)

        wait_for(lambda: len(delivered()) >= 60, message="every message")
        time.sleep(0.3)
        assert delivered() == list(range(60))  # each once, in the whole cluster
        rows = {d: queues(d) for d in (a, b, c)}
        wait_for(lambda: queues(a)[0]["delivered"] >= 61)
        [row] = queues(a)
        assert row["ready"] == row["in_flight"] == 0
        assert rows[a] == rows[b] == rows[c]  # every daemon tells the same
    finally:
        for worker in workers:
            worker.client.shutdown()
        for daemon in (a, b, c):
            daemon.stop()


def test_retries_dead_letters_redrive_and_purge_from_any_daemon(
        short_tmp: Path, redis_server: RedisServer) -> None:
    a, b = daemons(short_tmp, redis_server, "ab",
                   "[queues.jobs]\nmax_retries = 1\nbackoff_ms = 50\n")
    worker = Worker(b)
    try:
        worker.serve("flaky", fail=True)
        sent = run_iii(a.tmp, "trigger", "flaky", "--enqueue", "jobs", "n=2")
        assert sent.returncode == 0 and sent.stderr == "", sent.stderr
        # max_retries 1: two attempts on b, then a dead letter, read on a.
        wait_for(lambda: len(dead_letters(a, "jobs")) == 1, message="dead")
        [dead] = dead_letters(a, "jobs")
        assert dead["attempts"] == 2 and dead["payload"] == {"n": 2}
        assert "cannot handle" in dead["last_error"]["message"]
        assert dead["function_id"] == "flaky" and len(worker.of("flaky")) == 2
        [row] = queues(b)
        assert row["dead_letters"] == 1 and row["delivered"] == 0

        missing = run_iii(b.tmp, "queue", "redrive", "jobs", "--id", "nope")
        assert missing.returncode == 4 and "no dead letter" in missing.stderr
        redriven = run_iii(b.tmp, "queue", "redrive", "jobs")  # from the other daemon
        assert redriven.returncode == 0 and "1 message sent again" in redriven.stderr
        wait_for(lambda: len(worker.of("flaky")) == 4, message="the redriven attempts")
        wait_for(lambda: len(dead_letters(a, "jobs")) == 1, message="dead again")

        waiting = run_iii(a.tmp, "trigger", "nobody::yet", "--enqueue", "jobs")
        assert "nothing serves nobody::yet yet" in waiting.stderr
        wait_for(lambda: (ask(b, "engine::status")["queued_messages"],
                          ask(b, "engine::status")["dead_letters"]) == (2, 1),
                 message="the counts in the status")
        purged = run_iii(b.tmp, "queue", "purge", "jobs", "--yes")
        assert purged.returncode == 0 and "2 messages dropped" in purged.stderr
        assert dead_letters(a, "jobs") == []
        assert all(r["ready"] + r["waiting_for_function"] + r["dead_letters"] == 0
                   for r in queues(a))
    finally:
        worker.client.shutdown()
        a.stop()
        b.stop()


@pytest.mark.daemon_process
def test_a_daemon_killed_mid_delivery_leaves_its_message_to_another(
        short_tmp: Path, redis_server: RedisServer) -> None:
    config = "[queues.jobs]\nvisibility_timeout_ms = 1000\n"
    for name in "ab":
        (short_tmp / name).mkdir()
        (short_tmp / name / "config.toml").write_text(config)
    a = DaemonProcess(short_tmp / "a", "--redis-url", redis_server.url).start()
    b = DaemonProcess(short_tmp / "b", "--redis-url", redis_server.url).start()
    stuck, on_b = Worker(a), Worker(b)
    hold = threading.Event()
    try:
        stuck.serve("job", hold=hold)  # on a: takes the message and never answers
        sent = run_iii(b.tmp, "trigger", "job", "--enqueue", "jobs", "n=1")
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: stuck.of("job") == [{"n": 1}], message="a to take it")
        on_b.serve("job")
        a.kill()  # kill -9, mid-delivery
        killed_at = time.monotonic()
        wait_for(lambda: on_b.of("job") == [{"n": 1}], timeout=15,
                 message="b to deliver it after the visibility timeout")
        took = time.monotonic() - killed_at
        assert took >= 0.9, took  # not before the visibility timeout
        print(f"redelivered {took:.2f} s after the kill -9 (visibility timeout 1 s)")
        wait_for(lambda: queues(b)[0]["delivered"] == 1)
    finally:
        hold.set()
        stuck.client.shutdown()
        on_b.client.shutdown()
        b.stop()
    # The test's Redis keeps nothing on disk: the daemon says so, once.
    assert b.log().count("runs without AOF") == 1


def test_topics_across_daemons_wait_for_a_consumer_and_give_each_function_a_copy(
        short_tmp: Path, redis_server: RedisServer) -> None:
    a, b = daemons(short_tmp, redis_server, "ab")
    wa, wb = Worker(a), Worker(b)
    try:
        with connect(str(a.socket_path)) as client:
            # Nobody consumes the topic yet: the message waits, durably, in Redis.
            assert client.trigger({"function_id": "enqueue", "payload": {
                "topic": "order.placed", "data": {"id": 1}}}) is None
            [row] = queues(b)
            assert row["function_id"] is None and row["waiting_for_function"] == 1
            wb.serve("audit")
            wb.client.register_trigger({"type": "queue", "id": "audit-q", "function_id": "audit",
                                        "config": {"topic": "order.placed"}}).ready(5)
            wait_for(lambda: wb.of("audit") == [{"id": 1}], message="the waiting message")
            # Two functions on two daemons, and a replica of audit's binding on a.
            wa.serve("mail")
            wa.serve("audit")
            for function_id, trigger_id in (("mail", "mail-q"), ("audit", "audit-q")):
                wa.client.register_trigger({"type": "queue", "id": trigger_id,
                                            "function_id": function_id,
                                            "config": {"topic": "order.placed"}}).ready(5)
            client.trigger({"function_id": "enqueue", "payload": {
                "topic": "order.placed", "data": {"id": 2}, "delay_ms": 300}})
            sent_at = time.monotonic()
            wait_for(lambda: wa.of("mail") == [{"id": 2}], message="mail's copy")
            assert time.monotonic() - sent_at >= 0.29  # the delay held
            wait_for(lambda: {"id": 2} in wa.of("audit") + wb.of("audit"),
                     message="audit's copy")
            time.sleep(0.3)
            assert (wa.of("audit") + wb.of("audit")).count({"id": 2}) == 1
    finally:
        wa.client.shutdown()
        wb.client.shutdown()
        a.stop()
        b.stop()


def test_a_fifo_queue_keeps_its_order_across_daemons(short_tmp: Path,
                                                     redis_server: RedisServer) -> None:
    a, b = daemons(short_tmp, redis_server, "ab", '[queues.fifo]\ntype = "fifo"\n'
                   'message_group_field = "g"\nmax_retries = 2\nbackoff_ms = 20\n')
    order: list[int] = []
    failed: set[int] = set()
    lock = threading.Lock()

    def step(data: dict[str, int]) -> None:
        with lock:
            if data["n"] == 3 and 3 not in failed:  # one failure: its retry keeps its place
                failed.add(3)
                raise RuntimeError("once")
            order.append(data["n"])

    workers = [register_worker(str(d.socket_path)) for d in (a, b)]
    try:
        for worker in workers:
            worker.register_function("step", step)
            worker.ping()
        with connect(str(a.socket_path)) as client:
            for n in range(20):
                client.trigger({"function_id": "step", "payload": {"g": "one", "n": n},
                                "action": TriggerAction.Enqueue(queue="fifo")})
        wait_for(lambda: len(order) == 20, message="every step")
        assert order == list(range(20))
    finally:
        for worker in workers:
            worker.shutdown()
        a.stop()
        b.stop()


def test_a_daemon_that_stops_gives_back_what_it_holds_at_once(
        short_tmp: Path, redis_server: RedisServer) -> None:
    """Held messages (one in flight, one waiting its turn) reach the other daemon when
    their daemon stops, long before the visibility timeout (30 s here)."""
    a, b = daemons(short_tmp, redis_server, "ab", "[queues.jobs]\nconcurrency = 1\n"
                   "visibility_timeout_ms = 30000\n")
    hold = threading.Event()
    stuck, on_b = Worker(a), Worker(b)
    try:
        stuck.serve("job", hold=hold)
        for n in (1, 2):
            assert run_iii(b.tmp, "trigger", "job", "--enqueue", "jobs",
                           f"n={n}").returncode == 0
        wait_for(lambda: stuck.of("job") == [{"n": 1}], message="a to take them")
        on_b.serve("job")
        a.stop()
        stopped_at = time.monotonic()
        wait_for(lambda: sorted(d["n"] for d in on_b.of("job")) == [1, 2], timeout=10,
                 message="b to get both")
        assert time.monotonic() - stopped_at < 5
    finally:
        hold.set()
        stuck.client.shutdown()
        on_b.client.shutdown()
        b.stop()
