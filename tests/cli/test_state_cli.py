"""``iii state …`` and ``iii stream …``: thin shortcuts for ``iii trigger``, with its
output and exit codes, against a real daemon."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import DaemonProcess, modules_loaded, run_iii


def iii(daemon: DaemonProcess, *args: str, stdin: str | None = None) -> Any:
    proc = run_iii(daemon.tmp, *args, stdin=stdin)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_state_shortcuts(daemon: DaemonProcess) -> None:
    assert iii(daemon, "state", "set", "orders", "o1", '{"n": 1}') == {
        "old_value": None, "new_value": {"n": 1}}
    assert iii(daemon, "state", "set", "orders", "o2", "bare words") == {
        "old_value": None, "new_value": "bare words"}
    assert iii(daemon, "state", "set", "orders", "o3", "-", stdin="[1, 2]")["new_value"] == [
        1, 2]
    assert iii(daemon, "state", "update", "orders", "o1",
               '[{"type": "increment", "path": "n", "by": 2}]') == {
        "old_value": {"n": 1}, "new_value": {"n": 3}}
    assert iii(daemon, "state", "get", "orders", "o1") == {"n": 3}
    assert iii(daemon, "state", "list", "orders") == [{"n": 3}, "bare words", [1, 2]]
    assert iii(daemon, "state", "groups") == {"groups": ["orders"]}
    assert iii(daemon, "state", "delete", "orders", "o2") == {"old_value": "bare words"}
    # What iii trigger says for the same call, to the byte.
    same = run_iii(daemon.tmp, "trigger", "state::get", "scope=orders", "key=o1")
    assert run_iii(daemon.tmp, "state", "get", "orders", "o1").stdout == same.stdout


def test_stream_shortcuts(daemon: DaemonProcess) -> None:
    assert iii(daemon, "stream", "set", "todo", "inbox", "t1", '{"title": "milk"}') == {
        "old_value": None, "new_value": {"title": "milk"}}
    assert iii(daemon, "stream", "update", "todo", "inbox", "t1",
               '[{"type": "set", "path": "done", "value": true}]')["new_value"] == {
        "title": "milk", "done": True}
    assert iii(daemon, "stream", "get", "todo", "inbox", "t1") == {"title": "milk",
                                                                 "done": True}
    assert iii(daemon, "stream", "list", "todo", "inbox") == [{"title": "milk", "done": True}]
    assert iii(daemon, "stream", "groups", "todo") == ["inbox"]
    assert iii(daemon, "stream", "send", "todo", "inbox", "typing", '{"who": "ann"}',
               "--id", "t1") is None
    assert iii(daemon, "stream", "delete", "todo", "inbox", "t1") == {
        "old_value": {"title": "milk", "done": True}}


def test_errors_exit_as_iii_trigger_does(daemon: DaemonProcess) -> None:
    bad = run_iii(daemon.tmp, "state", "update", "s", "k", '[{"type": "explode"}]')
    assert bad.returncode == 2 and json.loads(bad.stderr)["code"] == "bad_request"
    assert "unknown type 'explode'" in bad.stderr
    missing = run_iii(daemon.tmp, "state", "set", "s", "k", "@/no/such/file")
    assert missing.returncode == 2 and "cannot read /no/such/file" in missing.stderr
    assert "Traceback" not in missing.stderr
    daemon.stop()
    gone = run_iii(daemon.tmp, "state", "get", "s", "k")
    assert gone.returncode == 3 and "Traceback" not in gone.stderr


def test_the_shortcuts_take_the_fast_path(daemon: DaemonProcess) -> None:
    """Typed in loops like iii trigger: no typer, no asyncio, no daemon imported."""
    loaded = modules_loaded(daemon.tmp, ["stream", "send", "todo", "g", "typing",
                                         '{"a": 1}', "--id=t1", "-o", "json"])
    assert not loaded & {"typer", "click", "asyncio", "textual", "iii_daemon", "websockets"}


def test_help_and_mistakes_go_to_typer(daemon: DaemonProcess) -> None:
    helped = run_iii(daemon.tmp, "state", "set", "--help")
    assert helped.returncode == 0 and "VALUE" in helped.stdout
    few = run_iii(daemon.tmp, "state", "get", "only-scope")
    assert few.returncode == 2 and "Missing argument" in few.stderr
    unknown = run_iii(daemon.tmp, "stream", "get", "s", "g", "i", "--frobnicate")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr
    # A value that starts with a dash goes after --, as with typer.
    assert iii(daemon, "state", "set", "s", "neg", "--", "-5")["new_value"] == -5
    assert iii(daemon, "state", "get", "s", "neg", "--socket", str(daemon.socket_path)) == -5
