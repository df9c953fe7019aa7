"""``iii trigger --batch``: one call per JSON line, answers in input order, the exit code of
the worst failure, bad lines answered and skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iii_sdk import III
from tests.helpers import DaemonProcess, run_iii, run_with_terminal_stderr


def answers(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_lines_of_every_kind_are_answered_in_order(daemon: DaemonProcess,
                                                  math_worker: Any) -> None:
    lines = [
        {"function_id": "math::add", "payload": {"a": 1, "b": 2}},
        {"function_id": "math::add", "payload": {"a": 1, "b": 2}, "void": True},
        {"function_id": "math::divide", "payload": {"a": 1, "b": 0}},
        {"function_id": "math::add", "payload": {"a": 5, "b": 5}, "enqueue": "default"},
        {"function_id": "math::sleep", "payload": {"seconds": 0.3}},
        {"function_id": "math::add", "payload": {"a": 2, "b": 2}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\nnot json\n" \
        + '{"functionid": "math::add"}\n' + '{"function_id": "nope::x"}\n'
    proc = run_iii(daemon.tmp, "trigger", "--batch", stdin=text)
    got = answers(proc.stdout)
    assert [a["line"] for a in got] == [1, 2, 3, 4, 5, 6, 8, 9, 10]  # 7 is blank
    assert got[0]["result"] == {"sum": 3}
    assert got[1] == {"line": 2, "result": None}  # handed over
    assert got[2]["error"]["code"] == "division_by_zero"
    assert "messageReceiptId" in got[3]["result"]
    assert got[4]["result"] == {"slept": 0.3}  # the slow one is still in its place
    assert got[5]["result"] == {"sum": 4}
    assert got[6]["error"]["code"] == "bad_request" and "line 8" in got[6]["error"]["message"]
    assert "unknown key 'functionid'" in got[7]["error"]["message"]
    assert got[8]["error"]["code"] == "function_not_found"
    # Not found (4) comes before a bad line (2) and a function's failure (1).
    assert proc.returncode == 4, proc.stderr


def test_with_fn_each_line_is_a_payload_and_a_file_works(daemon: DaemonProcess,
                                                          math_worker: Any,
                                                          tmp_path: Path) -> None:
    source = tmp_path / "payloads.jsonl"
    source.write_text("".join(json.dumps({"a": n, "b": 1}) + "\n" for n in range(300)))
    proc = run_iii(daemon.tmp, "trigger", "math::add", "--batch", str(source),
                   "--max-in-flight", "8")
    assert proc.returncode == 0, proc.stderr
    assert [a["result"]["sum"] for a in answers(proc.stdout)] == [n + 1 for n in range(300)]

    proc = run_iii(daemon.tmp, "trigger", "math::add", "--batch", stdin='{"a":"x","b":1}\n')
    assert proc.returncode == 1
    assert answers(proc.stdout)[0]["error"]["code"] == "invocation_failed"


def test_void_for_every_line_and_the_calls_all_ran(daemon: DaemonProcess,
                                                   sdk_worker: III) -> None:
    seen: list[int] = []
    sdk_worker.register_function("count", lambda data: seen.append(data["n"]))
    sdk_worker.ping()
    text = "".join(json.dumps({"n": n}) + "\n" for n in range(50))
    proc = run_iii(daemon.tmp, "trigger", "count", "--void", "--batch", stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert answers(proc.stdout) == [{"line": n + 1, "result": None} for n in range(50)]
    status = run_iii(daemon.tmp, "trigger", "engine::status")  # after every void, in order
    assert status.returncode == 0 and sorted(seen) == list(range(50))


def test_mistakes_on_the_command_line(daemon: DaemonProcess) -> None:
    proc = run_iii(daemon.tmp, "trigger", "math::add", "a=1", "--batch", stdin="{}\n")
    assert proc.returncode == 2 and "k=v and --json" in proc.stderr
    proc = run_iii(daemon.tmp, "trigger", "--batch", "/nonexistent/calls.jsonl")
    assert proc.returncode == 2 and "cannot read /nonexistent/calls.jsonl" in proc.stderr
    proc = run_iii(daemon.tmp, "trigger", "--batch", "--max-in-flight", "0", stdin="")
    assert proc.returncode == 2 and "--max-in-flight" in proc.stderr


def test_no_daemon_is_exit_3(short_tmp: Path) -> None:
    proc = run_iii(short_tmp, "trigger", "--batch", stdin='{"function_id": "f"}\n')
    assert proc.returncode == 3 and proc.stdout == ""


def test_a_progress_bar_on_a_terminal_only(daemon: DaemonProcess, math_worker: Any,
                                           tmp_path: Path) -> None:
    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"a": n, "b": 1}) + "\n" for n in range(2000)))
    code, out, terminal = run_with_terminal_stderr(daemon.tmp, "trigger", "math::add",
                                                   "--batch", str(source))
    assert code == 0 and len(out.splitlines()) == 2000  # the answers are untouched
    assert "calls" in terminal and "/2000" in terminal, terminal[-300:]
    code, out, terminal = run_with_terminal_stderr(daemon.tmp, "trigger", "math::add",
                                                   "--batch", str(source), "-q")
    assert code == 0 and terminal == ""
    piped = run_iii(daemon.tmp, "trigger", "math::add", "--batch", str(source))
    assert piped.returncode == 0 and piped.stderr == ""


def test_large_lines_are_held_to_the_bytes_bound_and_all_answered(daemon: DaemonProcess,
                                                                  math_worker: Any) -> None:
    """Lines of 100 KiB: at most 128 KiB of calls in flight, one larger line alone; with
    any window, every line is answered in order."""
    big = "x" * 100_000
    text = "".join(json.dumps({"n": n, "pad": big}) + "\n" for n in range(6))
    for window in ("1", "2", "64"):
        proc = run_iii(daemon.tmp, "trigger", "math::echo", "--batch", "--max-in-flight",
                       window, stdin=text)
        assert proc.returncode == 0, proc.stderr
        got = answers(proc.stdout)
        assert [a["result"]["data"]["n"] for a in got] == list(range(6)), window


def test_the_window_defaults_to_what_a_worker_runs_at_once_and_wider_for_voids() -> None:
    """Sync calls: 64 (a worker's default max_concurrency: more would be refused busy);
    voids are answered at hand-off, so their window only bounds the daemon's backlog."""
    from iii_cli.trigger_fast import parse
    from iii_sdk.options import DEFAULT_MAX_CONCURRENCY

    assert parse(["fn", "--batch"]).max_in_flight == DEFAULT_MAX_CONCURRENCY == 64
    assert parse(["--batch", "--enqueue", "q"]).max_in_flight == 64
    assert parse(["fn", "--void", "--batch"]).max_in_flight == 256
    assert parse(["fn", "--void", "--batch", "--max-in-flight", "8"]).max_in_flight == 8


def test_a_sync_batch_never_runs_more_than_the_window_at_once(daemon: DaemonProcess,
                                                               sdk_worker: III) -> None:
    """Through the real CLI: with the default window, a slow function has at most 64 of
    the batch's calls running at once (a worker's default max_concurrency: one more would
    be refused busy), pipelined well past one, and all 200 are answered."""
    import asyncio

    running = [0, 0]  # now, most at once

    async def slow(data: Any) -> Any:
        running[0] += 1
        running[1] = max(running[1], running[0])
        await asyncio.sleep(0.02)
        running[0] -= 1
        return data

    sdk_worker.register_function("slow", slow)
    sdk_worker.ping()
    text = "".join(json.dumps({"n": n}) + "\n" for n in range(200))
    proc = run_iii(daemon.tmp, "trigger", "slow", "--batch", stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert [a["result"]["n"] for a in answers(proc.stdout)] == list(range(200))
    assert 32 <= running[1] <= 64, running
