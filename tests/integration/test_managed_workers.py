"""Managed workers against a real daemon, with real child processes: supervision and
backoff, stopping whole process groups, the daemon's own stop and death, logs, bad
input, and who may ask."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import connect
from iii_sdk.errors import InvocationError
from tests.helpers import (
    REPO,
    DaemonProcess,
    ThreadDaemon,
    child_env,
    free_port,
    run_iii,
    wait_for,
)

MATH = [sys.executable, str(REPO / "examples" / "math_worker.py")]
#: Exits at once with the code it is given.
FAILING = "import sys; sys.exit(int(sys.argv[1]))"
#: Ignores SIGTERM, and so does the child it forks; both pids go to a file.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {child}")
print("stubborn up", flush=True)
while True:
    time.sleep(1)
"""
#: Writes to stdout as fast as it can.
FLOOD = "import sys\nline = b'x' * 1023 + b'\\n'\nwhile True:\n    sys.stdout.buffer.write(line)\n"


def config(tmp: Path, *entries: dict[str, Any]) -> None:
    import tomli_w

    (tmp / "config.toml").write_text(tomli_w.dumps({"workers": list(entries)}))


def managed(tmp: Path) -> dict[str, dict[str, Any]]:
    with connect(str(tmp / "iii.sock")) as client:
        rows = client.trigger({"function_id": "engine::managed::list", "payload": {}})
    return {row["name"]: row for row in rows["workers"]}


def add_works(tmp: Path) -> bool:
    try:
        with connect(str(tmp / "iii.sock")) as client:
            return bool(client.trigger({"function_id": "math::add",
                                        "payload": {"a": 1, "b": 2}})
                        == {"sum": 3})
    except InvocationError:
        return False


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"  # a zombie nobody reaped yet is gone too


@pytest.fixture
def tmp(short_tmp: Path) -> Iterator[Path]:
    yield short_tmp


def test_a_killed_worker_comes_back_and_serves_again(tmp: Path) -> None:
    """From the config file: started with the daemon, III_SOCKET given; kill -9 -> back
    after the first backoff (1 s) and serving."""
    config(tmp, {"name": "math", "command": MATH})
    daemon = ThreadDaemon(tmp).start()
    try:
        wait_for(lambda: add_works(tmp), message="the managed worker to serve")
        first = managed(tmp)["math"]
        assert first["status"] == "running" and "math::add" in first["functions"]
        with connect(str(tmp / "iii.sock")) as client:
            [worker] = client.trigger({"function_id": "engine::workers::list",
                                       "payload": {}})["workers"]
        # The worker's own process (its lifeline's child), as `kill -9 PID` from ps.
        assert worker["managed"] == "math" and worker["pid"] != first["pid"]
        killed_at = time.monotonic()
        os.kill(worker["pid"], signal.SIGKILL)
        row = wait_for(lambda: (r := managed(tmp)["math"])["last_exit"] == -9 and r,
                       message="the exit to be seen")
        assert row["restarts"] == 0 and row["status"] in ("backoff", "starting")
        wait_for(lambda: managed(tmp)["math"]["pid"] not in (None, first["pid"])
                 and add_works(tmp), timeout=10, message="the worker back, serving")
        back_after = time.monotonic() - killed_at
        row = managed(tmp)["math"]
        assert row["restarts"] == 1 and row["last_exit"] == -9
        print(f"served again {back_after:.2f} s after kill -9")
        listed = run_iii(tmp, "list", "workers", "-o", "json")
        assert [(w["managed"], w["managed_status"]) for w in json.loads(listed.stdout)] \
            == [("math", "running")]
        table = run_iii(tmp, "worker", "list", "-o", "table").stdout
        assert "math" in table and "running" in table and "math::add" in table
        # The crash and the restart are events (iii watch, the TUI's log), the crash a
        # failure (--errors).
        with connect(str(tmp / "iii.sock")) as client:
            events = client.trigger({"function_id": "engine::events::list",
                                     "payload": {}})["events"]
        exited = [e for e in events if e["event"] == "managed.exited"]
        started = [e for e in events if e["event"] == "managed.started"]
        assert [(e["code"], e["error"]["code"], e["restart_in_s"]) for e in exited] == [
            (-9, "worker_exited", 1.0)]
        assert [e["restarts"] for e in started] == [0, 1]
    finally:
        daemon.stop()


