"""``iii trigger``: payload forms, output rules and every exit code of cli.md."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from iii_sdk import III
from tests.helpers import (
    IIIBIN,
    DaemonProcess,
    ThreadDaemon,
    child_env,
    modules_loaded,
    run_iii,
    wait_for,
)


def test_sync_result_compact_when_piped(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::add", "a=2", "b=3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, '{"sum":5}\n', "")


def test_output_that_cannot_be_written(daemon: DaemonProcess, math_worker: Any) -> None:
    """A full disk is one line and exit 1, never silence; a reader that went away
    (`| head -1`) is nobody's failure. The fast paths exit without the interpreter's
    teardown, so their last output is flushed by hand: this proves it is."""
    env = child_env(daemon.tmp)
    for args in (["trigger", "math::add", "a=2", "b=3"], ["list", "functions"],
                 ["trigger", "math::add", "--batch", "-"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([IIIBIN, *args], stdout=full, stderr=subprocess.PIPE,
                                  text=True, env=env, input='{"a": 1, "b": 2}\n')
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == "iii: cannot write the output: No space left on device\n"
    calls = daemon.tmp / "calls.jsonl"
    calls.write_text("".join(f'{{"a": {n}, "b": 1}}\n' for n in range(20_000)))
    reader = subprocess.Popen([IIIBIN, "trigger", "math::add", "--batch", str(calls)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().startswith(b'{"line":1,')
    reader.stdout.close()  # the reader goes away with the rest unread
    err = reader.stderr.read()
    reader.wait(60)
    assert (reader.returncode, err) == (0, b"")


def test_pretty_output_on_request(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::add", "a=2", "b=3", "-o", "pretty")
    assert proc.stdout == '{\n  "sum": 5\n}\n'


def test_a_null_result_prints_nothing(daemon: DaemonProcess, sdk_worker: III) -> None:
    sdk_worker.register_function("nothing", lambda data: None)
    sdk_worker.ping()
    proc = run_iii(daemon.tmp, "trigger", "nothing")
    assert (proc.returncode, proc.stdout) == (0, "")


def echo(daemon: DaemonProcess, *args: str, stdin: str | None = None) -> Any:
    proc = run_iii(daemon.tmp, "trigger", "math::echo", *args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["data"]


def test_payload_forms(daemon: DaemonProcess, math_worker: Any, tmp_path: Path) -> None:
    assert echo(daemon) == {}
    assert echo(daemon, "n=3", "name=bob", "ok=true", "xs=[1,2]", "s=\"3\"", "e=") == {
        "n": 3, "name": "bob", "ok": True, "xs": [1, 2], "s": "3", "e": ""}
    assert echo(daemon, "--json", '{"a":1,"b":2}', "b=20") == {"a": 1, "b": 20}
    payload = tmp_path / "p.json"
    payload.write_text('{"from": "file"}')
    assert echo(daemon, "--json", f"@{payload}") == {"from": "file"}
    assert echo(daemon, "--json", "-", "x=1", stdin='{"from": "stdin"}') == {
        "from": "stdin", "x": 1}
    assert echo(daemon, "--json", "[1, 2]") == [1, 2]
    assert echo(daemon, "--json=\"text\"") == "text"


def test_function_error_exit_1_with_the_error_json_on_stderr(
        daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::divide", "a=1", "b=0")
    assert proc.returncode == 1 and proc.stdout == ""
    assert json.loads(proc.stderr) == {"code": "division_by_zero",
                                       "message": "cannot divide by zero"}


def test_on_a_terminal_an_error_reads_as_text_with_its_stack(daemon: DaemonProcess,
                                                             sdk_worker: III) -> None:
    import os
    import pty

    def broken(data: Any) -> Any:
        return {}["missing"]

    sdk_worker.register_function("broken", broken)
    sdk_worker.ping()

    def on_a_terminal(*args: str) -> tuple[int, str]:
        leader, follower = pty.openpty()
        proc = subprocess.run([IIIBIN, "trigger", "broken", *args], stderr=follower,
                              stdout=subprocess.PIPE, env=child_env(daemon.tmp), timeout=30)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")

    code, text = on_a_terminal()
    lines = text.splitlines()
    assert code == 1 and "invocation_failed: KeyError: 'missing'" in lines[0]
    assert lines[1].startswith("Traceback") and "KeyError: 'missing'" in lines[-1]
    code, text = on_a_terminal("-o", "json")  # asked for JSON: JSON, even on a terminal
    assert code == 1 and json.loads(text)["message"] == "KeyError: 'missing'"
    piped = run_iii(daemon.tmp, "trigger", "broken")  # piped: JSON for scripts
    assert json.loads(piped.stderr)["stacktrace"].startswith("Traceback")


def test_usage_errors_exit_2_and_send_nothing(short_tmp: Path) -> None:
    # No daemon at all: exit 2 (not 3) proves the command gave up before connecting.
    bad = [
        [],
        ["f", "--json", "{oops"],
        ["f", "--json", "@/nonexistent/payload.json"],
        ["f", "--void", "--enqueue", "q"],
        ["f", "--timeout-ms", "0"],
        ["f", "--timeout-ms", "soon"],
        ["f", "--frobnicate"],
        ["f", "novalue"],
        ["f", "--json", "[1]", "a=1"],
        ["f", "--action", '{"no":"type"}'],
        ["f", "-o", "yaml"],
    ]
    for args in bad:
        proc = run_iii(short_tmp, "trigger", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("iii: ") and "Traceback" not in proc.stderr
        problem, usage = proc.stderr.splitlines()  # the problem, then the usage line
        assert usage.startswith("usage: iii trigger") and "\\x0a" not in problem


def test_daemon_not_running_exit_3_one_line(short_tmp: Path) -> None:
    proc = run_iii(short_tmp, "trigger", "math::add", "a=1")
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert str(short_tmp / "iii.sock") in lines[0] and "iii daemon start" in lines[0]
    # Given --socket, the hint names the same socket.
    other = short_tmp / "other.sock"
    for args in (["trigger", "math::add", "--socket", str(other)],
                 ["list", "functions", "--socket", str(other)],
                 ["daemon", "status", "--socket", str(other)]):
        proc = run_iii(short_tmp, *args)
        assert proc.returncode == 3, args
        assert f"`iii daemon start --socket {other}`" in proc.stderr, (args, proc.stderr)


def test_a_refused_token_is_not_called_not_running(short_tmp: Path) -> None:
    from tests.helpers import free_port

    port = free_port()
    (short_tmp / "config.toml").write_text('[websocket]\ntoken = "s3cret"\n')
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    url = f"ws://127.0.0.1:{port}"
    try:
        missing = run_iii(short_tmp, "trigger", "math::add", "--url", url)
        assert missing.returncode == 3 and "not running" not in missing.stderr
        assert "refused the connection (HTTP 401" in missing.stderr
        assert "set III_TOKEN" in missing.stderr
        env = dict(child_env(short_tmp), III_TOKEN="wrong")
        wrong = run_iii(short_tmp, "list", "functions", "--url", url, env=env)
        assert wrong.returncode == 3 and "III_TOKEN does not match" in wrong.stderr
        env["III_TOKEN"] = "s3cret"
        assert run_iii(short_tmp, "list", "functions", "--url", url, env=env).returncode == 0
    finally:
        daemon.stop()


def test_unknown_function_exit_4_also_with_void(daemon: DaemonProcess) -> None:
    for extra in ([], ["--void"]):
        proc = run_iii(daemon.tmp, "trigger", "no::such", *extra)
        assert proc.returncode == 4
        assert json.loads(proc.stderr)["code"] == "function_not_found"


def test_unknown_action_exit_4(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::add", "--action", '{"type":"delay","ms":5}')
    assert proc.returncode == 4
    assert json.loads(proc.stderr)["code"] == "action_not_found"


def test_timeout_exit_124(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::sleep", "seconds=5", "--timeout-ms", "150")
    assert proc.returncode == 124
    assert json.loads(proc.stderr)["code"] == "TIMEOUT"


def test_void_exit_0_and_the_function_runs(daemon: DaemonProcess, sdk_worker: III) -> None:
    seen: list[Any] = []
    sdk_worker.register_function("collect", seen.append)
    sdk_worker.ping()
    proc = run_iii(daemon.tmp, "trigger", "collect", "n=1", "--void")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    wait_for(lambda: seen == [{"n": 1}], message="the void call to run")


def test_enqueue_prints_the_daemons_answer(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::add", "--enqueue", "jobs", "a=1", "b=2")
    assert proc.returncode == 0 and proc.stderr == ""  # math::add is served: no note
    receipt = json.loads(proc.stdout)
    assert isinstance(receipt["messageReceiptId"], str) and receipt["function_served"]


def test_ctrl_c_exits_130_without_a_traceback(daemon: DaemonProcess, math_worker: Any) -> None:
    proc = subprocess.Popen([IIIBIN, "trigger", "math::sleep", "seconds=10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(daemon.tmp))
    wait_for(lambda: _calls_in_flight(daemon) == 1, message="the call to be in flight")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert out == "" and "Traceback" not in err


def _calls_in_flight(daemon: DaemonProcess) -> int:
    proc = run_iii(daemon.tmp, "daemon", "status", "-o", "json")
    return int(json.loads(proc.stdout)["pending_invocations"])


def test_socket_flag_beats_the_environment(daemon: DaemonProcess, math_worker: Any) -> None:
    env = child_env(daemon.tmp)
    env["III_SOCKET"] = "/nonexistent/elsewhere.sock"
    proc = subprocess.run([IIIBIN, "trigger", "math::add", "a=1", "b=1", "--socket",
                           str(daemon.socket_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"sum": 2}


def test_the_trigger_path_imports_no_typer_asyncio_or_daemon(daemon: DaemonProcess,
                                                              math_worker: Any) -> None:
    lines = daemon.tmp / "calls.jsonl"
    lines.write_text('{"a": 1, "b": 2}\n')
    for argv in (["trigger", "math::add", "a=1", "b=2"],
                 ["trigger", "math::add", "--batch", str(lines)]):
        loaded = modules_loaded(daemon.tmp, argv)
        assert "iii_cli" in loaded
        assert not loaded & {"typer", "click", "asyncio", "textual", "iii_daemon", "msgspec",
                              "websockets"}, argv


def test_help_comes_from_the_one_option_table(short_tmp: Path) -> None:
    from iii_cli.trigger_options import OPTIONS

    for flag in ("--help", "-h"):
        for args in (["trigger", flag], ["trigger", "math::add", "a=1", flag]):
            proc = run_iii(short_tmp, *args)
            assert proc.returncode == 0 and proc.stderr == "", args
            assert "124 timed" in proc.stdout
            for option in OPTIONS:  # every option the fast path parses, --url included
                assert all(name in proc.stdout for name in option.names), option.names
    # Completion goes through typer, whose trigger command is built from the same table.
    from tests.cli.test_config_and_completions import complete

    offered = set(complete(short_tmp, "iii trigger fn --"))
    assert {n for o in OPTIONS for n in o.names if n.startswith("--")} <= offered


def test_version(daemon: DaemonProcess) -> None:
    proc = run_iii(daemon.tmp, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "iii 0.1.0 (daemon 0.1.0)"
    alone = run_iii(daemon.tmp, "--version", env=dict(child_env(daemon.tmp),
                                                     III_SOCKET="/nonexistent/x.sock"))
    assert alone.returncode == 0 and alone.stdout.strip() == "iii 0.1.0"


def test_url_forms(daemon: DaemonProcess, math_worker: Any) -> None:
    ok = run_iii(daemon.tmp, "trigger", "math::add", "a=1", "b=1", "--url",
                 f"unix://{daemon.socket_path}")
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"sum": 2}
    nobody = run_iii(daemon.tmp, "trigger", "math::add", "--url", "ws://127.0.0.1:1")
    assert nobody.returncode == 3 and "ws://127.0.0.1:1" in nobody.stderr
    env = dict(child_env(daemon.tmp), III_URL="http://example")
    refused = subprocess.run([IIIBIN, "trigger", "math::add"], capture_output=True, text=True,
                             env=env)
    assert refused.returncode == 2 and "unsupported URL" in refused.stderr
