"""The store and its writer thread: batched commits, failures kept to their writes,
rows that cannot load kept and reported. (The core's side is in test_triggers.py.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from iii_daemon.core.effects import Persist
from iii_daemon.core.writes import DropTrigger, PutState, PutTrigger, Write
from iii_daemon.drivers.store import Store
from iii_daemon.drivers.store_writer import StoreWriter
from tests.unit.test_router import Core
from tests.unit.test_triggers import WALL


def _persist(*writes: Write) -> Persist:
    return Persist(writes, lambda failure, out: None)


class Landings:
    """What the writer's ``landed`` callback saw (it runs on the writer thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


def _wait_done(persists: list[Persist], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.done for p in persists):
        assert time.monotonic() < deadline, "the writer did not finish"
        time.sleep(0.001)


def test_the_writer_commits_many_writes_in_few_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "iii.db")
    landings = Landings()
    writer = StoreWriter(store, landings)
    persists = [_persist(PutState("s", f"k{i}", i)) for i in range(2_000)]
    for persist in persists:
        writer.submit([persist])
    _wait_done(persists)
    writer.close()
    assert all(p.failure is None for p in persists)
    assert landings.count < len(persists)  # batched: one callback per transaction
    assert len(store.load().state) == 2_000
    store.close()


def test_a_failing_write_costs_only_its_own_call(tmp_path: Path) -> None:
    store = Store(tmp_path / "iii.db")
    # A write the database refuses, among good ones in the same batch.
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON state WHEN NEW.key = 'bad' "
                      "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    writer = StoreWriter(store, lambda: None)
    persists = [_persist(PutState("s", key, 1)) for key in ("a", "bad", "b")]
    for persist in persists:
        writer.submit([persist])
    writer.close()  # commits what is queued, then stops
    assert [p.done for p in persists] == [True, True, True]
    assert [p.failure is not None for p in persists] == [False, True, False]
    assert "refused by the test" in (persists[1].failure or "")
    assert sorted(key for _, key, _ in store.load().state) == ["a", "b"]
    store.close()


def test_after_close_writes_fail_and_say_why(tmp_path: Path) -> None:
    store = Store(tmp_path / "iii.db")
    writer = StoreWriter(store, lambda: None)
    writer.close()
    late = _persist(PutState("s", "k", 1))
    writer.submit([late])
    assert late.done and late.failure == "the daemon is shutting down"
    store.close()


def test_stored_rows_that_cannot_load_are_kept_with_the_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "iii.db")
    store.apply([PutTrigger("ok", "subscribe", "job", {"topic": "t"}, None),
                 PutTrigger("past", "cron", "job", {"expression": "0 0 0 1 1 * 2020"}, None),
                 PutState("s", "good", {"n": 1})])
    store._db.execute("INSERT INTO triggers VALUES ('bad', 'cron', 'job', '{', NULL)")
    store._db.execute("INSERT INTO triggers VALUES (7, 'state', 'job', '[]', '{}')")
    store._db.execute("INSERT INTO state VALUES ('s', 'broken', '{')")
    store._db.execute("INSERT INTO messages (id, queue, function_id, data, attempts, "
                      "available_at, enqueued_at, dead) VALUES "
                      "('m-bad', 'q', 'f', x'7b7d', 'many', 'soon', 1.0, 0), "
                      "('m-ok', 'q', 'f', x'7b7d', 0, 1.0, 1.0, 0)")
    stored = store.load()
    # The broken value is left out; the others come as their JSON text.
    assert [(scope, key, json.loads(text)) for scope, key, text in stored.state] == [
        ("s", "good", {"n": 1})]
    assert [m.id for m in stored.messages] == ["m-ok"]  # so is the broken message
    core = Core()
    core.router.start(100.0, WALL, stored)
    rows: dict[str, Any] = {b.id: b for b in core.router.triggers.bindings.values()}
    assert rows["ok"].status == "active"
    assert rows["past"].status == "error" and "never fires" in rows["past"].error
    assert rows["bad"].status == "error" and "not valid JSON" in rows["bad"].error
    assert rows["7"].status == "error" and "must be an object" in rows["7"].error
    # Nothing is deleted behind the user's back; removing one is a write like any other.
    assert len(store.load_triggers()) == 4
    core.connect(1)
    writes: list[Write] = []
    core.disk.holding = True
    core.call(1, "engine::unregister_trigger", {"id": "bad"}, invocation_id="u")
    for persist in core.disk.held:
        writes += persist.writes
    assert writes == [DropTrigger("bad")]
    store.apply(writes)
    [(_, answer)] = core.land()
    assert "error" not in answer and len(store.load_triggers()) == 3
    store.close()


def test_every_kind_of_write_in_one_batch(tmp_path: Path) -> None:
    """Runs of one kind go in one statement each; the result is as if applied in order."""
    from iii_daemon.core.writes import DropMessage, DropState, PutMessage

    def message(message_id: str, attempts: int = 0, dead: bool = False) -> PutMessage:
        return PutMessage(message_id, "q", "f", b'{"n": 1}', attempts, 1.0, 1.0, None,
                          {"code": "x", "message": "y"} if attempts else None, dead, None)

    store = Store(tmp_path / "iii.db")
    store.apply([PutState("s", "a", 1), PutState("s", "b", [2]), PutState("t", "c", None),
                 DropState("s", "a"), PutState("s", "a", "again"),
                 PutTrigger("t1", "subscribe", "f", {"topic": "x"}, None),
                 PutTrigger("t2", "cron", "f", {"expression": "* * * * *"}, {"m": 1}),
                 DropTrigger("t1"),
                 message("m1"), message("m2"), message("m3"), DropMessage("m2"),
                 message("m1", attempts=2, dead=True)], durable=True)
    stored = store.load()
    assert sorted((scope, key, json.loads(text)) for scope, key, text in stored.state) == [
        ("s", "a", "again"), ("s", "b", [2]), ("t", "c", None)]
    assert [(t.id, t.metadata) for t in stored.triggers] == [("t2", {"m": 1})]
    assert [(m.id, m.attempts, m.dead) for m in stored.messages] == [
        ("m1", 2, True), ("m3", 0, False)]  # the update kept m1's place
    assert stored.messages[0].last_error == {"code": "x", "message": "y"}
    store.close()
