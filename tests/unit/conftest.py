from __future__ import annotations

import math

import pytest


@pytest.fixture(autouse=True)
def _turns_by_frame_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub's turn also ends after TURN_BUDGET_S of work, which depends on the machine's
    load: unit tests that count frames per turn would pass or fail with it. The test of
    the budget itself sets it."""
    from iii_daemon.drivers import hub

    monkeypatch.setattr(hub, "TURN_BUDGET_S", math.inf)
