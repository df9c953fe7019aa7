"""State and streams against a real daemon, as code written for the upstream engine uses
them: through the official SDK over WebSocket and through ours over the Unix socket,
with the values the official types (``iii.state``, ``iii_helpers.stream``) describe."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import iii
import pytest
from iii.state import StateDeleteResult, StateEventData, StateSetResult, StateUpdateResult
from iii_helpers.stream import (
    StreamChangeEvent,
    StreamDeleteResult,
    StreamSetResult,
    StreamUpdateResult,
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateOpError,
    UpdateRemove,
    UpdateSet,
)

from iii_sdk import III, register_worker
from tests.helpers import (
    DaemonProcess,
    RedisServer,
    ThreadDaemon,
    child_env,
    free_port,
    official_worker,
    run_iii,
    wait_for,
)


class Engine:
    """A daemon with the official SDK attached over WebSocket and ours over the socket;
    its state in its own store, or in a Redis it would share with other daemons."""

    def __init__(self, tmp: Path, backend: str) -> None:
        self.tmp = tmp
        self.ws_port = free_port()
        self.redis = RedisServer(tmp / "redis").start() if backend == "redis" else None
        extra = ("--redis-url", self.redis.url) if self.redis is not None else ()
        self.daemon = ThreadDaemon(tmp, "--ws-port", str(self.ws_port), *extra).start()
        self.official = official_worker(self.ws_port)
        self.ours = register_worker(str(self.daemon.socket_path))

    def caller(self, name: str) -> Any:
        return self.official if name == "official" else self.ours

    def close(self) -> None:
        self.official.shutdown()
        self.ours.shutdown()
        self.daemon.stop()
        if self.redis is not None:
            self.redis.stop()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The contract: every test here runs on the embedded store and on Redis."""
    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as tmp:
        engine = Engine(Path(tmp), request.param)
        yield engine
        engine.close()


def ops(*models: Any) -> list[dict[str, Any]]:
    """Update ops as the official SDK puts them on the wire."""
    return [model.model_dump() for model in models]


def error_code(call: Any) -> str:
    with pytest.raises(Exception) as raised:  # each SDK's InvocationError
        call()
    return str(raised.value.code)  # type: ignore[attr-defined]


@pytest.mark.parametrize("who", ["official", "ours"])
def test_every_state_function_and_op(engine: Engine, who: str) -> None:
    worker = engine.caller(who)
    scope = f"orders-{who}"

    def state(op: str, **payload: Any) -> Any:
        return worker.trigger({"function_id": f"state::{op}", "payload": payload})

    assert state("get", scope=scope, key="o1") is None
    made = StateSetResult[Any].model_validate(state("set", scope=scope, key="o1",
                                                    value={"status": "new", "n": 1}))
    assert (made.old_value, made.new_value) == (None, {"status": "new", "n": 1})
    assert state("get", scope=scope, key="o1") == {"status": "new", "n": 1}
    updated = StateUpdateResult[Any].model_validate(state("update", scope=scope, key="o1",
                                                          ops=ops(
        UpdateSet(path="status", value="paid"),
        UpdateMerge(value={"by": "ann", "tmp": 0}),
        UpdateIncrement(path="n", by=5),
        UpdateDecrement(path="n", by=2),
        UpdateAppend(path="log", value="paid"),
        UpdateAppend(path=["audit", "2026"], value={"at": 1}),
        UpdateRemove(path="tmp"))))
    assert updated.old_value == {"status": "new", "n": 1}
    assert updated.new_value == {"status": "paid", "n": 4, "by": "ann", "log": "paid",
                                 "audit": {"2026": [{"at": 1}]}}
    # An op that cannot apply is reported; the rest apply.
    partial = state("update", scope=scope, key="o1", ops=ops(
        UpdateIncrement(path="status", by=1), UpdateSet(path="ok", value=True)))
    [problem] = [UpdateOpError.model_validate(e) for e in partial["errors"]]
    assert (problem.op_index, problem.code) == (0, "increment.not_number")
    assert partial["new_value"]["ok"] is True
    # A malformed op is refused and writes nothing.
    assert error_code(lambda: state("update", scope=scope, key="o1",
                                    ops=[{"type": "explode", "path": "n"}])) == "bad_request"
    assert state("get", scope=scope, key="o1")["ok"] is True
    state("set", scope=scope, key="o2", value=[2])
    assert sorted(map(str, state("list", scope=scope))) == sorted(
        [str([2]), str(state("get", scope=scope, key="o1"))])
    assert scope in state("list_groups")["groups"]
    gone = StateDeleteResult.model_validate(state("delete", scope=scope, key="o2"))
    assert gone.old_value == [2]
    assert StateDeleteResult.model_validate(state("delete", scope=scope,
                                                  key="o2")).old_value is None