def test_a_failing_worker_backs_off_and_never_means_exited(tmp: Path) -> None:
    config(tmp, {"name": "flaky", "command": [sys.executable, "-c", FAILING, "1"]},
           {"name": "once", "command": [sys.executable, "-c", FAILING, "3"],
            "restart": "never"})
    daemon = ThreadDaemon(tmp).start()
    try:
        row = wait_for(lambda: (r := managed(tmp)["flaky"])["status"] == "backoff" and r)
        assert row["last_exit"] == 1 and 0 < row["next_start_in_s"] <= 1.0
        row = wait_for(lambda: (r := managed(tmp)["flaky"])["restarts"] >= 1
                       and r["status"] == "backoff" and r)
        assert 1.0 < row["next_start_in_s"] <= 2.0  # doubled
        assert wait_for(lambda: managed(tmp)["once"]["status"] == "exited 3")
        listed = run_iii(tmp, "worker", "list", "-o", "json")
        rows = {r["name"]: r for r in json.loads(listed.stdout)}
        assert rows["once"]["next_start_at"] is None and rows["flaky"]["next_start_at"]
        log = (tmp / "log" / "workers" / "flaky.log").read_text()
        assert "exited with code 1; restarting in 1 s" in log
        assert "exited with code 1; restarting in 2 s" in log
    finally:
        daemon.stop()


def test_stop_takes_the_whole_group_after_the_grace(tmp: Path) -> None:
    pids = tmp / "pids"
    config(tmp, {"name": "stubborn", "command": [sys.executable, "-c", STUBBORN, str(pids)],
                 "stop_grace_ms": 300})
    daemon = ThreadDaemon(tmp).start()
    try:
        parent, child = map(int, wait_for(lambda: pids.exists() and pids.read_text()
                                          ).split())
        started = time.monotonic()
        stopped = run_iii(tmp, "worker", "stop", "stubborn")
        took = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stderr
        assert "stubborn: stopped" in stopped.stderr
        assert took >= 0.3  # SIGTERM was ignored: SIGKILL after the grace
        assert gone(parent)
        wait_for(lambda: gone(child), timeout=5, message="the forked child to go too")
        assert managed(tmp)["stubborn"]["status"] == "stopped"
        log = (tmp / "log" / "workers" / "stubborn.log").read_text()
        assert "did not stop within its grace: SIGKILL" in log
        assert "stopped (signal 9)" in log
        started_again = run_iii(tmp, "worker", "start", "stubborn")
        assert started_again.returncode == 0 and "starting" in started_again.stderr
        assert run_iii(tmp, "worker", "stop", "nope").returncode == 4
    finally:
        daemon.stop()


@pytest.mark.daemon_process
def test_the_daemon_stops_its_workers_and_its_death_leaves_none(tmp: Path) -> None:
    pids = tmp / "pids"
    config(tmp, {"name": "math", "command": MATH},
           {"name": "stubborn", "command": [sys.executable, "-c", STUBBORN, str(pids)],
            "stop_grace_ms": 200})
    daemon = DaemonProcess(tmp).start()
    wait_for(lambda: add_works(tmp) and pids.exists() and pids.read_text())
    parent, child = map(int, pids.read_text().split())
    math_pid = managed(tmp)["math"]["pid"]
    assert daemon.stop() == 0  # SIGTERM: every managed worker is stopped first
    assert gone(math_pid) and gone(parent) and gone(child)

    pids.unlink()
    daemon = DaemonProcess(tmp).start()  # the config's workers start again
    wait_for(lambda: add_works(tmp) and pids.exists() and pids.read_text())
    parent, child = map(int, pids.read_text().split())
    math_pid = managed(tmp)["math"]["pid"]
    daemon.kill()  # kill -9: each lifeline hears of it (PR_SET_PDEATHSIG), its group goes
    wait_for(lambda: gone(math_pid) and gone(parent) and gone(child), timeout=5,
             message="the workers of a killed daemon, and what they forked, to go")

    pids.unlink()
    daemon = DaemonProcess(tmp).start()
    try:
        wait_for(lambda: add_works(tmp) and pids.exists(), message="workers started again")
    finally:
        daemon.stop()

