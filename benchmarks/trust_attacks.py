"""The attacks of the trust issue: acknowledged data lost, one stuck call stalling the
rest, inputs that end in a traceback. Each returns figures, for ``--repo`` before and
after a fix (``python benchmarks/attacks.py --only NAME``)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__:  # imported as benchmarks.trust_attacks
    from benchmarks.attack_kit import Daemon, Raw, free_port, mute_socket, raw_worker, run_cli
else:
    from attack_kit import Daemon, Raw, free_port, mute_socket, raw_worker, run_cli

#: A worker of the checkout under test: ``stuck::hang`` never returns, ``stuck::ok``
#: answers at once. Written against the API every version of our SDK has.
STUCK_WORKER = """
import sys, threading
from iii_sdk import register_worker
w = register_worker(sys.argv[1])
w.register_function("stuck::hang", lambda data: threading.Event().wait())
w.register_function("stuck::ok", lambda data: "ok")
w.ping()
print("ready", flush=True)
w.run_forever()
"""


def _stuck_worker(daemon: Daemon) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STUCK_WORKER, str(daemon.socket_path)],
                            env=daemon.env, cwd=daemon.repo, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        proc.kill()
        raise RuntimeError("the stuck worker did not start")
    return proc


def _voids(daemon: Daemon, function_id: str, count: int) -> None:
    raw = Raw(daemon.socket_path)
    for i in range(count):
        raw.send({"type": "invokefunction", "function_id": function_id, "data": i,
                  "invocation_id": f"v{i}", "action": {"type": "void"}})
    for _ in range(count):
        raw.recv()
    raw.close()


def attack_second_daemon(repo: Path, tmp: Path) -> dict[str, Any]:
    """A second daemon on the first one's data dir (another socket)."""
    first = Daemon(repo, tmp).start()
    second = Daemon(repo, tmp)
    second.socket_path = tmp / "second.sock"
    try:
        raw = Raw(first.socket_path)
        raw.call("state::set", {"scope": "s", "key": "k", "value": 1})
        raw.close()
        proc = subprocess.run(second.command(), env=second.env, cwd=repo,
                              capture_output=True, text=True, timeout=5)
        ran = "refused" if proc.returncode == 1 else f"exit {proc.returncode}"
        started = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
    except subprocess.TimeoutExpired:  # it is serving: both on one SQLite file
        ran, started = "ran beside the first", []
    first.stop()
    again = Daemon(repo, tmp).start()
    try:
        raw = Raw(again.socket_path)
        kept = raw.call("state::get", {"scope": "s", "key": "k"}).get("result")
        raw.close()
    finally:
        again.stop()
        subprocess.run(["pkill", "-f", str(tmp / "second.sock")], check=False)
    return {"a second daemon on the same data dir": ran,
            "its one line": started[0] if started else "-",
            "acknowledged state::set after a restart": "kept" if kept == 1 else "lost"}


def attack_topic_no_consumer(repo: Path, tmp: Path) -> dict[str, Any]:
    """enqueue to a topic nobody consumes, kill -9, restart, then a consumer binds."""
    daemon = Daemon(repo, tmp).start()
    raw = Raw(daemon.socket_path)
    answer = raw.call("enqueue", {"topic": "signups", "data": {"n": 1}})
    raw.close()
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait()
    daemon.start()
    try:
        worker = raw_worker(daemon, "welcome", "queue", {"topic": "signups"})
        worker.sock.settimeout(3)
        delivered = 0
        try:
            while True:
                message = worker.recv()
                if message.get("type") == "invokefunction":
                    delivered += 1
                    worker.send({"type": "invocationresult",
                                 "invocation_id": message["invocation_id"], "result": None})
        except (TimeoutError, OSError):
            pass
    finally:
        daemon.stop()
    return {"enqueue answer": answer.get("error", {}).get("code", "ok (null)"),
            "delivered after kill -9 and a consumer": delivered}