@pytest.mark.parametrize("who", ["official", "ours"])
def test_every_stream_function_and_op(engine: Engine, who: str) -> None:
    worker = engine.caller(who)
    where = {"stream_name": f"todo-{who}", "group_id": "inbox"}

    def stream(op: str, **payload: Any) -> Any:
        return worker.trigger({"function_id": f"stream::{op}",
                               "payload": {**where, **payload}})

    assert stream("get", item_id="t1") is None
    made = StreamSetResult[Any].model_validate(stream("set", item_id="t1",
                                                      data={"title": "milk"}))
    assert (made.old_value, made.new_value) == (None, {"title": "milk"})
    updated = StreamUpdateResult[Any].model_validate(stream("update", item_id="t1", ops=ops(
        UpdateSet(path="done", value=False), UpdateIncrement(path="votes", by=2),
        UpdateAppend(path="tags", value="shop"), UpdateMerge(value={"done": True}),
        UpdateDecrement(path="votes", by=1), UpdateRemove(path="title"))))
    assert updated.new_value == {"done": True, "votes": 1, "tags": "shop"}
    assert updated.errors == []
    stream("set", item_id="t0", data="first")
    worker.trigger({"function_id": "stream::set", "payload": {
        **where, "group_id": "done", "item_id": "x", "data": 1}})
    assert stream("list") == ["first", {"done": True, "votes": 1, "tags": "shop"}]
    assert worker.trigger({"function_id": "stream::list_groups",
                           "payload": {"stream_name": where["stream_name"]}}) == [
        "done", "inbox"]
    assert StreamDeleteResult.model_validate(stream("delete", item_id="t0")).old_value == \
        "first"
    assert stream("send", type="typing", data={"who": "ann"}) is None
    assert stream("list") == [{"done": True, "votes": 1, "tags": "shop"}]


def test_state_and_stream_triggers_reach_the_official_sdk(engine: Engine) -> None:
    """A ``state`` trigger without scope fires for changes in two scopes; a ``stream``
    trigger's payload is the official ``StreamChangeEvent``."""
    official = engine.official
    state_events: list[Any] = []
    stream_events: list[Any] = []
    official.register_function("off::on_state", lambda data: state_events.append(data))
    official.register_function("off::on_stream", lambda data: stream_events.append(data))
    with warnings.catch_warnings():  # register_trigger is what 0.25 deprecates for observe
        warnings.simplefilter("ignore", DeprecationWarning)
        anywhere = official.register_trigger({"type": "state",
                                              "function_id": "off::on_state", "config": {}})
        on_todo = official.register_trigger({"type": "stream",
                                             "function_id": "off::on_stream",
                                             "config": {"stream_name": "watched"}})
    try:
        wait_for(lambda: len(engine.ours.trigger({
            "function_id": "engine::registered-triggers::list"})["registered_triggers"]) >= 2,
            message="the two triggers")
        engine.ours.trigger({"function_id": "state::set",
                             "payload": {"scope": "alpha", "key": "a", "value": 1}})
        engine.ours.trigger({"function_id": "state::update", "payload": {
            "scope": "beta", "key": "b", "ops": [{"type": "increment", "path": "n", "by": 1}]}})
        wait_for(lambda: {e["scope"] for e in state_events} >= {"alpha", "beta"},
                 message="state events from both scopes")
        events = [StateEventData[Any].model_validate(e) for e in state_events]
        [beta] = [e for e in events if e.scope == "beta"]
        assert (beta.event_type.value, beta.key, beta.new_value) == (
            "state:created", "b", {"n": 1})
        engine.ours.trigger({"function_id": "stream::set", "payload": {
            "stream_name": "watched", "group_id": "g", "item_id": "i", "data": {"v": 1}}})
        wait_for(lambda: stream_events, message="the stream event")
        change = StreamChangeEvent.model_validate(stream_events[0])
        assert (change.streamName, change.groupId, change.id) == ("watched", "g", "i")
        assert (change.event.type, change.event.data) == ("create", {"v": 1})
    finally:
        anywhere.unregister()
        on_todo.unregister()


with warnings.catch_warnings():  # the official SDK warns that IStream is deprecated
    warnings.simplefilter("ignore", FutureWarning)

    class Shelf(iii.stream.IStream[Any]):  # type: ignore[misc]
        """A custom stream backend, as a user of the official SDK writes one."""

        def __init__(self) -> None:
            self.items: dict[tuple[str, str], Any] = {}
            self.lock = threading.Lock()

        async def get(self, input: Any) -> Any:
            return self.items.get((input.group_id, input.item_id))

        async def set(self, input: Any) -> Any:
            with self.lock:
                old = self.items.get((input.group_id, input.item_id))
                self.items[(input.group_id, input.item_id)] = input.data
            return StreamSetResult[Any](old_value=old, new_value=input.data)

        async def delete(self, input: Any) -> Any:
            return StreamDeleteResult(old_value=self.items.pop((input.group_id, input.item_id),
                                                               None))

        async def list(self, input: Any) -> Any:
            return [v for (g, _), v in sorted(self.items.items()) if g == input.group_id]

        async def list_groups(self, input: Any) -> Any:
            return sorted({g for g, _ in self.items})

        async def update(self, input: Any) -> Any:
            raise AssertionError("create_stream does not serve update: never called")


