"""Triggers from the command line alone (issue: cron, state, publish, condition, restart)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iii_sdk import III
from tests.helpers import DaemonProcess, run_iii, spawn_worker, wait_for


def iii(tmp: Path, *args: str) -> Any:
    proc = run_iii(tmp, *args)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def finished(tmp: Path, trigger_id: str) -> list[dict[str, Any]]:
    events = iii(tmp, "trigger", "engine::events::list", "event=invocation.finished",
                 "limit=1000")["events"]
    return [e for e in events if e.get("trigger_id") == trigger_id]  # calls have none


def test_from_the_cli_alone(short_tmp: Path) -> None:
    tmp = short_tmp
    try:
        assert run_iii(tmp, "daemon", "start").returncode == 0
        worker = spawn_worker(tmp)

        cron = run_iii(tmp, "register-trigger", "--type", "cron", "--function", "math::echo",
                       "--config", '{"expression": "* * * * * *"}')
        assert cron.returncode == 0 and cron.stderr == ""
        cron_id = cron.stdout.strip()
        assert cron_id and "\n" not in cron_id  # only the id: id=$(iii register-trigger ...)

        state = run_iii(tmp, "register-trigger", "--type", "state", "--function",
                        "math::echo", "--config", '{"scope": "orders"}', "--id", "on-order")
        assert state.stdout == "on-order\n"
        news = run_iii(tmp, "register-trigger", "--type", "subscribe", "--function",
                       "math::echo", "--config", '{"topic": "news"}', "--condition",
                       "math::is_positive", "--id", "news")
        assert news.stdout == "news\n"

        wait_for(lambda: finished(tmp, cron_id), timeout=5, message="the cron trigger")
        iii(tmp, "trigger", "state::set", "scope=orders", "key=o1", "value=3")
        wait_for(lambda: finished(tmp, "on-order"), message="the state trigger")
        assert iii(tmp, "trigger", "publish", "topic=news", 'data={"n": 1}') == {
            "subscribers": 1}
        iii(tmp, "trigger", "publish", "topic=news", 'data={"n": 0}')
        wait_for(lambda: len(finished(tmp, "news")) == 1, message="the gated trigger")
        wait_for(lambda: iii(tmp, "trigger", "engine::events::list",
                             "event=trigger.skipped")["events"], message="the skip")
        skipped = iii(tmp, "trigger", "engine::events::list", "event=trigger.skipped")
        assert skipped["events"][0]["trigger_id"] == "news"
        assert "returned false" in skipped["events"][0]["reason"]

        listed = {t["id"]: t for t in iii(tmp, "list", "triggers", "-o", "json")}
        assert set(listed) == {cron_id, "on-order", "news"}
        assert all(t["owner"] == "daemon" and t["status"] == "active"
                   for t in listed.values())
        assert listed["news"]["config"]["condition_function_id"] == "math::is_positive"

        worker.terminate()
        worker.wait(10)
        assert run_iii(tmp, "daemon", "restart").returncode == 0
        again = {t["id"] for t in iii(tmp, "list", "triggers", "-o", "json")}
        assert again == {cron_id, "on-order", "news"}
        assert iii(tmp, "trigger", "state::get", "scope=orders", "key=o1") == 3

        assert run_iii(tmp, "unregister", "on-order").returncode == 0
        gone = run_iii(tmp, "unregister", "on-order")
        assert gone.returncode == 4 and "no trigger 'on-order'" in gone.stderr
    finally:
        run_iii(tmp, "daemon", "stop")


def test_register_trigger_warns_about_what_is_missing(daemon: DaemonProcess) -> None:
    proc = run_iii(daemon.tmp, "register-trigger", "--type", "subscribe", "--function",
                   "not::yet", "--config", '{"topic": "t"}')
    assert proc.returncode == 0 and proc.stdout.strip().startswith("trg-")
    assert "function 'not::yet' is not registered yet" in proc.stderr
    pending = run_iii(daemon.tmp, "register-trigger", "--type", "webhook", "--function",
                      "not::yet", "--allow-pending", "-q")
    assert pending.returncode == 0 and pending.stderr == ""


def test_a_mistyped_trigger_type_is_caught(daemon: DaemonProcess, sdk_worker: III) -> None:
    typo = run_iii(daemon.tmp, "register-trigger", "--type", "crom", "--function", "f",
                   "--config", '{"expression": "* * * * * *"}')
    assert typo.returncode == 2, typo.stderr
    assert typo.stderr.startswith("iii: unknown trigger type 'crom' (did you mean cron?)")
    assert "--allow-pending" in typo.stderr
    listed = run_iii(daemon.tmp, "list", "triggers", "-o", "json")
    assert json.loads(listed.stdout) == []  # nothing was stored
    # A type a worker provides is known.
    sdk_worker.register_trigger_type("webhook", "hooks", Hooks())
    sdk_worker.ping()
    ok = run_iii(daemon.tmp, "register-trigger", "--type", "webhook", "--function", "f", "-q")
    assert ok.returncode == 0, ok.stderr


class Hooks:
    def register_trigger(self, trigger: Any) -> None:
        pass

    def unregister_trigger(self, trigger: Any) -> None:
        pass


def test_register_trigger_errors(daemon: DaemonProcess) -> None:
    bad_cron = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                       "--config", '{"expression": "every now and then"}')
    assert bad_cron.returncode == 2  # a bad request: nothing was stored
    assert bad_cron.stderr.startswith("iii: engine::register_trigger: invalid cron expression")
    # The field is named as the user wrote it (croniter's message shows its own order).
    hour = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                   "--config", '{"expression": "0 0 25 * * *"}')
    assert hour.returncode == 2 and "the hour field '25' is not valid (0-23)" in hour.stderr
    minute = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                     "--config", '{"expression": "61 * * * *"}')
    assert "the minute field '61' is not valid (0-59)" in minute.stderr
    never = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                    "--config", '{"expression": "0 0 0 30 2 *"}')
    assert never.returncode == 2
    assert "'0 0 0 30 2 *' never fires" in never.stderr
    bad_json = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                       "--config", "{nope")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    missing = run_iii(daemon.tmp, "register-trigger", "--function", "f")
    assert missing.returncode == 2


def test_list_trigger_types(daemon: DaemonProcess) -> None:
    assert run_iii(daemon.tmp, "register-trigger", "--type", "webhook", "--function", "f",
                   "--allow-pending", "-q").returncode == 0
    rows = {t["id"]: t for t in iii(daemon.tmp, "list", "trigger-types", "-o", "json")}
    assert {"cron", "state", "subscribe", "webhook"} <= set(rows)
    assert rows["cron"]["provider"] == "daemon"
    assert rows["webhook"]["provider"] is None and rows["webhook"]["trigger_count"] == 1
    table = run_iii(daemon.tmp, "list", "trigger-types", "-o", "table").stdout
    assert "(nobody)" in table and "(daemon)" in table


def test_register_trigger_config_forms_and_replace(daemon: DaemonProcess,
                                                   tmp_path: Path) -> None:
    config = tmp_path / "cron.json"
    config.write_text('{"expression": "0 0 * * * *"}')
    from_file = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                        "--config", f"@{config}", "--id", "hourly", "-q")
    assert from_file.returncode == 0 and from_file.stdout == "hourly\n"
    from_stdin = run_iii(daemon.tmp, "register-trigger", "--type", "subscribe", "--function",
                         "f", "--config", "-", "--id", "news", "-q", stdin='{"topic": "n"}')
    assert from_stdin.returncode == 0, from_stdin.stderr
    # The same id for something else is refused, and nothing changes...
    taken = run_iii(daemon.tmp, "register-trigger", "--type", "subscribe", "--function", "g",
                    "--config", '{"topic": "other"}', "--id", "news", "-q")
    assert taken.returncode == 2 and "already exists (subscribe -> f)" in taken.stderr
    assert "--replace" in taken.stderr
    listed = {t["id"]: t for t in iii(daemon.tmp, "list", "triggers", "-o", "json")}
    assert listed["news"]["function_id"] == "f"
    # ...unless asked.
    assert run_iii(daemon.tmp, "register-trigger", "--type", "subscribe", "--function", "g",
                   "--config", '{"topic": "other"}', "--id", "news", "--replace",
                   "-q").returncode == 0
    listed = {t["id"]: t for t in iii(daemon.tmp, "list", "triggers", "-o", "json")}
    assert listed["news"]["function_id"] == "g"


def test_fire_a_trigger_by_hand(daemon: DaemonProcess, math_worker: Any) -> None:
    def register(*args: str) -> None:
        proc = run_iii(daemon.tmp, "register-trigger", *args, "-q")
        assert proc.returncode == 0, proc.stderr

    register("--type", "cron", "--function", "math::echo", "--id", "yearly",
             "--config", '{"expression": "0 0 0 1 1 *"}')
    fired = run_iii(daemon.tmp, "fire", "yearly")
    assert fired.returncode == 0, fired.stderr
    data = json.loads(fired.stdout)["data"]  # what a tick gives, scheduled now
    assert data["trigger"] == "cron" and data["job_id"] == "yearly"
    assert data["scheduled_time"].startswith(str(datetime.now(UTC).year))

    register("--type", "state", "--function", "math::echo", "--id", "gated",
             "--config", '{"scope": "s"}', "--condition", "math::is_positive")
    no = run_iii(daemon.tmp, "fire", "gated", "--json", '{"n": -1}')
    assert no.returncode == 1 and "trigger_skipped" in no.stderr
    assert "condition 'math::is_positive' returned false" in no.stderr
    yes = run_iii(daemon.tmp, "fire", "gated", "--json", '{"n": 2}')
    assert yes.returncode == 0 and json.loads(yes.stdout)["data"] == {"n": 2}
    forced = run_iii(daemon.tmp, "fire", "gated", "--json", '{"n": -1}', "--skip-condition")
    assert forced.returncode == 0 and json.loads(forced.stdout)["data"] == {"n": -1}

    unknown = run_iii(daemon.tmp, "fire", "nope")
    assert unknown.returncode == 4 and "no trigger 'nope'" in unknown.stderr

    events = json.loads(run_iii(daemon.tmp, "trigger", "engine::events::list",
                                "event=trigger.fired").stdout)["events"]
    assert [e["trigger_id"] for e in events if e.get("source") == "manual"] == [
        "yearly", "gated", "gated"]
    finished = json.loads(run_iii(daemon.tmp, "trigger", "engine::events::list",
                                  "event=invocation.finished").stdout)["events"]
    assert {e["function_id"] for e in finished if e.get("source") == "manual"} == {
        "math::echo", "math::is_positive"}
