"""What the attack scripts share: a daemon from any checkout, a raw client, the CLI.

``--repo`` of the scripts points these at an older checkout, so one script measures a
fix before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    def __init__(self, repo: Path, tmp: Path, *extra: str, ws_port: int = 0) -> None:
        self.repo, self.tmp, self.extra, self.ws_port = repo, tmp, extra, ws_port
        self.socket_path = tmp / "iii.sock"
        self.env = dict(os.environ, PYTHONPATH=str(repo), III_CONFIG=str(tmp / "config.toml"),
                        III_SOCKET=str(self.socket_path), III_DATA_DIR=str(tmp / "data"),
                        III_LOG_DIR=str(tmp / "log"))
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "iii_daemon", "--socket", str(self.socket_path),
                "--data-dir", str(self.tmp / "data"), "--ws-port", str(self.ws_port),
                "--http-port", "0", *self.extra]

    def start(self) -> Daemon:
        log = open(self.tmp / "daemon.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.command(), env=self.env, cwd=self.repo,
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}")
            try:
                raw = Raw(self.socket_path)
                raw.close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("daemon did not start")

    def rss_mib(self) -> float:
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class Raw:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.recv()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise EOFError("closed")
        value: dict[str, Any] = json.loads(line)
        return value

    def call(self, function_id: str, data: Any = None) -> dict[str, Any]:
        invocation_id = f"c{time.monotonic_ns()}"
        self.send({"type": "invokefunction", "function_id": function_id, "data": data,
                   "invocation_id": invocation_id})
        while True:
            message = self.recv()
            if message.get("invocation_id") == invocation_id:
                return message

    def ping_s(self) -> float:
        started = time.monotonic()
        self.send({"type": "ping"})
        while self.recv()["type"] != "pong":
            pass
        return time.monotonic() - started

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ws_handshake(port: int, headers: dict[str, str]) -> int:
    """The HTTP status the listener answers a WebSocket handshake with."""
    request = (f"GET / HTTP/1.1\r\nHost: {headers.pop('Host', f'127.0.0.1:{port}')}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    request += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def run_cli(daemon: Daemon, *args: str, timeout: float = 60) -> tuple[int | str, float, int]:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "iii_cli", *args], env=daemon.env,
                              cwd=daemon.repo, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hung (killed)", time.monotonic() - started, 0
    tb = proc.stderr.count(b"Traceback")
    return proc.returncode, time.monotonic() - started, tb


def raw_worker(daemon: Daemon, function_id: str, trigger_type: str,
               config: dict[str, Any]) -> Raw:
    """A raw connection serving ``function_id``, bound by a trigger (id ``t``)."""
    worker = Raw(daemon.socket_path)
    worker.send({"type": "registerfunction", "id": function_id})
    worker.send({"type": "registertrigger", "id": "t", "trigger_type": trigger_type,
                 "function_id": function_id, "config": config})
    return worker


@contextlib.contextmanager
def mute_socket(path: Path) -> Iterator[Path]:
    """A Unix socket at ``path`` that accepts connections and never says a word."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        server.close()
