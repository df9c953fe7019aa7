"""``iii watch`` against a real daemon and worker: filters, history replay, the missed
marker for a watcher that never reads, Ctrl-C, and its formats."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import III, InvocationError, register_worker
from tests.helpers import IIIBIN, DaemonProcess, child_env, rss_kib, run_iii, wait_for


@pytest.fixture
def worker(daemon: DaemonProcess) -> Iterator[III]:
    w = register_worker(str(daemon.socket_path))
    w.register_function("orders::create", lambda data: {"id": 1})
    w.register_function("mail::send", lambda data: None)

    def broken(data: Any) -> Any:
        raise ValueError("bad order")

    w.register_function("orders::broken", broken)
    w.ping()
    yield w
    w.shutdown()


class Watching:
    """``iii watch ARGS`` running; a thread reads its lines (a test never blocks on it)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.proc = subprocess.Popen([IIIBIN, "watch", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=child_env(tmp))
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def until(self, predicate: Any, message: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                events.append(json.loads(self.lines.get(timeout=0.1)))
            except queue.Empty:
                continue
            if predicate(events):
                return events
        raise AssertionError(f"timed out waiting for {message}: {events}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)


def call(worker: III, function_id: str) -> None:
    with contextlib.suppress(InvocationError):  # the broken one is meant to fail
        worker.trigger({"function_id": function_id, "payload": {"n": 1}})


def watchers(worker: III) -> int:
    return int(worker.trigger({"function_id": "engine::status"})["watchers"])


def test_watch_follows_with_a_glob_and_errors_only_and_exits_130(
        daemon: DaemonProcess, worker: III) -> None:
    everything = Watching(daemon.tmp, "--replay", "0")
    errors = Watching(daemon.tmp, "orders::*", "--errors", "--replay", "0")
    wait_for(lambda: watchers(worker) == 2, message="both watching")
    for function_id in ("orders::create", "mail::send", "orders::broken"):
        call(worker, function_id)
    got = everything.until(lambda es: len(mine(es)) >= 3, "three invocations")
    assert [e["function_id"] for e in mine(got)] == ["orders::create", "mail::send",
                                                     "orders::broken"]
    assert all(e["source"] == "sdk" for e in mine(got))
    [failure] = errors.until(lambda es: bool(es), "the failure")
    assert failure["function_id"] == "orders::broken"
    assert failure["error"]["message"] == "ValueError: bad order"
    assert everything.stop() == 130 and errors.stop() == 130


def mine(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The invocations this test made (not the daemon functions it asked along the way)."""
    return [e for e in events if e["event"] == "invocation.finished"
            and not e["function_id"].startswith("engine::")]


def test_history_is_replayed_first_and_kinds_filter(daemon: DaemonProcess,
                                                    worker: III) -> None:
    for function_id in ("orders::create", "mail::send"):
        call(worker, function_id)
    replayed = Watching(daemon.tmp, "--kind", "invocation.finished", "--replay", "5")
    events = replayed.until(lambda es: len(es) >= 2, "the replay")
    assert [e["function_id"] for e in events] == ["orders::create", "mail::send"]
    workers = Watching(daemon.tmp, "--kind", "worker", "--replay", "5")
    [joined] = workers.until(lambda es: bool(es), "the worker joining")
    assert joined["event"] == "worker.joined"
    replayed.stop()
    workers.stop()


@pytest.mark.daemon_process
def test_a_watcher_that_never_reads_is_told_what_it_missed(daemon: DaemonProcess,
                                                           worker: III) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(daemon.socket_path))
    sock.sendall(b'{"type":"watch","replay":0}\n')
    wait_for(lambda: worker.trigger({"function_id": "engine::status"})["watchers"] == 1,
             message="the watcher to subscribe")
    rss = rss_kib(daemon)
    started = time.monotonic()
    # ~5 MB of events: several times what its buffer and the socket's together hold.
    for i in range(8000):
        worker.trigger({"function_id": "mail::send", "payload": {"n": i, "pad": "x" * 400},
                        "action": {"type": "void"}})
    worker.ping()
    wait_for(lambda: stats(worker)["calls"] >= 8000, message="the calls to finish")
    assert time.monotonic() - started < 30  # routing went on while it did not read
    assert rss_kib(daemon) - rss < 30_000  # its buffer is bounded
    sock.settimeout(5)
    received = b""
    probes = 0
    # It reads now: markers say what it missed, and events go on. Read until a probe
    # (called after everything else) arrives: all that came before it has.
    while b'probe' not in received:
        probes += 1
        worker.trigger({"function_id": "mail::send", "payload": {"probe": probes}})
        chunk = sock.recv(1 << 20)
        assert chunk
        received += chunk
    *whole, _cut = received.split(b"\n")  # the last line may be cut: not needed
    lines = [json.loads(line) for line in whole]
    missed = sum(e["count"] for e in lines if e.get("event") == "missed")
    delivered = sum(1 for e in lines if e.get("event") == "invocation.finished")
    assert missed > 1000
    assert delivered + missed >= 8000  # each event either came or was counted
    sock.close()


def stats(worker: III) -> dict[str, Any]:
    rows = worker.trigger({"function_id": "engine::functions::stats",
                           "payload": {"function": "mail::send"}})["functions"]
    return rows[0] if rows else {"calls": 0}


def test_pretty_lines_and_not_running(daemon: DaemonProcess, worker: III,
                                      short_tmp: Path) -> None:
    call(worker, "orders::broken")
    proc = subprocess.Popen([IIIBIN, "watch", "-o", "pretty", "--replay", "1", "--errors"],
                            stdout=subprocess.PIPE, text=True, env=child_env(daemon.tmp))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
    assert " error " in line and "orders::broken" in line and "ms" in line
    assert "ValueError: bad order" in line and "\x1b[" not in line  # piped: no colour
    gone = run_iii(short_tmp / "nowhere", "watch")
    assert gone.returncode == 3 and "iii daemon start" in gone.stderr
    bad = run_iii(daemon.tmp, "watch", "--replay", "-1")
    assert bad.returncode == 2


def test_a_bogus_kind_or_a_broken_glob_is_a_usage_error(daemon: DaemonProcess) -> None:
    bogus = run_iii(daemon.tmp, "watch", "--kind", "bogus")
    assert bogus.returncode == 2, bogus.stderr
    assert "unknown event kind 'bogus'; kinds: invocation, invocation.finished" in bogus.stderr
    glob = run_iii(daemon.tmp, "watch", "[")
    assert glob.returncode == 2 and "has a '[' without its ']'" in glob.stderr