def attack_oversized_result(repo: Path, tmp: Path) -> dict[str, Any]:
    """A worker answers one call with a result over the frame limit while another call
    of it is in flight."""
    daemon = Daemon(repo, tmp, "--max-frame-bytes", "65536").start()
    try:
        worker = Raw(daemon.socket_path)
        worker.send({"type": "registerfunction", "id": "big"})
        worker.send({"type": "registerfunction", "id": "small"})
        caller = Raw(daemon.socket_path, timeout=10)
        for function_id in ("big", "small"):
            caller.send({"type": "invokefunction", "function_id": function_id,
                         "invocation_id": function_id, "data": None})
        calls = {m["function_id"]: m["invocation_id"] for m in (worker.recv(), worker.recv())}
        try:
            worker.sock.sendall(json.dumps({"type": "invocationresult",
                                            "invocation_id": calls["big"],
                                            "result": "x" * 1_000_000}).encode() + b"\n")
            worker.send({"type": "invocationresult", "invocation_id": calls["small"],
                         "result": "fine"})
            kept = "kept"
        except OSError:
            kept = "cut"
        answers = {}
        for _ in range(2):
            message = caller.recv()
            answers[message["invocation_id"]] = message.get("error", {}).get("code") or \
                message.get("result")
    finally:
        daemon.stop()
    return {"worker connection": kept, "the oversized call": answers.get("big"),
            "the other call in flight": answers.get("small")}


def attack_stuck_handlers(repo: Path, tmp: Path) -> dict[str, Any]:
    """40 void calls into a handler that hangs, then a call of another function."""
    daemon = Daemon(repo, tmp).start()
    worker = _stuck_worker(daemon)
    try:
        _voids(daemon, "stuck::hang", 40)
        time.sleep(0.2)  # let them reach their handlers (a figure, not a test)
        other = _timed_call(daemon)
        _voids(daemon, "stuck::hang", 40)  # 80: past the default limit of 64
        past = _timed_call(daemon)
    finally:
        worker.kill()
        worker.wait()
        daemon.stop()
    return {"another function while 40 calls hang": other,
            "a call while 80 hang": past}


def _timed_call(daemon: Daemon) -> str:
    """``stuck::ok`` (5 s timeout): what came back, and how long it took."""
    raw = Raw(daemon.socket_path, timeout=10)
    started = time.monotonic()
    raw.send({"type": "invokefunction", "function_id": "stuck::ok", "data": None,
              "invocation_id": "ok", "timeout_ms": 5000})
    answer = raw.recv()
    raw.close()
    return f"{answer.get('result') or answer.get('error', {}).get('code')} in " \
           f"{(time.monotonic() - started) * 1000:.1f} ms"


def attack_worker_shutdown(repo: Path, tmp: Path) -> dict[str, Any]:
    """SIGTERM and Ctrl-C to a worker whose handlers hang, with a caller waiting."""
    figures: dict[str, Any] = {}
    daemon = Daemon(repo, tmp).start()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            worker = _stuck_worker(daemon)
            caller = subprocess.Popen([sys.executable, "-m", "iii_cli", "trigger",
                                       "stuck::hang", "--timeout-ms", "20000"],
                                      env=daemon.env, cwd=repo, stderr=subprocess.PIPE)
            _voids(daemon, "stuck::hang", 3)
            time.sleep(0.3)
            started = time.monotonic()
            worker.send_signal(sig)
            try:
                code: Any = worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = "still running after 15 s (killed)"
            took = time.monotonic() - started
            stderr = worker.stderr.read() if worker.stderr else ""
            caller_code = caller.wait(30)
            name = sig.name
            figures[f"{name}: worker exit, seconds"] = f"{code}, {took:.2f} s"
            figures[f"{name}: tracebacks"] = stderr.count("Traceback")
            figures[f"{name}: the waiting caller's exit"] = caller_code
    finally:
        daemon.stop()
    return figures


def attack_duplicate_host(repo: Path, tmp: Path, requests: int = 500) -> dict[str, Any]:
    """WebSocket handshakes with two Host headers."""
    port = free_port()
    daemon = Daemon(repo, tmp, ws_port=port).start()
    log = tmp / "daemon.log"
    before = log.read_text(errors="replace").count("\n")
    statuses: dict[int, int] = {}
    try:
        head = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n")
        for _ in range(requests):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head.encode())
                status = int(sock.recv(4096).split(b"\r\n", 1)[0].split()[1])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        daemon.stop()
    text = log.read_text(errors="replace")
    return {f"answers to {requests} handshakes": statuses,
            "log lines added": text.count("\n") - before,
            "tracebacks in the log": text.count("Traceback")}


