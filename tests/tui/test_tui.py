"""The TUI driven by Textual's pilot against a real daemon and a worker: every key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_cli.tui.app import DetailScreen, HelpScreen, IIIApp, PayloadScreen
from iii_sdk import III, InvocationError, connect, register_worker
from tests.helpers import REPO, DaemonProcess, ThreadDaemon, wait_for

Check = Callable[[], bool]


class Seen:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.lock = threading.Lock()

    def handler(self, answer: Any = None) -> Callable[[Any], Any]:
        def record(data: Any) -> Any:
            with self.lock:
                self.calls.append(data)
            return answer
        return record


@pytest.fixture
def worker(daemon: DaemonProcess) -> Iterator[tuple[III, Seen]]:
    seen = Seen()
    w = register_worker(str(daemon.socket_path))
    w.register_function("orders::create", seen.handler({"id": 1}))

    def broken(data: Any) -> Any:
        raise ValueError("bad order")

    w.register_function("orders::broken", broken)
    w.ping()
    yield w, seen
    w.shutdown()


async def until(pilot: Any, check: Check, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def log_rows(app: IIIApp) -> list[list[str]]:
    """The log's invocation rows (registrations and the like left out)."""
    table = app.screen_stack[0].query_one("#log")
    rows = [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)]
            for i in range(table.row_count)]
    return [r for r in rows if r[1] in ("ok", "error")]


def header(app: IIIApp) -> str:
    return str(app.screen_stack[0].query_one("#header").render())


def run(daemon: DaemonProcess, scenario: Callable[[IIIApp, Any], Awaitable[None]],
        size: tuple[int, int] = (80, 24)) -> IIIApp:
    app = IIIApp(str(daemon.socket_path))

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.model.state == "connected", "the connection")
            await scenario(app, pilot)

    asyncio.run(main())
    return app


def call(worker: III, function_id: str, payload: Any = None) -> None:
    with contextlib.suppress(InvocationError):
        worker.trigger({"function_id": function_id, "payload": payload})


def test_calls_appear_live_and_the_header_counts(daemon: DaemonProcess,
                                                 worker: tuple[III, Seen]) -> None:
    async def scenario(app: IIIApp, pilot: Any) -> None:
        call(worker[0], "orders::create", {"n": 1})
        await until(pilot, lambda: any("orders::create" in r for r in log_rows(app)),
                    "the call in the log")
        await until(pilot, lambda: "2 functions" in header(app), "the counts")
        assert "connected" in header(app) and str(daemon.socket_path) in header(app)
        functions = app.query_one("#functions")
        await until(pilot, lambda: functions.row_count >= 2, "the functions table")

    run(daemon, scenario)


def test_space_pauses_and_counts_what_is_new(daemon: DaemonProcess,
                                             worker: tuple[III, Seen]) -> None:
    async def scenario(app: IIIApp, pilot: Any) -> None:
        # The worker's registrations are in first: what comes after the pause is ours.
        await until(pilot, lambda: any(e.get("id") == "orders::broken" for e in app.model.events),
                    "the registrations")
        await pilot.press("space")
        call(worker[0], "orders::create", {"n": 1})
        await until(pilot, lambda: app.model.unseen >= 1 and "paused:" in header(app),
                    "the new count")
        assert f"paused: {app.model.unseen} new" in header(app)
        assert not any("orders::create" in r for r in log_rows(app))
        await pilot.press("space")
        assert any("orders::create" in r for r in log_rows(app))
        assert "paused" not in header(app)

    run(daemon, scenario)


def test_e_shows_errors_only_and_slash_filters_by_function(
        daemon: DaemonProcess, worker: tuple[III, Seen]) -> None:
    async def scenario(app: IIIApp, pilot: Any) -> None:
        call(worker[0], "orders::create", {"n": 1})
        call(worker[0], "orders::broken", {"n": 2})
        await until(pilot, lambda: sum("orders::" in " ".join(r) for r in log_rows(app)) >= 2,
                    "both calls")
        await pilot.press("e")
        assert [r[3] for r in log_rows(app) if r[3].startswith("orders")] == \
            ["orders::broken"]
        await pilot.press("e", "slash")
        await pilot.press(*"*create", "enter")
        assert {r[3] for r in log_rows(app)} == {"orders::create"}
        assert "filter *create" in header(app)

    run(daemon, scenario)


