"""A trigger type is one module plus one line in the catalog: these toy types plug in
that way and fire through the same hooks as cron, state and subscribe."""

from __future__ import annotations

from typing import Any

import pytest

from iii_daemon.core.effects import Emit
from iii_daemon.core.router import Router
from iii_daemon.core.triggers import catalog
from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock
from tests.unit.test_router import Core
from tests.unit.test_triggers import WALL, invocations, reg


class EveryTwoSeconds:
    """Scheduled: fires every two seconds of the monotonic clock."""

    id = "every2"
    description = "a toy scheduled type"
    owner: int | None = None
    max_running = 1

    def __init__(self) -> None:
        self.bound: dict[str, Binding] = {}
        self.due: float | None = None

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return None if config.get("label") else "config.label is required"

    def bind(self, binding: Binding, clock: Clock, out: Any) -> str:
        self.bound[binding.id] = binding
        self.due = clock.now + 2
        return ACTIVE

    def unbind(self, binding: Binding, out: Any) -> None:
        self.bound.pop(binding.id, None)

    def next_due(self) -> float | None:
        return self.due if self.bound else None

    def pop_due(self, clock: Clock, limit: int) -> list[tuple[Binding, Any]]:
        if self.due is None or clock.now < self.due:
            return []
        self.due = clock.now + 2
        return [(b, {"label": b.config["label"]}) for b in self.bound.values()][:limit]


class Doorbell:
    """Reactive: fires on the events a daemon function reports."""

    id = "doorbell"
    description = "a toy reactive type"
    owner: int | None = None
    max_running = 10

    def __init__(self) -> None:
        self.bound: dict[str, Binding] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return None

    def bind(self, binding: Binding, clock: Clock, out: Any) -> str:
        self.bound[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Any) -> None:
        self.bound.pop(binding.id, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        return [(b, event) for b in self.bound.values()]


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> Core:
    here = __name__
    monkeypatch.setitem(catalog.BUILTIN, "every2", f"{here}:EveryTwoSeconds")  # the one line
    monkeypatch.setitem(catalog.BUILTIN, "doorbell", f"{here}:Doorbell")
    c = Core()
    c.router = Router()
    c.router.start(c.now, WALL)
    c.connect(1)
    c.connect(2)
    c.register(1, "job")
    return c


def test_a_scheduled_type_plugs_in(core: Core) -> None:
    assert reg(core, type="every2", function_id="job", config={})["error"]["code"] == \
        "bad_request"  # its own validation
    assert reg(core, id="t", type="every2", function_id="job",
               config={"label": "x"})["result"]["status"] == "active"
    assert core.router.next_deadline() == pytest.approx(core.now + 2)
    [fired] = invocations(core.advance(2.0))
    assert fired["function_id"] == "job" and fired["data"] == {"label": "x"}


def test_a_reactive_type_plugs_in(core: Core) -> None:
    reg(core, id="d", type="doorbell", function_id="job")
    out: list[tuple[int, Any]] = []
    fired = core.router.triggers.event("doorbell", {"who": "ada"}, core.router.clock, out)
    assert fired == 1
    [(worker, call)] = [(c, m) for c, m in out if not isinstance(m, Emit)]
    assert worker == 1 and call.function_id == "job"


def test_catalog_ids_are_reserved_for_workers(core: Core) -> None:
    for type_id in ("every2", "cron", *catalog.COMING):
        [(_, refused)] = core.send(2, {"type": "registertriggertype", "id": type_id})
        assert refused["code"] == "bad_request" and "reserved" in refused["message"]
    [listed] = [t for t in core.router.triggers.describe_types() if t["id"] == "every2"]
    assert listed["provider"] == "daemon"