def attack_cross_site_get(repo: Path, tmp: Path) -> dict[str, Any]:
    """An <img>-style GET from another site (no Origin) to an http trigger."""
    http_port = free_port()
    daemon = Daemon(repo, tmp, "--http-port", str(http_port)).start()
    try:
        worker = raw_worker(daemon, "secret", "http", {"api_path": "secret"})
        worker.sock.settimeout(0.5)
        answered = threading.Event()

        def serve() -> None:
            while not answered.is_set():
                try:
                    message = worker.recv()
                except (TimeoutError, OSError):
                    continue
                except EOFError:  # the daemon stopped
                    return
                if message.get("type") == "invokefunction":
                    worker.send({"type": "invocationresult", "result": "secret",
                                 "invocation_id": message["invocation_id"]})

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        time.sleep(0.3)
        figures = {}
        for name, headers in {
                "Sec-Fetch-Site: cross-site": "Sec-Fetch-Site: cross-site\r\n"
                                              "Referer: http://evil.example/\r\n",
                "foreign Referer only": "Referer: http://evil.example/\r\n",
                "no browser headers (curl)": ""}.items():
            with socket.create_connection(("127.0.0.1", http_port), timeout=5) as sock:
                sock.sendall(f"GET /secret HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n"
                             f"{headers}Connection: close\r\n\r\n".encode())
                figures[name] = int(sock.recv(4096).split(b"\r\n", 1)[0].split()[1])
        answered.set()
    finally:
        daemon.stop()
    return figures


def attack_cli_input(repo: Path, tmp: Path) -> dict[str, Any]:
    """What the wire cannot carry, typed at ``iii trigger``: exit code and tracebacks."""
    daemon = Daemon(repo, tmp).start()
    figures = {}
    try:
        for name, args in {
                "--json '\"\\ud800\"'": ["--json", '"\\ud800"'],
                "--json nested 10 000 deep": ["--json", "[" * 10_000 + "]" * 10_000],
                "k=$'\\xff'": ["k=\udcff"],
                "--json NaN": ["--json", "NaN"],
                "n=Infinity": ["n=Infinity"],
                "n=1e999": ["n=1e999"]}.items():
            code, _, tracebacks = run_cli(daemon, "trigger", "f", *args)
            figures[name] = f"exit {code}, {tracebacks} tracebacks"
    finally:
        daemon.stop()
    return figures


def attack_mute_socket(repo: Path, tmp: Path) -> dict[str, Any]:
    """A socket that accepts and never answers: every command's exit code and time."""
    daemon = Daemon(repo, tmp)
    daemon.env["III_SOCKET"] = str(tmp / "mute.sock")
    commands = {"trigger --timeout-ms 200": ["trigger", "f", "--timeout-ms", "200"],
                "trigger --void": ["trigger", "f", "--void"],
                "list functions": ["list", "functions"],
                "daemon status": ["daemon", "status"], "watch": ["watch"]}
    figures: dict[str, Any] = {}

    def one(name: str, args: list[str]) -> None:
        code, took, _ = run_cli(daemon, *args, timeout=40)
        figures[name] = f"exit {code} after {took:.1f} s"

    with mute_socket(tmp / "mute.sock"):
        threads = [threading.Thread(target=one, args=item) for item in commands.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return figures


ATTACKS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "second_daemon": attack_second_daemon,
    "topic_no_consumer": attack_topic_no_consumer,
    "oversized_result": attack_oversized_result,
    "stuck_handlers": attack_stuck_handlers,
    "worker_shutdown": attack_worker_shutdown,
    "duplicate_host": attack_duplicate_host,
    "cross_site_get": attack_cross_site_get,
    "cli_input": attack_cli_input,
    "mute_socket": attack_mute_socket,
}
