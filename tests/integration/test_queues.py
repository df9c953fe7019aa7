"""Durable queues through a real daemon: the CLI, the SDK (ours and the official one), a
topic two functions consume, retries into the dead-letter list, redrive, and a kill -9
mid-stream that loses nothing acknowledged."""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import III, InitOptions, InvocationError, TriggerAction, register_worker
from iii_sdk.options import ReconnectionConfig
from tests.helpers import (
    DaemonProcess,
    RawClient,
    RedisServer,
    ThreadDaemon,
    ask,
    dead_letters,
    run_iii,
    wait_for,
)

FAST = InitOptions(connect_timeout_s=5, reconnection_config=ReconnectionConfig(
    initial_delay_ms=50, max_delay_ms=200))


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Any]] = []

    def add(self, function_id: str, data: Any) -> None:
        with self.lock:
            self.calls.append((function_id, data))

    def of(self, function_id: str) -> list[Any]:
        with self.lock:
            return [d for f, d in self.calls if f == function_id]


@pytest.fixture
def queued(short_tmp: Path) -> Iterator[DaemonProcess]:
    (short_tmp / "config.toml").write_text(
        "[queues.jobs]\nmax_retries = 1\nbackoff_ms = 50\n")
    daemon = DaemonProcess(short_tmp).start()
    yield daemon
    daemon.stop()


