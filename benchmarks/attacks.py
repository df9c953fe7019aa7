"""Hostile input against a real daemon, with the figure each attack produces.

    python benchmarks/attacks.py [--repo PATH] [--only NAME ...]

Runs each attack of the security issue against ``python -m iii_daemon`` from ``--repo``
(default: this checkout), so the same script measures a fix before and after. Prints
one line per figure and writes JSON to benchmarks/results/attacks.json. The tests under
tests/integration/test_security.py assert the bounds; this script reports the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__:  # imported by the tests, as benchmarks.attacks
    from benchmarks.attack_kit import MIB, Daemon, Raw, free_port, run_cli, ws_handshake
    from benchmarks.trust_attacks import ATTACKS as TRUST_ATTACKS
else:  # run as a script: its folder is on sys.path
    from attack_kit import MIB, Daemon, Raw, free_port, run_cli, ws_handshake
    from trust_attacks import ATTACKS as TRUST_ATTACKS

HERE = Path(__file__).resolve().parent


# --- the attacks ----------------------------------------------------------------------------


def attack_ws_access(repo: Path, tmp: Path) -> dict[str, Any]:
    port = free_port()
    daemon = Daemon(repo, tmp, ws_port=port).start()
    try:
        figures: dict[str, Any] = {
            "browser Origin handshake status": ws_handshake(
                port, {"Origin": "https://evil.example"}),
            "rebinding Host handshake status": ws_handshake(
                port, {"Host": f"evil.example:{port}"}),
            "plain SDK handshake status": ws_handshake(port, {}),
        }
        if os.geteuid() == 0:
            # As uid 65534: the interpreter is loaded first (it may live where nobody
            # can read), then privileges are dropped, as `runuser -u nobody` would.
            code = ("import encodings.idna, os, socket\n"
                    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                    f"s=socket.create_connection(('127.0.0.1',{port}),timeout=5)\n"
                    f"s.sendall(b'GET / HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n"
                    "Upgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
                    "Sec-WebSocket-Version: 13\\r\\n\\r\\n')\n"
                    "print(s.recv(4096).split(b'\\r\\n',1)[0].split()[1].decode())\n")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                  text=True, timeout=30)
            figures["other uid handshake status"] = proc.stdout.strip() or proc.stderr[-200:]
        return figures
    finally:
        daemon.stop()


def attack_cron_brick(repo: Path, tmp: Path) -> dict[str, Any]:
    daemon = Daemon(repo, tmp).start()
    raw = Raw(daemon.socket_path)
    answer = raw.call("engine::register_trigger", {
        "trigger_type": "cron", "function_id": "f",
        "config": {"expression": "0 0 0 30 2 *"}})
    raw.close()
    daemon.stop()
    again = Daemon(repo, tmp)
    try:
        again.start()
        restarted = "started"
    except RuntimeError as exc:
        restarted = str(exc)
    finally:
        again.stop()
    return {"register answer": answer.get("error", {}).get("code", "stored (no error)"),
            "restart": restarted}


def attack_amplification(repo: Path, tmp: Path, functions: int = 20_000,
                         rss_cap_mib: float = 3000) -> dict[str, Any]:
    """20 000 registrations, then pipelined ``engine::functions::list`` calls nobody reads:
    three Unix-socket attackers one after the other (one 256 KiB write each) and one
    WebSocket attacker (the same calls as messages)."""
    from websockets.sync.client import connect

    port = free_port()
    daemon = Daemon(repo, tmp, "--log-level", "WARNING", ws_port=port).start()
    sampling = threading.Event()
    peak = [daemon.rss_mib()]

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], daemon.rss_mib())
            if peak[0] > rss_cap_mib:
                assert daemon.proc is not None
                daemon.proc.kill()  # spare the machine: the figure is "over the cap"
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        owner = Raw(daemon.socket_path)
        for i in range(0, functions, 1000):
            owner.sock.sendall(b"".join(
                json.dumps({"type": "registerfunction", "id": f"fn::{j:06d}"}).encode() + b"\n"
                for j in range(i, i + 1000)))
        owner.ping_s()
        sampler.start()
        one = (b'{"type":"invokefunction","function_id":"engine::functions::list",'
               b'"invocation_id":"x"}\n')
        batch = one * (256 * 1024 // len(one))
        other = Raw(daemon.socket_path, timeout=120)
        worst_ping = 0.0
        attackers = []
        for _ in range(3):
            attacker = Raw(daemon.socket_path)
            attacker.sock.sendall(batch)  # one write, never read
            attackers.append(attacker)
            until = time.monotonic() + 4
            while time.monotonic() < until and peak[0] <= rss_cap_mib:
                worst_ping = max(worst_ping, other.ping_s())
                time.sleep(0.05)
        ws = connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None).__enter__()
        ws.recv()
        text = one.decode().strip()
        for _ in range(batch.count(b"\n")):
            ws.send(text)
        until = time.monotonic() + 6
        while time.monotonic() < until and peak[0] <= rss_cap_mib:
            worst_ping = max(worst_ping, other.ping_s())
            time.sleep(0.05)
    except OSError as exc:
        outcome = f"{type(exc).__name__} (daemon killed at the RSS cap)" if peak[0] > \
            rss_cap_mib else f"{type(exc).__name__}"
        return {"daemon peak RSS MiB": round(peak[0]), "ended with": outcome}
    else:
        return {"calls per attacker": batch.count(b"\n"),
                "daemon peak RSS MiB": round(peak[0]),
                "RSS cap hit (daemon killed)": peak[0] > rss_cap_mib,
                "other client's worst ping s": round(worst_ping, 3)}
    finally:
        sampling.set()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()


def attack_bad_utf8_to_ws(repo: Path, tmp: Path) -> dict[str, Any]:
    from websockets.sync.client import connect

    port = free_port()
    daemon = Daemon(repo, tmp, ws_port=port).start()
    try:
        ws = connect(f"ws://127.0.0.1:{port}", compression=None).__enter__()
        ws.recv()
        ws.send(json.dumps({"type": "registerfunction", "id": "ws::f"}))
        caller = Raw(daemon.socket_path)
        caller.ping_s()
        caller.sock.sendall(b'{"type":"invokefunction","function_id":"ws::f",'
                            b'"invocation_id":"bad","data":"\xff\xfe"}\n')
        try:
            answer = caller.recv()
            caller_outcome = f"answered {answer.get('error', {}).get('code')}"
            caller_outcome += f", still connected: {caller.ping_s() < 5}"
        except (EOFError, OSError) as exc:
            caller_outcome = f"connection dropped ({type(exc).__name__})"
        listed = Raw(daemon.socket_path).call("engine::functions::list")["result"]["functions"]
        deep = b'{"type":"invokefunction","function_id":"x","invocation_id":"d","data":' + \
            b"[" * 1000 + b"]" * 1000 + b"}\n"
        deep_client = Raw(daemon.socket_path)
        deep_client.sock.sendall(deep)
        try:
            deep_answer = deep_client.recv()
            deep_outcome = f"answered {deep_answer.get('error', {}).get('code')}"
        except (EOFError, OSError) as exc:
            deep_outcome = f"connection dropped ({type(exc).__name__})"
        return {"caller after invalid UTF-8": caller_outcome,
                "ws worker still serves ws::f": any(f["function_id"] == "ws::f" for f in listed),
                "1000-deep frame": deep_outcome}
    finally:
        daemon.stop()


def attack_silent_worker(repo: Path, tmp: Path, calls: int = 10_000) -> dict[str, Any]:
    (tmp / "config.toml").write_text("call_timeout_ms = 2000\n")
    daemon = Daemon(repo, tmp, "--log-level", "WARNING").start()
    try:
        silent = Raw(daemon.socket_path)
        silent.send({"type": "registerfunction", "id": "silent"})
        silent.ping_s()
        caller = Raw(daemon.socket_path)
        caller.sock.sendall(b"".join(
            b'{"type":"invokefunction","function_id":"silent","action":{"type":"void"}}\n'
            for _ in range(calls)))
        caller.ping_s()
        tracked = caller.call("engine::status")["result"]["pending_invocations"]
        time.sleep(3.5)  # past the configured 2 s deadline
        later = caller.call("engine::status")["result"]["pending_invocations"]
        return {"void calls sent": calls, "tracked at once": tracked,
                "tracked after 3.5 s (deadline 2 s if supported)": later,
                "daemon RSS MiB": round(daemon.rss_mib())}
    finally:
        daemon.stop()


def attack_files(repo: Path, tmp: Path) -> dict[str, Any]:
    daemon = Daemon(repo, tmp).start()
    try:
        modes = {name: oct(os.stat(path).st_mode & 0o777)
                 for name, path in (("iii.db", tmp / "data" / "iii.db"),
                                    ("pidfile", tmp / "iii.sock.pid"))}
    finally:
        daemon.stop()
    shared = tmp / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    started = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--socket",
                                str(shared / "iii.sock"), "--data-dir", str(tmp / "data"),
                                "--ws-port", "0", "--http-port", "0"],
                               env=Daemon(repo, tmp).env, cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = started.communicate(timeout=3)
        shared_dir = f"refused: {err.strip().splitlines()[-1]}" if err.strip() else "exited"
    except subprocess.TimeoutExpired:
        started.terminate()
        started.wait(10)
        shared_dir = "served from a world-writable directory"
    daemon = Daemon(repo, tmp).start()
    try:
        raw = Raw(daemon.socket_path)
        raw.send({"type": "registerfunction", "id": "evil\x1b]52;c;SGVsbG8=\x07\x1b[2J"})
        raw.ping_s()
        out = subprocess.run([sys.executable, "-m", "iii_cli", "list", "functions", "-o",
                              "table"], env=daemon.env, cwd=repo, capture_output=True,
                             timeout=30)
    finally:
        daemon.stop()
    return {**{f"{k} mode": v for k, v in modes.items()}, "socket in a 0777 dir": shared_dir,
            "raw ESC bytes printed by iii list": out.stdout.count(b"\x1b")}


def attack_cli(repo: Path, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    daemon = Daemon(repo, tmp, "--max-frame-bytes", str(MIB)).start()
    try:
        big = tmp / "big.json"
        big.write_text(json.dumps({"pad": "x" * (2 * MIB)}))
        code, _, tb = run_cli(daemon, "trigger", "nothing", "--json", f"@{big}")
        figures["payload over the frame limit: exit"] = code
        figures["payload over the frame limit: tracebacks"] = tb
    finally:
        daemon.stop()
    # A "daemon" that accepts and trickles one byte every 0.2 s.
    trickle_dir = tmp / "trickle"
    trickle_dir.mkdir(mode=0o700)
    path = trickle_dir / "iii.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        conns = []
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conns.append(server.accept()[0])
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.send(b" ")
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    fake = Daemon(repo, trickle_dir)
    try:
        code, took, tb = run_cli(fake, "trigger", "f", "--timeout-ms", "1000", timeout=30)
        figures["trickling daemon, trigger --timeout-ms 1000: exit"] = code
        figures["trickling daemon, trigger: seconds"] = round(took, 1)
        code, took, tb = run_cli(fake, "list", "functions", timeout=30)
        figures["trickling daemon, list: exit"] = code
        figures["trickling daemon, list: seconds"] = round(took, 1)
        figures["trickling daemon, list: tracebacks"] = tb
        code, took, tb = run_cli(fake, "daemon", "status", timeout=30)
        figures["trickling daemon, status: exit"] = code
        figures["trickling daemon, status: seconds"] = round(took, 1)
    finally:
        stop.set()
        thread.join()
        server.close()
    (tmp / "d2").mkdir(mode=0o700)
    daemon = Daemon(repo, tmp / "d2").start()
    try:
        code, _, tb = run_cli(daemon, "trigger", "f", "--timeout-ms", "1" + "0" * 30)
        figures["--timeout-ms 10^30: exit"] = code
        figures["--timeout-ms 10^30: tracebacks"] = tb
        worker = Raw(daemon.socket_path, timeout=60)
        worker.send({"type": "registerfunction", "id": "big"})
        worker.ping_s()
        reply = b'"' + b"y" * (60 * MIB) + b'"'

        def answer() -> None:
            message = worker.recv()
            worker.sock.sendall(b'{"type":"invocationresult","invocation_id":"'
                                + message["invocation_id"].encode() + b'","result":'
                                + reply + b"}\n")

        responder = threading.Thread(target=answer, daemon=True)
        responder.start()
        code, took, _ = run_cli(daemon, "trigger", "big", "-o", "json", timeout=120)
        responder.join(10)
        figures["60 MiB reply: exit"] = code
        figures["60 MiB reply: seconds"] = round(took, 2)
    finally:
        daemon.stop()
    return figures


def attack_sdk_storm(repo: Path, tmp: Path, window_s: float = 5.0,
                     initial_delay_ms: int = 1000) -> dict[str, Any]:
    """A server that accepts and closes at once: how often does the SDK reconnect in
    ``window_s`` from its first connection?"""
    path = tmp / "storm.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(0.05)
    code = ("import logging,sys,time\nlogging.disable(logging.CRITICAL)\n"
            "from iii_sdk import III, InitOptions, ReconnectionConfig\n"
            f"w=III({str(path)!r}, InitOptions(reconnection_config=ReconnectionConfig("
            f"initial_delay_ms={initial_delay_ms})))\ntime.sleep(60)\n")
    worker = subprocess.Popen([sys.executable, "-c", code],
                              env=dict(os.environ, PYTHONPATH=str(repo)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    accepted = 0
    deadline = time.monotonic() + 30  # until the first connection: the worker starting
    try:
        while time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if not accepted:
                deadline = time.monotonic() + window_s
            accepted += 1
            conn.close()
    finally:
        worker.kill()
        worker.wait()
        server.close()
    return {f"connections in {window_s:g} s from a closed-at-once server": accepted}


ATTACKS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "ws_access": attack_ws_access,
    "cron_brick": attack_cron_brick,
    "amplification": attack_amplification,
    "bad_utf8_and_depth": attack_bad_utf8_to_ws,
    "silent_worker": attack_silent_worker,
    "files_and_names": attack_files,
    "cli": attack_cli,
    "sdk_storm": attack_sdk_storm,
    **TRUST_ATTACKS,  # the trust issue's
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "attacks.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name in args.only or ATTACKS:
        with tempfile.TemporaryDirectory(prefix="iii-atk-", dir="/tmp") as tmp:
            try:
                results[name] = ATTACKS[name](args.repo.resolve(), Path(tmp))
            except Exception as exc:  # one attack's surprise must not hide the others
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
        for key, value in results[name].items():
            print(f"{name:20} {key:55} {value}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