def test_a_stream_served_by_the_official_sdk(engine: Engine) -> None:
    """``create_stream`` registers ``stream::get(NAME)`` ...: our SDK's calls for that
    stream reach it, updates go through its get and set, other streams stay ours."""
    from iii.helpers import create_stream

    shelf = Shelf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        create_stream(engine.official, "shelf", shelf)
    ours = engine.ours
    backend = {f"stream::{op}(shelf)" for op in ("get", "set", "delete", "list", "list_groups")}
    wait_for(lambda: backend <= {
        f["function_id"] for f in ours.trigger({"function_id": "engine::functions::list"})[
            "functions"]}, message="all five of the backend's functions")
    at = {"stream_name": "shelf", "group_id": "g"}
    assert ours.trigger({"function_id": "stream::set",
                         "payload": {**at, "item_id": "a", "data": {"n": 1}}}) == {
        "old_value": None, "new_value": {"n": 1}}
    assert shelf.items == {("g", "a"): {"n": 1}}
    assert ours.trigger({"function_id": "stream::update", "payload": {
        **at, "item_id": "a", "ops": [{"type": "increment", "path": "n", "by": 2}]}}) == {
        "old_value": {"n": 1}, "new_value": {"n": 3}}
    assert shelf.items == {("g", "a"): {"n": 3}}
    assert ours.trigger({"function_id": "stream::get",
                         "payload": {**at, "item_id": "a"}}) == {"n": 3}
    assert ours.trigger({"function_id": "stream::list", "payload": at}) == [{"n": 3}]
    assert ours.trigger({"function_id": "stream::list_groups",
                         "payload": {"stream_name": "shelf"}}) == ["g"]
    assert ours.trigger({"function_id": "stream::delete",
                         "payload": {**at, "item_id": "a"}}) == {"old_value": {"n": 3}}
    assert shelf.items == {}


COUNTER = textwrap.dedent("""
    import sys
    from iii_sdk import register_worker
    worker = register_worker(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        worker.trigger({"function_id": "state::update", "payload": {
            "scope": "race", "key": "hits",
            "ops": [{"type": "increment", "path": "n", "by": 1}]}})
    worker.shutdown()
""")


def test_concurrent_updates_from_several_workers_lose_nothing(engine: Engine) -> None:
    """Three worker processes on the socket and the official SDK over WebSocket each
    increment one counter: every increment counts."""
    each = 300
    workers = [subprocess.Popen([sys.executable, "-c", COUNTER,
                                 str(engine.daemon.socket_path), str(each)],
                                env=child_env(engine.tmp)) for _ in range(3)]

    def official_increments() -> None:
        for _ in range(each):
            engine.official.trigger({"function_id": "state::update", "payload": {
                "scope": "race", "key": "hits",
                "ops": [{"type": "increment", "path": "n", "by": 1}]}})

    thread = threading.Thread(target=official_increments)
    thread.start()
    thread.join(timeout=120)
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    assert engine.ours.trigger({"function_id": "state::get", "payload": {
        "scope": "race", "key": "hits"}}) == {"n": 4 * each}


def test_values_survive_a_restart(short_tmp: Path) -> None:
    daemon = DaemonProcess(short_tmp).start()
    worker = register_worker(str(daemon.socket_path))
    try:
        worker.trigger({"function_id": "stream::set", "payload": {
            "stream_name": "kept", "group_id": "g", "item_id": "i", "data": [1]}})
        worker.trigger({"function_id": "state::update", "payload": {
            "scope": "kept", "key": "k", "ops": [{"type": "append", "path": "", "value": "x"}]}})
    finally:
        worker.shutdown()
    daemon.kill()  # no shutdown: what was answered is on disk
    daemon.start()
    worker = register_worker(str(daemon.socket_path))
    try:
        assert worker.trigger({"function_id": "stream::list", "payload": {
            "stream_name": "kept", "group_id": "g"}}) == [[1]]
        assert worker.trigger({"function_id": "state::get",
                               "payload": {"scope": "kept", "key": "k"}}) == "x"
    finally:
        worker.shutdown()
        daemon.stop()


def test_ours_serves_a_stream_too(engine: Engine) -> None:
    """Our SDK registers a backend the same way (by function id): a call from the
    official SDK reaches it."""
    worker: III = register_worker(str(engine.daemon.socket_path))
    try:
        worker.register_function("stream::get(ours)", lambda data: {"from": "ours",
                                                                   **data})
        worker.ping()
        got = engine.official.trigger({"function_id": "stream::get", "payload": {
            "stream_name": "ours", "group_id": "g", "item_id": "i"}})
        assert got == {"from": "ours", "stream_name": "ours", "group_id": "g",
                       "item_id": "i"}
        listed = run_iii(engine.tmp, "list", "functions", "-o", "json")
        assert "stream::get(ours)" in listed.stdout
    finally:
        worker.shutdown()
