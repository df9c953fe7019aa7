"""``iii daemon start|stop|status|restart|logs`` and ``iii list``."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.helpers import (
    DaemonProcess,
    ThreadDaemon,
    can_connect,
    child_env,
    default_settings_env,
    free_port,
    modules_loaded,
    run_iii,
    wait_for,
)


def test_lifecycle(short_tmp: Path) -> None:
    socket_path = short_tmp / "iii.sock"
    try:
        status = run_iii(short_tmp, "daemon", "status")
        assert status.returncode == 3 and "iii daemon start" in status.stderr

        first = run_iii(short_tmp, "daemon", "start")
        assert first.returncode == 0 and "started" in first.stderr
        assert can_connect(socket_path)
        pid = int((short_tmp / "iii.sock.pid").read_text())

        again = run_iii(short_tmp, "daemon", "start")
        assert again.returncode == 0 and "already running" in again.stderr
        assert f"pid {pid}" in again.stderr

        quiet = run_iii(short_tmp, "daemon", "start", "-q")
        assert (quiet.returncode, quiet.stderr) == (0, "")

        info = json.loads(run_iii(short_tmp, "daemon", "status", "-o", "json").stdout)
        assert info["pid"] == pid and info["socket"] == str(socket_path)
        assert info["uptime_s"] >= 0 and info["workers"] == 0 and info["functions"] == 0
        text = run_iii(short_tmp, "daemon", "status").stdout
        assert f"pid {pid}" in text and "listeners websocket " in text

        logs = run_iii(short_tmp, "daemon", "logs")
        assert logs.returncode == 0 and "listening on" in logs.stdout

        restarted = run_iii(short_tmp, "daemon", "restart")
        assert restarted.returncode == 0
        new_pid = int((short_tmp / "iii.sock.pid").read_text())
        assert new_pid != pid

        # kill -9 leaves the socket file behind; start must replace it.
        os.kill(new_pid, signal.SIGKILL)
        wait_for(lambda: not can_connect(socket_path), message="the daemon to die")
        assert socket_path.exists()
        after_kill = run_iii(short_tmp, "daemon", "start")
        assert after_kill.returncode == 0 and "started" in after_kill.stderr

        stop = run_iii(short_tmp, "daemon", "stop")
        assert stop.returncode == 0 and "stopped" in stop.stderr
        assert not socket_path.exists()
        assert run_iii(short_tmp, "daemon", "status").returncode == 3
        again_stop = run_iii(short_tmp, "daemon", "stop")
        assert again_stop.returncode == 0 and "not running" in again_stop.stderr
    finally:
        run_iii(short_tmp, "daemon", "stop")


def test_start_reports_why_the_daemon_could_not_start(short_tmp: Path) -> None:
    (short_tmp / "iii.sock").write_text("not a socket")
    proc = run_iii(short_tmp, "daemon", "start")
    assert proc.returncode == 1
    assert "exists and is not a socket" in proc.stderr and "Traceback" not in proc.stderr


def test_list_functions_and_workers(daemon: DaemonProcess, math_worker: Any) -> None:
    rows = json.loads(run_iii(daemon.tmp, "list", "functions", "-o", "json").stdout)
    ids = {row["function_id"] for row in rows}
    assert {"math::add", "state::set"} <= ids
    assert not any(i.startswith("engine::") for i in ids)  # the daemon's internals: --all
    everything = json.loads(run_iii(daemon.tmp, "list", "functions", "--all", "-o",
                                    "json").stdout)
    assert {"math::add", "engine::functions::list"} <= {r["function_id"] for r in everything}
    lines = run_iii(daemon.tmp, "list", "functions", "-o", "jsonl").stdout.splitlines()
    assert len(lines) == len(rows) and json.loads(lines[0]) == rows[0]
    table = run_iii(daemon.tmp, "list", "functions", "-o", "table").stdout.splitlines()
    assert table[0].split() == ["FUNCTION", "WORKER", "DESCRIPTION"]
    assert any(line.startswith("math::add") and "math-worker" in line for line in table)
    assert all(len(line) <= 80 for line in table)
    workers = json.loads(run_iii(daemon.tmp, "list", "workers").stdout)  # piped: json
    assert [w["name"] for w in workers] == ["math-worker"]


def test_list_takes_the_fast_path_and_help_goes_to_typer(daemon: DaemonProcess,
                                                         math_worker: Any) -> None:
    """Typed in loops (scripts, watch loops): no typer, no asyncio, no daemon loaded;
    the same output as the typer command."""
    for argv in (["list", "functions", "-o", "json"], ["list", "observers", "--all"],
                 ["list", "triggers", "--output=jsonl"]):
        loaded = modules_loaded(daemon.tmp, argv)
        assert not loaded & {"typer", "click", "asyncio", "textual", "iii_daemon"}, argv
    table = run_iii(daemon.tmp, "list", "functions", "-o", "table")
    assert table.returncode == 0 and table.stdout.split()[:3] == ["FUNCTION", "WORKER",
                                                                  "DESCRIPTION"]
    assert "(daemon)" in table.stdout and "math-worker" in table.stdout
    helped = run_iii(daemon.tmp, "list", "--help")
    assert helped.returncode == 0 and "--all" in helped.stdout
    wrong = run_iii(daemon.tmp, "list", "functions", "-o", "yaml")
    assert wrong.returncode == 2 and "use table, json or jsonl" in wrong.stderr


def test_list_without_a_daemon_exits_3(short_tmp: Path) -> None:
    proc = run_iii(short_tmp, "list", "functions")
    assert proc.returncode == 3 and len(proc.stderr.splitlines()) == 1


def test_unknown_list_kind_is_a_usage_error(short_tmp: Path) -> None:
    assert run_iii(short_tmp, "list", "gizmos").returncode == 2


def test_foreground_stays_attached_and_logs_to_stderr(short_tmp: Path) -> None:
    import subprocess

    from tests.helpers import IIIBIN, child_env

    proc = subprocess.Popen([IIIBIN, "daemon", "start", "--foreground"],
                            stderr=subprocess.PIPE, text=True, env=child_env(short_tmp))
    try:
        assert proc.stderr is not None
        ready = f"listening on {short_tmp / 'iii.sock'}"  # the Unix socket comes up last
        while ready not in (line := proc.stderr.readline()):
            assert line, "the foreground daemon exited"
        assert can_connect(short_tmp / "iii.sock")
        # One rule: running a daemon here (--foreground, python -m iii_daemon) on a live
        # socket is an error, exit 1; `daemon start` (detached) just makes sure one runs.
        again = run_iii(short_tmp, "daemon", "start", "--foreground")
        assert again.returncode == 1 and "already running" in again.stderr
        assert len(again.stderr.splitlines()) == 1
        module = subprocess.run([sys.executable, "-m", "iii_daemon"], capture_output=True,
                                text=True, env=child_env(short_tmp), timeout=30)
        assert module.returncode == 1 and "already running" in module.stderr
        detached = run_iii(short_tmp, "daemon", "start")
        assert detached.returncode == 0 and "already running" in detached.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not (short_tmp / "iii.sock").exists()


def test_list_says_what_it_can_list(short_tmp: Path) -> None:
    proc = run_iii(short_tmp, "list", "bogus")
    assert proc.returncode == 2
    assert proc.stderr == ("iii: cannot list 'bogus': `iii list` lists functions, workers, "
                           "actions, triggers, trigger-types, queues, observers\n")


def test_a_wrong_choice_is_told_what_is_allowed(short_tmp: Path) -> None:
    for args, allowed in ((["list", "functions", "-o", "bogus"], "use table, json or jsonl"),
                          (["daemon", "status", "-o", "bogus"], "use text or json"),
                          (["completions", "bogus"], "use bash, zsh or fish")):
        proc = run_iii(short_tmp, *args)
        assert proc.returncode == 2, args
        assert f"{allowed}, not 'bogus'" in proc.stderr and "Value error" not in proc.stderr


def test_list_actions(daemon: DaemonProcess) -> None:
    from iii_sdk import InitOptions, register_worker

    worker = register_worker(str(daemon.socket_path), InitOptions(worker_name="delayer"))
    try:
        worker.register_action_type("delay", lambda data: {"scheduled": True},
                                    description="runs the call later")
        worker.ping()
        [row] = json.loads(run_iii(daemon.tmp, "list", "actions", "-o", "json").stdout)
        assert row == {"id": "delay", "function_id": "action::delay",
                       "description": "runs the call later", "worker_id": worker.worker_id}
        table = run_iii(daemon.tmp, "list", "actions", "-o", "table").stdout.splitlines()
        assert table[1].split()[:3] == ["delay", "action::delay", "delayer"]
    finally:
        worker.shutdown()


def test_list_register_and_unregister_take_url(daemon: DaemonProcess) -> None:
    url = f"unix://{daemon.socket_path}"
    env = dict(child_env(daemon.tmp), III_SOCKET="/nonexistent/elsewhere.sock")
    made = run_iii(daemon.tmp, "register-trigger", "--type", "subscribe", "--function", "f",
                   "--config", '{"topic": "t"}', "--id", "via-url", "--url", url, "-q",
                   env=env)
    assert made.returncode == 0 and made.stdout.strip() == "via-url"
    listed = run_iii(daemon.tmp, "list", "triggers", "-o", "json", env=dict(env, III_URL=url))
    assert [t["id"] for t in json.loads(listed.stdout)] == ["via-url"]
    assert run_iii(daemon.tmp, "unregister", "via-url", "--url", url, env=env).returncode == 0
    bad = run_iii(daemon.tmp, "list", "functions", "--url", "http://x", env=env)
    assert bad.returncode == 2 and "unsupported URL" in bad.stderr


def test_status_takes_url(short_tmp: Path) -> None:
    """`daemon status --url ws://...` asks this daemon over its WebSocket listener; an
    engine without engine::status (an upstream iii engine) gets one line saying so."""
    import asyncio
    import threading

    from websockets.asyncio.server import serve

    port = free_port()
    daemon = DaemonProcess(short_tmp, "--ws-port", str(port)).start()
    env = dict(child_env(short_tmp), III_SOCKET="/nonexistent/elsewhere.sock")
    try:
        status = run_iii(short_tmp, "daemon", "status", "-o", "json", "--url",
                         f"ws://127.0.0.1:{port}", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    finally:
        daemon.stop()

    async def engine(ws: Any) -> None:  # answers every call as an engine without it
        async for frame in ws:
            message = json.loads(frame)
            if message.get("type") == "invokefunction":
                await ws.send(json.dumps({
                    "type": "invocationresult", "invocation_id": message["invocation_id"],
                    "error": {"code": "function_not_found", "message": "not found"}}))

    other = free_port()
    started, stop = threading.Event(), threading.Event()

    def run() -> None:
        async def main() -> None:
            async with serve(engine, "127.0.0.1", other):
                started.set()
                await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        foreign = run_iii(short_tmp, "daemon", "status", "--url", f"ws://127.0.0.1:{other}",
                          env=env)
        assert foreign.returncode == 3 and "has no engine::status" in foreign.stderr
        assert len(foreign.stderr.strip().splitlines()) == 1
    finally:
        stop.set()
        thread.join(10)


def test_logs_follow_across_rotation(short_tmp: Path) -> None:
    import logging.handlers
    import subprocess
    import threading

    from tests.helpers import IIIBIN, child_env

    log_dir = short_tmp / "log"
    log_dir.mkdir()
    # The daemon's own handler; 20 lines of 19 bytes rotate it once.
    handler = logging.handlers.RotatingFileHandler(log_dir / "daemon.log", maxBytes=300,
                                                   backupCount=2)
    logger = logging.Logger("rotation-test")
    logger.addHandler(handler)
    logger.error("before following")
    follower = subprocess.Popen([IIIBIN, "daemon", "logs", "-f", "-n", "5"],
                                stdout=subprocess.PIPE, text=True, env=child_env(short_tmp))
    seen: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: "before following" in seen, message="the existing lines")
        for i in range(20):
            logger.error("line %02d %s", i, "x" * 10)
        wait_for(lambda: "line 19 xxxxxxxxxx" in seen, message="lines after the rotation")
        assert (log_dir / "daemon.log.1").exists()
        assert [s for s in seen if s.startswith("line")] == [
            f"line {i:02d} xxxxxxxxxx" for i in range(20)]
    finally:
        follower.terminate()
        follower.wait(10)
        handler.close()


def test_fast_paths_with_default_settings_load_no_config_module(short_tmp: Path) -> None:
    """No III_SOCKET, no config file (a new user): the socket path is found without the
    config module (dataclasses, inspect, ast) or platformdirs, and the call works."""
    env = default_settings_env(short_tmp)
    daemon = ThreadDaemon(short_tmp, socket_path=short_tmp / "run" / "iii" / "iii.sock").start()
    try:
        for argv in (["trigger", "engine::status"], ["trigger", "engine::status", "--void"],
                     ["list", "functions", "-o", "json"], ["state", "get", "s", "k"],
                     ["--version"]):
            loaded = modules_loaded(short_tmp, argv, env=env, top_level=False)
            heavy = loaded & {"iii_sdk.config", "platformdirs", "typer", "click", "asyncio",
                              "dataclasses", "inspect", "ast", "iii_daemon"}
            assert not heavy, (argv, heavy)
        version = run_iii(short_tmp, "--version", env=env)
        assert version.returncode == 0 and "(daemon " in version.stdout
        # The daemon, the CLI and the SDK agree on the default paths.
        from iii_sdk import paths

        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            assert paths.resolve_socket_path() == daemon.socket_path
            assert paths.config_file_path() == short_tmp / "home" / ".config" / "iii" / \
                "config.toml"
        finally:
            os.environ.clear()
            os.environ.update(saved)
    finally:
        daemon.stop()