def test_enter_opens_the_detail_and_y_copies_and_x_exports(
        daemon: DaemonProcess, worker: tuple[III, Seen], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("III_DATA_DIR", str(tmp_path / "data"))

    async def scenario(app: IIIApp, pilot: Any) -> None:
        call(worker[0], "orders::broken", {"qty": 3})
        await until(pilot, lambda: any("orders::broken" in r for r in log_rows(app)),
                    "the failure")
        app.query_one("#log").focus()
        app.query_one("#log").move_cursor(row=app.query_one("#log").row_count - 1)
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        shown = app.screen.event
        assert shown["error"]["message"] == "ValueError: bad order"
        assert json.loads(shown["payload"]) == {"qty": 3}
        assert "raise ValueError" in shown["stacktrace"]
        assert app.screen.query_one("#stack") and app.screen.query_one("#error")
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)
        await pilot.press("y")
        assert json.loads(app.clipboard)["function_id"] == "orders::broken"
        await pilot.press("x")
        # Into the user's data dir, private, and said where; nothing in the cwd.
        [exported] = list((tmp_path / "data" / "exports").glob("iii-events-*.jsonl"))
        assert exported.stat().st_mode & 0o777 == 0o600
        assert list(tmp_path.glob("iii-events-*")) == []
        assert any(str(exported) in str(n.message) for n in app._notifications)
        assert any(json.loads(line).get("function_id") == "orders::broken"
                   for line in exported.read_text().splitlines())
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        call(worker[0], "orders::create", {"meanwhile": True})  # the log goes on beneath
        await until(pilot, lambda: any("orders::create" in r for r in log_rows(app)),
                    "a row added while the detail is open")
        await pilot.press("escape")

    run(daemon, scenario)


def test_observers_show_in_the_functions_table_the_log_and_the_detail(
        daemon: DaemonProcess, worker: tuple[III, Seen]) -> None:
    w, seen = worker
    w.observe({"function_id": "orders::broken", "on": "error"}, "orders::create",
              {"id": "on-broken"}).ready(5)

    def functions(app: IIIApp) -> dict[str, list[str]]:
        table = app.query_one("#functions")
        rows = [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)]
                for i in range(table.row_count)]
        return {r[0]: r for r in rows}

    async def scenario(app: IIIApp, pilot: Any) -> None:
        await until(pilot, lambda: functions(app).get("orders::broken", [""])[-1] == "1",
                    "the observer count")
        assert functions(app)["orders::create"][-1] == ""
        call(w, "orders::broken", {"qty": 1})
        await until(pilot, lambda: len(seen.calls) == 1, "the activation")
        assert seen.calls[0]["observer_id"] == "on-broken"
        log = app.query_one("#log")

        def texts() -> list[str]:
            return [" ".join(str(getattr(c, "plain", c)) for c in log.get_row_at(i))
                    for i in range(log.row_count)]

        await until(pilot, lambda: any("obs" in t and "on-broken -> orders::create: active"
                                       in t for t in texts()), "the observer's event")
        await until(pilot, lambda: any("orders::broken" in r for r in log_rows(app)),
                    "the failure")
        row = next(i for i in reversed(range(log.row_count))
                   if "orders::broken" in str(log.get_row_at(i)) and "error" in
                   str(log.get_row_at(i)))
        await until(pilot, lambda: [o["fires"] for o in app.model.observers] == [1],
                    "the next poll")
        log.focus()
        log.move_cursor(row=row)
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        shown = str(app.screen.query_one("#observers").render())
        assert "on-broken -> orders::create" in shown and "1 fires" in shown
        await pilot.press("escape")

    run(daemon, scenario, size=(160, 48))


def test_t_triggers_the_selected_function_and_a_runs_an_invocation_again(
        daemon: DaemonProcess, worker: tuple[III, Seen]) -> None:
    seen = worker[1]

    async def scenario(app: IIIApp, pilot: Any) -> None:
        functions = app.query_one("#functions")
        await until(pilot, lambda: functions.row_count >= 2, "the functions")
        rows = [functions.get_row_at(i)[0].plain for i in range(functions.row_count)]
        functions.focus()
        functions.move_cursor(row=rows.index("orders::create"))
        await pilot.press("t")
        assert isinstance(app.screen, PayloadScreen)
        box = app.screen.query_one("#payload-input")
        box.value = '{"from": "tui"}'
        await pilot.press("enter")
        await until(pilot, lambda: {"from": "tui"} in seen.calls, "the triggered call")
        await pilot.press("t")  # the last payload is remembered
        assert app.screen.query_one("#payload-input").value == '{"from": "tui"}'
        await pilot.press("escape")
        await until(pilot, lambda: any("orders::create" in r for r in log_rows(app)),
                    "its invocation")
        log = app.query_one("#log")
        log.focus()
        every = [[str(getattr(c, "plain", c)) for c in log.get_row_at(i)]
                 for i in range(log.row_count)]
        log.move_cursor(row=next(i for i, r in enumerate(every)
                                 if r[3] == "orders::create" and r[1] == "ok"))
        await pilot.press("a")
        await until(pilot, lambda: seen.calls.count({"from": "tui"}) == 2, "the re-run")

    run(daemon, scenario)


