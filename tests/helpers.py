"""Shared test helpers: a real daemon process, a raw wire client, polling with deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nobody listens on right now (for a test daemon's WebSocket listener)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def can_connect(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def child_env(tmp: Path) -> dict[str, str]:
    """Environment for child processes: isolated from the user's socket and dirs."""
    env = dict(os.environ)
    env["III_SOCKET"] = str(tmp / "iii.sock")
    env["III_DATA_DIR"] = str(tmp / "data")
    env["III_CONFIG"] = str(tmp / "config.toml")
    env["III_LOG_DIR"] = str(tmp / "log")
    # No test daemon binds the user's real ports; a test that wants a listener says so
    # with --ws-port (a flag beats the environment).
    env["III_WS_PORT"] = "0"
    env["III_HTTP_PORT"] = "0"
    env["III_STREAMS_PORT"] = "0"
    env.pop("III_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DaemonProcess:
    """``python -m iii_daemon`` on a socket in ``tmp``."""

    def __init__(self, tmp: Path, *extra: str, socket_path: Path | None = None) -> None:
        self.tmp = tmp
        self.socket_path = socket_path or tmp / "iii.sock"
        self.data_dir = tmp / "data"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "daemon.log"

    def start(self, wait: bool = True) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iii_daemon", "--socket", str(self.socket_path),
             "--data-dir", str(self.data_dir), *self.extra],
            stdout=log, stderr=log, env=child_env(self.tmp), cwd=REPO,
        )
        log.close()
        if wait:
            wait_for(lambda: self._check_alive() and can_connect(self.socket_path),
                     message="the daemon to listen")
        return self

    def _check_alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


_ENV_LOCK = threading.Lock()


class ThreadDaemon:
    """The same daemon as ``DaemonProcess`` (same flags, same config and environment, the
    same ``serve`` on uvloop, a store on disk) on an event loop in a thread of the test
    process: for tests where the process boundary is not the point, it saves a Python
    start per test. Clients, workers and the CLI still reach it through its socket."""

    def __init__(self, tmp: Path, *extra: str, socket_path: Path | None = None) -> None:
        self.tmp = tmp
        self.socket_path = socket_path or tmp / "iii.sock"
        self.data_dir = tmp / "data"
        self.extra = extra
        self._daemon: Any = None  # iii_sdk.testing.DaemonThread, imported when started

    def _config(self) -> Any:
        from iii_daemon.__main__ import daemon_config, parse_args

        args = parse_args(["--socket", str(self.socket_path), "--data-dir",
                           str(self.data_dir), *self.extra])
        # The config file and III_* variables the child process would see.
        wanted = {k: v for k, v in child_env(self.tmp).items() if k.startswith("III_")}
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in wanted}
            os.environ.update(wanted)
            try:
                return daemon_config(args)
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def start(self, wait: bool = True) -> ThreadDaemon:
        """``wait=False`` is accepted for DaemonProcess's sake: this one is ready (or
        failed) when start returns."""
        from iii_sdk.testing import DaemonThread

        self._daemon = DaemonThread(self._config(), name=f"daemon {self.tmp.name}")
        try:
            self._daemon.start()
        except BaseException as exc:
            raise AssertionError(f"daemon failed to start: {exc!r}") from exc
        return self

    @property
    def alive(self) -> bool:
        return self._daemon is not None and self._daemon.alive

    def stop(self, timeout: float = 10.0) -> int:
        """Stop as SIGTERM does; 0 for a clean stop, 1 if ``serve`` raised."""
        assert self._daemon is not None
        self._daemon.stop(timeout)
        return 0 if self._daemon.error is None else 1


def daemon_for(node: Any, tmp: Path, *extra: str) -> DaemonProcess:
    """The daemon a test's fixture starts: its own process if the test is marked
    ``daemon_process``, else in a thread of the test process."""
    kind = DaemonProcess if node.get_closest_marker("daemon_process") else ThreadDaemon
    return kind(tmp, *extra).start()  # type: ignore[return-value]