def test_logs_are_capped_marked_and_followed(tmp: Path) -> None:
    config(tmp, {"name": "flood", "command": [sys.executable, "-c", FLOOD]},
           {"name": "math", "command": MATH})
    daemon = ThreadDaemon(tmp).start()
    logs = tmp / "log" / "workers"
    follower = None
    try:
        wait_for(lambda: add_works(tmp))
        # More than the cap of three files has gone through: the oldest were dropped.
        wait_for(lambda: (logs / "flood.log.2").exists() and
                 (logs / "flood.log.2").stat().st_size >= 4 * 1024 * 1024, timeout=20)
        for _ in range(20):  # the daemon routes meanwhile
            assert add_works(tmp)
        run_iii(tmp, "worker", "stop", "flood")
        # A rotation leaves two files for a moment (the current one moved, the new one
        # not made yet); then there are three again, never more.
        def three_files() -> list[int] | None:
            sizes = [p.stat().st_size for p in logs.glob("flood.log*")]
            assert len(sizes) <= 3
            return sizes if len(sizes) == 3 else None

        assert max(wait_for(three_files)) <= 4 * 1024 * 1024

        follower = subprocess.Popen([sys.executable, "-m", "iii_cli", "worker", "logs",
                                     "math", "-f", "-n", "5"], stdout=subprocess.PIPE,
                                    text=True, env=child_env(tmp), cwd=REPO)
        assert follower.stdout is not None
        assert "started: pid" in follower.stdout.readline()
        restarted = run_iii(tmp, "worker", "restart", "math")
        assert restarted.returncode == 0, restarted.stderr
        seen = []
        while not any("started: pid" in line for line in seen[1:]):
            seen.append(follower.stdout.readline())
        assert any("stopped (code 0)" in line for line in seen)
        tail = run_iii(tmp, "worker", "logs", "math", "-n", "1")
        assert tail.returncode == 0 and tail.stdout.count("\n") == 1
        assert run_iii(tmp, "worker", "logs", "nope").returncode == 4
    finally:
        if follower is not None:
            follower.kill()
            follower.wait()
        daemon.stop()


def test_bad_input_is_one_line_exit_2_and_nothing_stored(tmp: Path) -> None:
    daemon = ThreadDaemon(tmp).start()
    try:
        added = run_iii(tmp, "worker", "add", "math", "--env", "A=1", "--", *MATH)
        assert added.returncode == 0, added.stderr
        before = (tmp / "config.toml").read_bytes()
        for args, expected in [
            (["nope", "--", "no-such-program-here"], "no such program: no-such-program"),
            (["nope", "--cwd", str(tmp / "missing"), "--", "python"], "no such directory"),
            (["math", "--", *MATH], "a worker named 'math' is in"),
            (["bad\x1bname", "--", "python"], "worker name 'bad\\x1bname' is not valid"),
            (["nope", "--restart", "sometimes", "--", "python"], "'restart' must be"),
            (["nope", "--env", "novalue", "--", "python"], "--env takes K=V"),
        ]:
            result = run_iii(tmp, "worker", "add", *args)
            assert result.returncode == 2, (args, result.stderr)
            assert expected in result.stderr and result.stderr.count("\n") == 1
            assert "Traceback" not in result.stderr
        assert (tmp / "config.toml").read_bytes() == before
        assert set(managed(tmp)) == {"math"}
        removed = run_iii(tmp, "worker", "remove", "math")
        assert removed.returncode == 0 and managed(tmp) == {}
        assert run_iii(tmp, "worker", "remove", "math").returncode == 4
    finally:
        daemon.stop()


def test_only_the_unix_socket_may_manage_workers(tmp: Path) -> None:
    """A WebSocket client (with the token) and an http trigger bound to the daemon's
    function are refused: starting a process is running a command as the user."""
    port, http_port = free_port(), free_port()
    (tmp / "config.toml").write_text('[websocket]\ntoken = "s3cret"\n')
    daemon = ThreadDaemon(tmp, "--ws-port", str(port), "--http-port", str(http_port)).start()
    entry = {"name": "evil", "command": ["touch", str(tmp / "pwned")]}
    try:
        os.environ["III_TOKEN"] = "s3cret"
        with connect(f"ws://127.0.0.1:{port}") as ws_client:
            for function_id, data in [("engine::managed::add", entry),
                                      ("engine::managed::list", {}),
                                      ("engine::managed::stop", {"name": "evil"})]:
                with pytest.raises(InvocationError) as refused:
                    ws_client.trigger({"function_id": function_id, "payload": data})
                assert refused.value.code == "FORBIDDEN"
        bound = run_iii(tmp, "register-trigger", "--type", "http", "--function",
                        "engine::managed::add", "--config",
                        '{"api_path": "add", "http_method": "POST"}')
        assert bound.returncode == 0, bound.stderr
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        conn.request("POST", "/add", json.dumps(entry), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        # A function's failure is a 500 with its message (the code stays in the log).
        assert reply.status == 500 and b"Unix socket only" in reply.read()
        assert managed(tmp) == {} and not (tmp / "pwned").exists()
    finally:
        os.environ.pop("III_TOKEN", None)
        daemon.stop()