def test_views_help_and_quit(daemon: DaemonProcess, worker: tuple[III, Seen]) -> None:
    async def scenario(app: IIIApp, pilot: Any) -> None:
        tabs = app.query_one("#tabs")
        for key, view in (("2", "triggers"), ("3", "workers"), ("4", "queues"),
                          ("1", "live")):
            await pilot.press(key)
            assert tabs.active == view
        await pilot.press("3")
        workers = app.query_one("#workers-table")
        await until(pilot, lambda: workers.row_count >= 1, "the workers view")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = str(app.screen.query_one("#help").render())
        assert "       ?  Help" in shown and "       /  Filter" in shown  # as typed
        assert "question_mark" not in shown and "slash" not in shown
        assert any(b.description == "Redrive" for b in IIIApp.BINDINGS
                   if hasattr(b, "description"))
        await pilot.press("escape")
        await pilot.press("q")

    app = run(daemon, scenario)
    assert app.return_code in (0, None)


def test_r_redrives_the_selected_queues_dead_letters(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text("[queues.jobs]\nmax_retries = 0\n")
    daemon = ThreadDaemon(short_tmp).start()
    w = register_worker(str(daemon.socket_path))
    try:
        def broken(data: Any) -> Any:
            raise ValueError("no")

        w.register_function("jobs::run", broken)
        w.ping()
        w.trigger({"function_id": "jobs::run", "payload": {"n": 1},
                   "action": {"type": "enqueue", "queue": "jobs"}})

        def dead() -> int:
            rows = w.trigger({"function_id": "engine::queues::list"})["queues"]
            return sum(r["dead_letters"] for r in rows)

        async def scenario(app: IIIApp, pilot: Any) -> None:
            await until(pilot, lambda: dead() == 1, "the dead letter")
            await pilot.press("4")
            queues = app.query_one("#queues-table")
            await until(pilot, lambda: queues.row_count == 1, "the queue row")
            await pilot.press("r")  # it goes again, and (max_retries 0) dies again
            await until(pilot, lambda: len([e for e in app.model.events
                                            if e.get("event") == "queue.dead_letter"]) >= 2,
                        "the redriven letter to fail again")

        run(daemon, scenario)
    finally:
        w.shutdown()
        daemon.stop()


def test_it_reconnects_when_the_daemon_restarts(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp).start()

    async def scenario(app: IIIApp, pilot: Any) -> None:
        daemon.stop()
        await until(pilot, lambda: app.model.state == "reconnecting", "the daemon to be gone")
        assert "retrying" in header(app)
        daemon.start()
        await until(pilot, lambda: app.model.state == "connected", "the reconnect", timeout=15)

    try:
        run(daemon, scenario)
    finally:
        if daemon.alive:
            daemon.stop()


def test_the_command_palette_runs_the_same_actions(daemon: DaemonProcess,
                                                   worker: tuple[III, Seen]) -> None:
    async def scenario(app: IIIApp, pilot: Any) -> None:
        await pilot.press("ctrl+p")
        await pilot.press(*"errors")
        await until(pilot, lambda: app.screen.query_one("CommandList").option_count > 0,
                    "the palette's matches")
        await pilot.press("enter")
        await until(pilot, lambda: app.model.errors_only, "errors only, from the palette")

    run(daemon, scenario)


def test_a_flood_shows_a_sample_and_says_so(daemon: DaemonProcess, worker: tuple[III, Seen],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its rate the daemon sends the TUI a sample; the header says how many it left
    out, and every failure still shows."""
    import iii_cli.tui.app as tui

    monkeypatch.setattr(tui, "SAMPLE_PER_S", 5)

    async def scenario(app: IIIApp, pilot: Any) -> None:
        for i in range(200):
            worker[0].trigger({"function_id": "orders::create", "payload": {"n": i},
                               "action": {"type": "void"}})
        call(worker[0], "orders::broken", {"qty": 1})
        await until(pilot, lambda: "left out)" in header(app), "the sample in the header")
        await until(pilot, lambda: any("orders::broken" in r for r in log_rows(app)),
                    "the failure, never left out")
        assert len([r for r in log_rows(app) if "orders::create" in r]) < 200

    run(daemon, scenario)


def test_the_tui_over_websocket(short_tmp: Path) -> None:
    """``iii tui --url ws://...``: the same dashboard over the daemon's WebSocket."""
    from tests.helpers import free_port

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    worker = register_worker(str(daemon.socket_path))
    try:
        worker.register_function("orders::create", lambda data: {"id": 1})
        worker.ping()
        app = IIIApp(f"ws://127.0.0.1:{port}")

        async def main() -> None:
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.model.state == "connected", "the connection")
                call(worker, "orders::create", {"over": "ws"})
                await until(pilot, lambda: any("orders::create" in r for r in log_rows(app)),
                            "the call in the log")
                functions = app.query_one("#functions")
                await until(pilot, lambda: functions.row_count >= 1, "the functions table")
                assert "ws://127.0.0.1" in header(app)

        asyncio.run(main())
    finally:
        worker.shutdown()
        daemon.stop()


def test_f_fires_the_selected_trigger_by_hand(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp).start()
    w = register_worker(str(daemon.socket_path))
    seen: list[Any] = []
    try:
        w.register_function("jobs::nightly", lambda data: seen.append(data) or "done")
        w.register_trigger({"type": "cron", "function_id": "jobs::nightly", "id": "nightly",
                            "config": {"expression": "0 0 3 * * *"}})
        w.ping()

        async def scenario(app: IIIApp, pilot: Any) -> None:
            await pilot.press("2")
            table = app.query_one("#triggers-table")
            await until(pilot, lambda: table.row_count == 1, "the trigger row")
            await pilot.press("f")
            await until(pilot, lambda: len(seen) == 1, "the function to run")
            assert seen[0]["job_id"] == "nightly" and seen[0]["trigger"] == "cron"
            await until(pilot, lambda: any("fired nightly" in str(n.message)
                                           for n in app._notifications), "the notice")
            await until(pilot, lambda: any(e.get("event") == "trigger.fired"
                                           and e.get("source") == "manual"
                                           for e in app.model.events), "the manual firing")

        run(daemon, scenario)
    finally:
        w.shutdown()
        daemon.stop()


def test_the_workers_view_shows_managed_workers_and_R_restarts_one(short_tmp: Path) -> None:
    import tomli_w

    (short_tmp / "config.toml").write_text(tomli_w.dumps({"workers": [{
        "name": "math", "command": [sys.executable, str(REPO / "examples" / "math_worker.py")]}]}))
    daemon = ThreadDaemon(short_tmp).start()
    client = connect(str(daemon.socket_path))

    def managed() -> dict[str, Any]:
        rows = client.trigger({"function_id": "engine::managed::list", "payload": {}})
        return dict(rows["workers"][0])

    try:
        first = wait_for(lambda: (row := managed())["connections"] and row)

        async def scenario(app: IIIApp, pilot: Any) -> None:
            await pilot.press("3")
            table = app.query_one("#workers-table")
            await until(pilot, lambda: table.row_count == 1, "the worker row")
            row = [str(cell) for cell in table.get_row_at(0)]
            assert row[0] == "math" and row[-1] == "math (running)"
            await pilot.press("R")
            await until(pilot, lambda: any("restarted math" in str(n.message)
                                           for n in app._notifications), "the notice")

        run(daemon, scenario)
        again = wait_for(lambda: (row := managed())["connections"] and row)
        assert again["pid"] != first["pid"] and again["restarts"] == 1
    finally:
        client.shutdown()
        daemon.stop()


def test_the_log_shows_stream_clients_joining_and_leaving(short_tmp: Path) -> None:
    from websockets.sync.client import connect as ws_connect

    from tests.helpers import free_port

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--streams-port", str(port)).start()

    def rows(app: IIIApp) -> list[list[str]]:
        table = app.screen_stack[0].query_one("#log")
        return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)]
                for i in range(table.row_count)]

    def join_and_leave() -> None:
        with ws_connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send(json.dumps({"type": "join", "data": {
                "subscriptionId": "s1", "streamName": "todo", "groupId": "inbox"}}))
            assert json.loads(ws.recv(10))["event"]["type"] == "sync"

    async def scenario(app: IIIApp, pilot: Any) -> None:
        await asyncio.to_thread(join_and_leave)
        await until(pilot, lambda: [r[1] for r in rows(app) if "todo/inbox" in r[-1]]
                    == ["join", "left"], "the join and the leave in the log")
        assert any("s1 from 127.0.0.1:" in r[-1] for r in rows(app))

    try:
        run(daemon, scenario, size=(120, 24))
    finally:
        daemon.stop()