def rss_kib(daemon: DaemonProcess) -> int:
    """The daemon's resident memory, in KiB (Linux)."""
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawClient:
    """A blocking NDJSON client for wire-level tests."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(path))
        self.file = self.sock.makefile("rb")
        self.hello = self.recv()
        assert self.hello["type"] == "workerregistered", self.hello

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed by the daemon")
        value: dict[str, Any] = json.loads(line)
        return value

    def call(self, function_id: str, data: Any = None, **fields: Any) -> dict[str, Any]:
        """A synchronous call; returns the invocationresult."""
        invocation_id = fields.pop("invocation_id", f"c-{time.monotonic_ns()}")
        self.send({"type": "invokefunction", "function_id": function_id, "data": data,
                   "invocation_id": invocation_id, **fields})
        while True:
            message = self.recv()
            if message.get("invocation_id") == invocation_id:
                return message

    def in_flight(self) -> int:
        """Calls the daemon is waiting on (engine::status)."""
        return int(self.call("engine::status")["result"]["pending_invocations"])

    def ping(self) -> None:
        self.send({"type": "ping"})
        while self.recv()["type"] != "pong":
            pass

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def spawn_worker(tmp: Path, *args: str) -> subprocess.Popen[str]:
    """Run the example worker; returns once it printed that it is ready."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "math_worker.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(tmp),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"worker did not start: {line!r} {stderr}")
    return proc


IIIBIN = str(Path(sys.executable).parent / "iii")