@pytest.fixture(params=["embedded", "redis"])
def on_backend(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[Any]:
    """The same daemon and config on each backend: the queues' contract holds on both."""
    (short_tmp / "config.toml").write_text(
        "[queues.jobs]\nmax_retries = 1\nbackoff_ms = 50\n")
    if request.param == "embedded":
        daemon: Any = DaemonProcess(short_tmp).start()
        yield daemon
        daemon.stop()
        return
    server = RedisServer(short_tmp / "redis").start()
    daemon = ThreadDaemon(short_tmp, "--redis-url", server.url).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        server.stop()


def serving(daemon: Any) -> Iterator[tuple[III, Seen]]:
    client = register_worker(str(daemon.socket_path), FAST)
    seen = Seen()

    def ok(data: Any) -> Any:
        seen.add("ok", data)
        return None

    def flaky(data: Any) -> Any:
        seen.add("flaky", data)
        raise RuntimeError(f"cannot handle {data}")

    client.register_function("ok", ok)
    client.register_function("flaky", flaky)
    client.ping()
    yield client, seen
    client.shutdown()


@pytest.fixture
def worker(queued: DaemonProcess) -> Iterator[tuple[III, Seen]]:
    yield from serving(queued)


@pytest.fixture
def backend_worker(on_backend: Any) -> Iterator[tuple[III, Seen]]:
    yield from serving(on_backend)


def iii_json(daemon: DaemonProcess, *args: str) -> Any:
    proc = run_iii(daemon.tmp, *args, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_from_the_cli_retries_dead_letters_and_redrive(
        on_backend: Any, backend_worker: tuple[III, Seen]) -> None:
    queued, (_, seen) = on_backend, backend_worker
    proc = run_iii(queued.tmp, "trigger", "ok", "--enqueue", "jobs", "n=1")
    assert proc.returncode == 0, proc.stderr
    assert "messageReceiptId" in json.loads(proc.stdout) and proc.stderr == ""
    wait_for(lambda: seen.of("ok") == [{"n": 1}], message="the message to arrive")

    assert run_iii(queued.tmp, "trigger", "flaky", "--enqueue", "jobs", "n=2").returncode == 0
    # max_retries 1: two attempts, then a dead letter with the last error.
    wait_for(lambda: len(dead_letters(queued, "jobs")) == 1,
             message="the dead letter")
    [dead] = iii_json(queued, "queue", "dlq", "jobs")
    assert dead["attempts"] == 2 and dead["payload"] == {"n": 2}
    assert "cannot handle" in dead["last_error"]["message"]
    assert len(seen.of("flaky")) == 2
    rows = {r["function_id"]: r for r in iii_json(queued, "queue", "list")}
    assert rows["flaky"]["dead_letters"] == 1 and rows["ok"]["delivered"] == 1
    assert iii_json(queued, "list", "queues") == iii_json(queued, "queue", "list")

    redriven = run_iii(queued.tmp, "queue", "redrive", "jobs")
    assert redriven.returncode == 0 and "1 message sent again" in redriven.stderr
    wait_for(lambda: len(seen.of("flaky")) == 4, message="the redriven attempts")
    wait_for(lambda: len(dead_letters(queued, "jobs")) == 1,
             message="dead again")
    missing = run_iii(queued.tmp, "queue", "redrive", "jobs", "--id", "nope")
    assert missing.returncode == 4 and "no dead letter" in missing.stderr

    waiting = run_iii(queued.tmp, "trigger", "nobody::yet", "--enqueue", "jobs")
    assert waiting.returncode == 0 and "nothing serves nobody::yet yet" in waiting.stderr
    # flaky's and nobody's (on Redis: the cluster's counts, as of the last 0.5 s)
    wait_for(lambda: (ask(queued, "engine::status")["queued_messages"],
                      ask(queued, "engine::status")["dead_letters"]) == (2, 1),
             message="the counts in the status")
    status = run_iii(queued.tmp, "daemon", "status").stdout
    assert "2 queued messages (1 dead letter)" in status, status

    refused = run_iii(queued.tmp, "queue", "purge", "jobs")  # no terminal: must say --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = run_iii(queued.tmp, "queue", "purge", "jobs", "--yes")
    assert purged.returncode == 0 and "2 messages dropped" in purged.stderr
    assert iii_json(queued, "queue", "dlq", "jobs") == []


def test_from_the_sdk_a_topic_that_two_functions_consume(
        on_backend: Any, backend_worker: tuple[III, Seen]) -> None:
    client, seen = backend_worker
    def recorder(function_id: str) -> Any:
        return lambda data: seen.add(function_id, data)

    for function_id in ("audit", "mail"):
        client.register_function(function_id, recorder(function_id))
        handle = client.register_trigger({"type": "queue", "function_id": function_id,
                                          "config": {"topic": "order.placed"}})
        handle.ready(5)
    assert client.trigger({"function_id": "enqueue",
                           "payload": {"topic": "order.placed", "data": {"id": 7}}}) is None
    wait_for(lambda: seen.of("audit") == [{"id": 7}] and seen.of("mail") == [{"id": 7}],
             message="both copies")
    receipt = client.trigger({"function_id": "ok", "payload": {"n": 3},
                              "action": TriggerAction.Enqueue(queue="jobs")})
    assert isinstance(receipt["messageReceiptId"], str)
    wait_for(lambda: {"n": 3} in seen.of("ok"), message="the enqueued call")


def test_the_official_sdk_enqueues_and_consumes_a_topic(short_tmp: Path) -> None:
    iii = pytest.importorskip("iii")
    from tests.helpers import free_port

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    official = iii.register_worker(f"ws://127.0.0.1:{port}")
    got: list[Any] = []
    try:
        official.register_function("consume", lambda data: got.append(data))
        official.register_trigger({"type": "queue", "function_id": "consume",
                                   "config": {"topic": "t"}})
        wait_for(lambda: any(t["trigger_type"] == "queue" for t in ask(
            daemon, "engine::registered-triggers::list")["registered_triggers"]),
            message="the queue trigger")
        official.trigger({"function_id": "enqueue", "payload": {"topic": "t", "data": 5}})
        receipt = official.trigger({"function_id": "consume", "payload": 6,
                                    "action": iii.TriggerAction.Enqueue(queue="q")})
        assert "messageReceiptId" in receipt
        wait_for(lambda: sorted(got) == [5, 6], message="both messages")
    finally:
        official.shutdown()
        daemon.stop()


def test_nothing_acknowledged_is_lost_to_a_kill_9(short_tmp: Path) -> None:
    daemon = DaemonProcess(short_tmp).start()
    client = RawClient(daemon.socket_path, timeout=30)
    assert "error" not in client.call("engine::register_trigger", {
        "id": "sink-topic", "type": "queue", "function_id": "sink",
        "config": {"topic": "stream"}})
    seen = Seen()
    worker = register_worker(str(daemon.socket_path), FAST)
    worker.register_function("sink", lambda data: seen.add("sink", data["n"]))
    worker.ping()
    frames = []
    for n in range(10_000):  # both ways in, interleaved
        if n % 2:
            frames.append({"type": "invokefunction", "function_id": "sink",
                           "invocation_id": f"a{n}", "data": {"n": n},
                           "action": {"type": "enqueue", "queue": "direct"}})
        else:
            frames.append({"type": "invokefunction", "function_id": "enqueue",
                           "invocation_id": f"a{n}",
                           "data": {"topic": "stream", "data": {"n": n}}})
    stream = b"".join(json.dumps(f).encode() + b"\n" for f in frames)

    def send() -> None:
        with contextlib.suppress(OSError):  # the daemon is killed mid-stream
            client.send_raw(stream)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    acknowledged: set[int] = set()
    try:
        while len(acknowledged) < 5_000:  # mid-stream: about half are acknowledged
            answer = client.recv()
            if answer.get("type") == "invocationresult" and "error" not in answer:
                acknowledged.add(int(answer["invocation_id"][1:]))
    finally:
        daemon.kill()
        client.close()
    # What the store still holds is what will be delivered again: messages not delivered
    # yet, and delivered ones whose acknowledgement had not landed.
    with sqlite3.connect(daemon.data_dir / "iii.db") as db:
        kept = {json.loads(row[0])["n"] for row in db.execute("SELECT data FROM messages")}
    daemon.start()
    try:
        wait_for(lambda: acknowledged <= set(seen.of("sink")), timeout=60,
                 message="every acknowledged message to be delivered after the restart")
        wait_for(lambda: kept <= set(seen.of("sink")), message="every kept message")
        twice = {n for n, count in collections.Counter(seen.of("sink")).items() if count > 1}
        assert twice <= kept  # again only where the acknowledgement was lost
    finally:
        worker.shutdown()
        daemon.stop()


def test_a_broken_database_gives_no_receipt_and_calls_go_on(queued: DaemonProcess,
                                                            worker: tuple[III, Seen]) -> None:
    """The store refuses writes (as a full disk would): the caller gets queue_error and
    no receipt; what needs no disk keeps working; once it is fixed, queues work again."""
    client, seen = worker
    with sqlite3.connect(queued.data_dir / "iii.db") as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages "
                   "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    proc = run_iii(queued.tmp, "trigger", "ok", "--enqueue", "jobs", "n=1")
    assert proc.returncode == 1 and proc.stdout == ""
    error = json.loads(proc.stderr)
    assert error["code"] == "queue_error" and "database or disk is full" in error["message"]
    assert client.trigger({"function_id": "ok", "payload": {"n": 2}}) is None  # no disk
    assert seen.of("ok") == [{"n": 2}]
    with sqlite3.connect(queued.data_dir / "iii.db") as db:
        db.execute("DROP TRIGGER refuse")
    assert run_iii(queued.tmp, "trigger", "ok", "--enqueue", "jobs", "n=3").returncode == 0
    wait_for(lambda: {"n": 3} in seen.of("ok"), message="the queue to work again")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A real filesystem of ``size`` at ``path`` (tmpfs; needs root and mount)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small disk here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_gives_no_receipt_and_loses_nothing_acknowledged(
        short_tmp: Path) -> None:
    """The data dir on a real 8 MiB filesystem, filled up: enqueues get queue_error and
    no receipt while calls that need no disk go on; once there is room again, every
    message that got a receipt is delivered and new ones are taken."""
    data = short_tmp / "data"
    with small_disk(data, "8m"):
        daemon = DaemonProcess(short_tmp).start()
        client = register_worker(str(daemon.socket_path), FAST)
        seen = Seen()
        client.register_function("ok", lambda payload: seen.add("ok", payload["n"]))
        client.register_function("echo", lambda payload: payload)
        client.ping()
        try:
            # All the room there is.
            with (data / "filler").open("wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            acknowledged, refusal = [], None
            for n in range(200):  # the WAL reuses its pages: big messages outgrow it
                try:
                    client.trigger({"function_id": "missing::yet", "payload": {
                        "n": n, "pad": "x" * 100_000},
                        "action": TriggerAction.Enqueue(queue="big")})
                    acknowledged.append(n)
                except InvocationError as exc:
                    refusal = exc
                    break
            assert refusal is not None and refusal.code == "queue_error", refusal
            assert "full" in refusal.message
            proc = run_iii(short_tmp, "trigger", "ok", "--enqueue", "jobs", "n=-1")
            assert proc.returncode == 1 and proc.stdout == "" and "queue_error" in proc.stderr
            assert "Traceback" not in proc.stderr
            assert client.trigger({"function_id": "echo", "payload": {"x": 1}}) == {"x": 1}

            (data / "filler").unlink()
            proc = run_iii(short_tmp, "trigger", "ok", "--enqueue", "jobs", "n=-2")
            assert proc.returncode == 0, proc.stderr
            wait_for(lambda: -2 in seen.of("ok"), message="the queue to work again")
            client.register_function("missing::yet",
                                     lambda payload: seen.add("late", payload["n"]))
            wait_for(lambda: sorted(seen.of("late")) == acknowledged, timeout=30,
                     message="every acknowledged message to be delivered")
            assert -1 not in seen.of("ok")  # the refused one never went
        finally:
            client.shutdown()
            daemon.stop()
