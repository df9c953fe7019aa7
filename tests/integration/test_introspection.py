"""The engine::* listings in the upstream engine's shapes, read through the official SDK
over WebSocket and through ours over the Unix socket: keys, filters, include_internal."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import register_worker
from tests.helpers import ThreadDaemon, free_port, official_worker, wait_for


class Engine:
    def __init__(self, tmp: Path) -> None:
        self.ws_port = free_port()
        self.daemon = ThreadDaemon(tmp, "--ws-port", str(self.ws_port)).start()
        self.official = official_worker(self.ws_port, "official-lister")
        self.ours = register_worker(str(self.daemon.socket_path))
        self.official.register_function("shop::order", lambda data: data,
                                        description="takes an order",
                                        metadata={"team": "shop"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.official.register_trigger({"type": "cron", "function_id": "shop::order",
                                            "config": {"expression": "0 0 * * * *"}})
        self.ours.register_function("mail::send", lambda data: None)
        self.ours.register_trigger({"type": "subscribe", "function_id": "mail::send",
                                    "config": {"topic": "orders"}, "id": "mailer"}).ready(5)
        # A trigger of one of the daemon's own functions: internal, listed on request.
        self.ours.register_trigger({"type": "subscribe", "function_id": "engine::status",
                                    "config": {"topic": "status"}, "id": "internal"}).ready(5)

    def call(self, kind: str, function_id: str, payload: Any = None) -> Any:
        client = self.official if kind == "official" else self.ours
        return client.trigger({"function_id": function_id, "payload": payload})

    def close(self) -> None:
        self.official.shutdown()
        self.ours.shutdown()
        self.daemon.stop()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    running = Engine(tmp_path_factory.mktemp("listings"))
    wait_for(lambda: len(running.call("ours", "engine::registered-triggers::list")[
        "registered_triggers"]) == 2, message="both triggers")  # and the internal one
    yield running
    running.close()


KINDS = ["official", "ours"]


@pytest.mark.parametrize("kind", KINDS)
def test_functions_list(engine: Engine, kind: str) -> None:
    functions = engine.call(kind, "engine::functions::list")["functions"]
    rows = {f["function_id"]: f for f in functions}
    assert rows["shop::order"] == {
        "function_id": "shop::order", "description": "takes an order",
        "request_format": None, "response_format": None, "metadata": {"team": "shop"},
        "worker_name": "official-lister", "worker_id": rows["shop::order"]["worker_id"]}
    assert "state::set" in rows and not [f for f in rows if f.startswith("engine::")]
    assert [f["function_id"] for f in functions] == sorted(rows)
    everything = engine.call(kind, "engine::functions::list", {"include_internal": True})
    internal = {f["function_id"]: f for f in everything["functions"]}
    assert internal["engine::functions::list"]["worker_name"] == "daemon"
    with pytest.raises(Exception, match="include_internal"):
        engine.call(kind, "engine::functions::list", {"include_internal": "yes"})


@pytest.mark.parametrize("kind", KINDS)
def test_workers_list(engine: Engine, kind: str) -> None:
    workers = {w["name"]: w for w in engine.call(kind, "engine::workers::list")["workers"]}
    official = workers["official-lister"]
    assert {"id", "name", "status", "function_count", "functions", "connected_at_ms",
            "active_invocations", "runtime", "version", "pid", "transport"} <= set(official)
    assert official["status"] == "connected" and official["function_count"] == 1
    assert official["functions"] == ["shop::order"] and official["transport"] == "ws"
    assert isinstance(official["connected_at_ms"], int) and official["connected_at_ms"] > 0
    assert official["active_invocations"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_trigger_types_list(engine: Engine, kind: str) -> None:
    types = engine.call(kind, "engine::triggers::list")["triggers"]
    ids = [t["id"] for t in types]
    assert ids == sorted(ids) and {"cron", "http", "queue", "state", "stream",
                                   "subscribe"} <= set(ids)
    cron = next(t for t in types if t["id"] == "cron")
    assert cron["worker_name"] == "daemon" and cron["description"]
    assert cron["trigger_count"] == 1
    subscribe = next(t for t in types if t["id"] == "subscribe")
    assert subscribe["trigger_count"] == 2  # counts every binding, internal ones too
    assert [t["id"] for t in engine.call(kind, "engine::triggers::list",
                                         {"trigger_type": "cron"})["triggers"]] == ["cron"]
    assert [t["id"] for t in engine.call(kind, "engine::triggers::list",
                                         {"search": "CRON"})["triggers"]] == ["cron"]
    assert engine.call(kind, "engine::triggers::list", {"worker": "nobody"})["triggers"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_registered_triggers_list(engine: Engine, kind: str) -> None:
    def ids(payload: Any = None) -> list[str]:
        rows = engine.call(kind, "engine::registered-triggers::list", payload)
        return [t["id"] for t in rows["registered_triggers"]]

    rows = engine.call(kind, "engine::registered-triggers::list")["registered_triggers"]
    hourly = next(t for t in rows if t["function_id"] == "shop::order")  # the SDK's uuid
    assert {"trigger_type": "cron", "function_id": "shop::order",
            "worker_name": "official-lister", "config": {"expression": "0 0 * * * *"},
            "config_summary": "0 0 * * * *", "status": "active"}.items() <= hourly.items()
    assert {"owner", "error", "metadata"} <= set(hourly)
    both = sorted([hourly["id"], "mailer"])
    assert ids() == both  # sorted by id
    assert ids({"trigger_type": "subscribe"}) == ["mailer"]
    assert ids({"function_id": "shop::order"}) == [hourly["id"]]
    assert ids({"worker": "official-lister"}) == [hourly["id"]]
    assert ids({"search": "orders"}) == ["mailer"]  # the summary: the topic
    assert ids({"include_internal": True}) == sorted([*both, "internal"])