def run_iii(tmp: Path, *args: str, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``iii`` console script, isolated in ``tmp``."""
    return subprocess.run([IIIBIN, *args], capture_output=True, text=True, input=stdin,
                          env=env or child_env(tmp), timeout=timeout)


def modules_loaded(tmp: Path, argv: list[str], env: dict[str, str] | None = None,
                   top_level: bool = True) -> set[str]:
    """The modules (top-level names only unless told) ``iii ARGV`` loads (it must
    succeed), isolated in ``tmp`` (or with ``env``)."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: sys.stderr.write(json.dumps(sorted(sys.modules))))\n"
        f"sys.argv = {['iii', *argv]!r}\n"
        "import iii_cli.main\n"
        "iii_cli.main.leave = sys.exit  # the fast paths skip atexit otherwise\n"
        "iii_cli.main.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env or child_env(tmp), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-500:]
    names = json.loads(proc.stderr.splitlines()[-1])
    return {name.split(".")[0] for name in names} if top_level else set(names)


def default_settings_env(tmp: Path) -> dict[str, str]:
    """A new user's environment: no III_SOCKET, no config file; the socket is found in
    the user's runtime dir (``tmp/run/iii/iii.sock``, a private temp ``XDG_RUNTIME_DIR``)."""
    env = {k: v for k, v in child_env(tmp).items() if k not in ("III_SOCKET", "III_CONFIG")}
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    (tmp / "home").mkdir(exist_ok=True)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(name, None)
    env.update(HOME=str(tmp / "home"), XDG_RUNTIME_DIR=str(tmp / "run"))
    return env


def official_worker(port: int, name: str = "official", **options: Any) -> Any:
    """The official iii SDK attached to a daemon's WebSocket listener on ``port``, as
    ``name``, without telemetry; ``options``: more ``iii.InitOptions`` fields."""
    import iii

    return iii.register_worker(f"ws://127.0.0.1:{port}", iii.InitOptions(
        worker_name=name, otel={"enabled": False}, **options))


def run_with_terminal_stderr(tmp: Path, *args: str) -> tuple[int, str, str]:
    """``iii ARGS`` with stderr on a pseudo-terminal (stdout piped): (code, out, terminal)."""
    main, side = os.openpty()
    seen: list[bytes] = []

    def read_terminal() -> None:  # as a terminal would, so the child never blocks on it
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side is closed: all read
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen([IIIBIN, *args], stdout=subprocess.PIPE, stderr=side,
                                env=dict(child_env(tmp), TERM="xterm", COLUMNS="100"))
        os.close(side)
        out, _ = proc.communicate(timeout=60)
        reader.join(10)
    finally:
        os.close(main)
    return proc.returncode, out.decode(), b"".join(seen).decode(errors="replace")


class RedisServer:
    """Debian's ``redis-server`` on a free port in ``tmp`` (no disk writes unless asked),
    stopped by pid."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import shutil

        server = shutil.which("redis-server")
        if server is None:
            raise AssertionError("redis-server is not installed (.ci/run installs it)")
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.tmp),
             "--save", "", "--appendonly", "no", "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, message="redis-server to answer")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class FakeEngine:
    """An engine of the test's own making on a free port: it takes one worker's
    connection (a bridge's), records what it registers, and calls it with any name."""

    def __init__(self) -> None:
        self.port = free_port()
        self.registered: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None
        self._answers: dict[str, Any] = {}
        self._ids = 0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FakeEngine:
        from websockets.asyncio.server import serve

        self._thread.start()

        async def opened() -> Any:
            return await serve(self._session, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(opened(), self._loop).result(10)
        return self

    async def _session(self, conn: Any) -> None:
        self._conn = conn
        await conn.send(json.dumps({"type": "workerregistered", "worker_id": "w1"}))
        async for text in conn:
            message = json.loads(text)
            if message.get("type") == "registerfunction":
                self.registered.add(message["id"])
            elif message.get("type") == "invocationresult":
                future = self._answers.pop(message["invocation_id"], None)
                if future is not None:
                    future.set_result({k: message[k] for k in ("result", "error")
                                       if k in message})

    def call(self, function_id: str, data: Any = None, timeout: float = 10) -> Any:
        """What the connected worker answers to ``function_id``."""

        async def ask() -> Any:
            self._ids += 1
            invocation_id = f"e{self._ids}"
            future = self._loop.create_future()
            self._answers[invocation_id] = future
            await self._conn.send(json.dumps({
                "type": "invokefunction", "function_id": function_id, "data": data,
                "invocation_id": invocation_id}))
            return await asyncio.wait_for(future, timeout)

        return asyncio.run_coroutine_threadsafe(ask(), self._loop).result(timeout + 1)

    def stop(self) -> None:
        async def closed() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(closed(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def state_round_trip(a: Any, b: Any) -> None:
    """Clients of two daemons that share state: set on ``a`` is read on ``b`` at once, an
    update on ``b`` is listed on ``a`` (the state contract across daemons)."""
    a.trigger({"function_id": "state::set",
               "payload": {"scope": "orders", "key": "o1", "value": {"n": 1}}})
    assert b.trigger({"function_id": "state::get",
                      "payload": {"scope": "orders", "key": "o1"}}) == {"n": 1}
    b.trigger({"function_id": "state::update", "payload": {
        "scope": "orders", "key": "o1", "ops": [{"type": "increment", "path": "n", "by": 1}]}})
    assert a.trigger({"function_id": "state::list",
                      "payload": {"scope": "orders"}}) == [{"n": 2}]


def handshake(port: int, headers: dict[str, str] | None = None,
              host: str | None = None) -> int:
    """The HTTP status of a WebSocket handshake (101 = accepted)."""
    lines = ["GET / HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(4096).split(b"\r\n", 1)[0].split()[1])


def ask(daemon: Any, function_id: str, data: Any = None) -> Any:
    """``function_id``'s answer from ``daemon``, through the SDK's client: for the tests
    that poll the daemon and whose point is not the CLI (a process per poll is slow)."""
    from iii_sdk import connect

    with connect(str(daemon.socket_path)) as client:
        return client.trigger({"function_id": function_id, "payload": data})


def wait_served(daemon: Any, function_id: str) -> None:
    """Wait until ``daemon`` lists ``function_id`` (registered on another connection,
    whose frames may not have arrived yet)."""
    wait_for(lambda: function_id in {f["function_id"] for f in ask(
        daemon, "engine::functions::list")["functions"]}, message=f"{function_id} served")


def dead_letters(daemon: Any, queue: str) -> list[Any]:
    """``iii queue dlq QUEUE``'s rows, from the daemon's function."""
    return list(ask(daemon, "engine::queues::dlq", {"queue": queue})["dead_letters"])


def succeeds(socket_path: Path, function_id: str, data: Any = None) -> bool:
    """A call of ``function_id`` at ``socket_path`` is answered without an error (for
    polling: the CLI's own exit codes are checked where they are the point)."""
    from iii_sdk import IIIError, connect

    try:
        with connect(str(socket_path)) as client:
            client.trigger({"function_id": function_id, "payload": data})
    except IIIError:
        return False
    return True
