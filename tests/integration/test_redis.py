"""Several daemons, one real ``redis-server``: pub/sub shared across daemons, a binding
held by several daemons fires once per message, Redis going away and coming back,
start-up without it, and its password kept out of sight."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import connect, register_worker
from tests.helpers import (
    REPO,
    DaemonProcess,
    RedisServer,
    ThreadDaemon,
    child_env,
    free_port,
    run_iii,
    state_round_trip,
    succeeds,
    wait_for,
)


class Listener:
    """A worker on one daemon: ``NAME::got`` records what its triggers deliver."""

    def __init__(self, daemon: Any, name: str) -> None:
        self.seen: list[Any] = []
        self.lock = threading.Lock()
        self.worker = register_worker(str(daemon.socket_path))

        def got(data: Any) -> None:
            with self.lock:
                self.seen.append(data)

        self.worker.register_function(f"{name}::got", got)

    def bind(self, trigger_type: str, trigger_id: str, config: dict[str, Any],
             function_id: str) -> None:
        self.worker.register_trigger({"type": trigger_type, "id": trigger_id,
                                      "function_id": function_id, "config": config}).ready(5)


@contextlib.contextmanager
def cluster(tmp: Path, redis_server: RedisServer, names: str, trigger_type: str,
            config: dict[str, Any]) -> Iterator[tuple[list[Any], list[Listener]]]:
    """A daemon for each of ``names`` on one Redis, each with a listener whose
    ``NAME::got`` is bound twice: ``own-NAME`` (its own) and ``replica`` (the same trigger
    id on every daemon, as replicas of one app bind it)."""
    daemons = [ThreadDaemon(tmp / name, "--redis-url", redis_server.url).start()
               for name in names]
    listeners = [Listener(d, name) for d, name in zip(daemons, names, strict=True)]
    try:
        for listener, name in zip(listeners, names, strict=True):
            for trigger_id in (f"own-{name}", "replica"):
                listener.bind(trigger_type, trigger_id, config, f"{name}::got")
        yield daemons, listeners
    finally:
        for listener in listeners:
            listener.worker.shutdown()
        for daemon in daemons:
            daemon.stop()


def test_publish_reaches_every_daemon_and_a_shared_binding_fires_once(
        short_tmp: Path, redis_server: RedisServer) -> None:
    with cluster(short_tmp, redis_server, "abc", "subscribe", {"topic": "news"}) as (
            daemons, listeners):
        for n, daemon in enumerate(daemons):  # each daemon publishes once
            published = run_iii(daemon.tmp, "trigger", "publish", "topic=news", f"data={n}")
            assert published.returncode == 0, published.stderr
            assert json.loads(published.stdout)["daemons"] == 3
        # Each daemon's own binding got all three; "replica" fired once per message in all.
        wait_for(lambda: sum(len(li.seen) for li in listeners) == 3 * 3 + 3)
        for listener in listeners:
            own = [d for d in listener.seen]
            assert sorted(own).count(0) >= 1 and sorted(own).count(2) >= 1
        every = sorted(d for li in listeners for d in li.seen)
        assert every == [0] * 4 + [1] * 4 + [2] * 4  # 3 own + 1 replica, per message
        status = json.loads(run_iii(daemons[0].tmp, "daemon", "status", "-o", "json").stdout)
        assert status["backend"] == {**status["backend"], "kind": "redis", "state": "up",
                                     "url": redis_server.url}


@pytest.mark.daemon_process
def test_redis_away_fails_fast_local_calls_go_on_and_it_comes_back(short_tmp: Path) -> None:
    # With AOF (appendfsync always): what Redis acknowledged survives its stop.
    redis_server = RedisServer(short_tmp / "redis", "--appendonly", "yes",
                               "--appendfsync", "always").start()
    daemon = DaemonProcess(short_tmp, "--redis-url", redis_server.url).start()
    listener = Listener(daemon, "a")
    try:
        listener.bind("subscribe", "own", {"topic": "news"}, "a::got")
        kept = run_iii(short_tmp, "trigger", "later::job", "--enqueue", "jobs", "n=7")
        assert kept.returncode == 0, kept.stderr  # acknowledged by Redis, nobody serves it
        redis_server.stop()
        failed = run_iii(short_tmp, "trigger", "publish", "topic=news", "data=1")
        assert failed.returncode == 5, failed.stderr
        error = json.loads(failed.stderr)
        assert error["code"] == "backend_unavailable" and redis_server.url in error["message"]
        again = run_iii(short_tmp, "trigger", "publish", "topic=news", "data=2")
        assert again.returncode == 5  # at once now: it is known to be away
        state = run_iii(short_tmp, "trigger", "state::get", "scope=s", "key=k")
        assert state.returncode == 5 and "backend_unavailable" in state.stderr
        enqueued = run_iii(short_tmp, "trigger", "a::got", "--enqueue", "jobs", "n=2")
        assert enqueued.returncode == 5 and "backend_unavailable" in enqueued.stderr
        local = run_iii(short_tmp, "trigger", "a::got", "n=1")
        assert local.returncode == 0, local.stderr  # what needs no Redis goes on
        status = run_iii(short_tmp, "daemon", "status").stdout
        assert "(down since" in status
        redis_server.start()  # the same port: the daemon reconnects
        wait_for(lambda: succeeds(daemon.socket_path, "publish", {"topic": "news", "data": 3}),
                 timeout=15, message="publish to work again")
        wait_for(lambda: 3 in listener.seen)
        assert {"n": 1} in listener.seen
        # The message Redis acknowledged before it went away is delivered now.
        listener.worker.register_function("later::job", listener.seen.append)
        wait_for(lambda: {"n": 7} in listener.seen, message="the kept message")
    finally:
        listener.worker.shutdown()
        daemon.stop()
        redis_server.stop()
    log = daemon.log()
    assert log.count("is unreachable") == 1 and log.count("is back after") == 1
    assert "runs without AOF" not in log


def test_a_daemon_started_while_redis_is_down_refuses_with_one_line(short_tmp: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket",
                           str(short_tmp / "iii.sock"), "--data-dir", str(short_tmp / "data"),
                           "--redis-url", url], env=child_env(short_tmp), cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iii daemon:")]
    assert len(lines) == 1 and "cannot reach Redis at redis://:***@127.0.0.1" in lines[0]
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr
    bad = run_iii(short_tmp, "daemon", "start", "--redis-url", "http://nope")
    assert bad.returncode == 1 and "must start with redis://" in bad.stderr


def test_the_password_works_and_is_never_shown(short_tmp: Path) -> None:
    server = RedisServer(short_tmp / "redis", "--requirepass", "s3cret").start()
    try:
        plain = f"redis://127.0.0.1:{server.port}/0"
        (short_tmp / "config.toml").write_text(
            f'[redis]\nurl = "redis://:s3cret@127.0.0.1:{server.port}/0"\n')
        env = child_env(short_tmp)
        started = run_iii(short_tmp, "daemon", "start")
        assert started.returncode == 0, started.stderr
        published = run_iii(short_tmp, "trigger", "publish", "topic=t", "data=1")
        assert published.returncode == 0, published.stderr
        shown = [run_iii(short_tmp, "daemon", "status").stdout,
                 run_iii(short_tmp, "daemon", "status", "-o", "json").stdout,
                 run_iii(short_tmp, "config", "show").stdout]
        assert all("s3cret" not in text and "***" in text for text in shown), shown
        run_iii(short_tmp, "daemon", "stop")
        log = (Path(env["III_LOG_DIR"]) / "daemon.log").read_text()
        assert "s3cret" not in log and "***@127.0.0.1" in log

        # Or from the environment variable [redis] password_env names.
        (short_tmp / "config.toml").write_text(
            f'[redis]\nurl = "{plain}"\npassword_env = "IIITEST_REDIS_PW"\n')
        wrong = run_iii(short_tmp, "daemon", "start", env={**env, "IIITEST_REDIS_PW": "nope"})
        assert wrong.returncode == 1 and "nope" not in wrong.stderr
        right = run_iii(short_tmp, "daemon", "start", env={**env, "IIITEST_REDIS_PW": "s3cret"})
        assert right.returncode == 0, right.stderr
        with connect(str(short_tmp / "iii.sock")) as client:
            assert client.trigger({"function_id": "publish",
                                   "payload": {"topic": "t", "data": 2}})["daemons"] == 1
        run_iii(short_tmp, "daemon", "stop")
    finally:
        server.stop()


def test_state_and_streams_are_shared_and_triggers_fire_once_in_the_cluster(
        short_tmp: Path, redis_server: RedisServer) -> None:
    with cluster(short_tmp, redis_server, "ab", "state", {"scope": "orders"}) as (
            daemons, listeners):
        # On b, for changes made on a.
        listeners[1].bind("stream", "chat-b", {"stream_name": "chat"}, "b::got")
        with connect(str(daemons[0].socket_path)) as a, \
                connect(str(daemons[1].socket_path)) as b:
            state_round_trip(a, b)  # read-your-writes across daemons
            assert "orders" in b.trigger({"function_id": "state::list_groups"})["groups"]
            # Stream items too: set on one daemon, read and listed on the other.
            item = {"stream_name": "chat", "group_id": "room", "item_id": "m1"}
            a.trigger({"function_id": "stream::set", "payload": {**item, "data": "hi"}})
            assert b.trigger({"function_id": "stream::get", "payload": item}) == "hi"
            assert b.trigger({"function_id": "stream::list_groups",
                              "payload": {"stream_name": "chat"}}) == ["room"]
        # Two changes: each daemon's own trigger saw both; "replica" fired once for each.
        wait_for(lambda: sum(len(li.seen) for li in listeners) == 2 * 2 + 2 + 1)
        kinds = sorted(e["event_type"] for li in listeners for e in li.seen)
        assert kinds == ["create"] + ["state:created"] * 3 + ["state:updated"] * 3
        [change] = [e for li in listeners for e in li.seen if e["type"] == "stream"]
        assert (change["streamName"], change["groupId"], change["id"]) == ("chat", "room", "m1")


def test_a_cron_held_by_several_daemons_ticks_once(short_tmp: Path,
                                                   redis_server: RedisServer) -> None:
    with cluster(short_tmp, redis_server, "ab", "cron", {"expression": "* * * * * *"}) as (
            _, listeners):

        def ticks(trigger_id: str) -> list[str]:
            return sorted(e["scheduled_time"] for li in listeners for e in li.seen
                          if e["job_id"] == trigger_id)

        wait_for(lambda: len(ticks("replica")) >= 3, timeout=10, message="three ticks")
        replica = ticks("replica")
        assert len(replica) == len(set(replica))  # no tick fired twice in the cluster
        assert len(ticks("own-a")) >= 2 and len(ticks("own-b")) >= 2  # each its own


def test_a_redis_that_stops_answering_fails_calls_at_their_deadline_and_comes_back(
        short_tmp: Path) -> None:
    """Redis hangs (DEBUG SLEEP) without dropping a connection: a call fails after the
    operation timeout, not later, and the daemon finds Redis back by itself."""
    server = RedisServer(short_tmp / "redis", "--enable-debug-command", "yes").start()
    daemon = ThreadDaemon(short_tmp, "--redis-url", server.url).start()
    try:
        sleeper = threading.Thread(target=subprocess.run, args=(
            ["redis-cli", "-p", str(server.port), "DEBUG", "SLEEP", "5"],), kwargs={
            "capture_output": True, "timeout": 30})
        sleeper.start()
        wait_for(lambda: not server.answers(), message="redis to hang")
        started = time.monotonic()
        hung = run_iii(short_tmp, "trigger", "state::get", "scope=s", "key=k")
        took = time.monotonic() - started
        assert hung.returncode == 5 and "backend_unavailable" in hung.stderr
        assert took < 2.0 + 1.5  # the operation timeout, and the CLI's own start
        sleeper.join(30)
        wait_for(lambda: succeeds(daemon.socket_path, "state::get", {"scope": "s", "key": "k"}),
                 timeout=15, message="the daemon to find Redis back")
    finally:
        daemon.stop()
        server.stop()


def test_rediss_urls_speak_tls(short_tmp: Path) -> None:
    """A Redis that only speaks TLS, with a certificate of our own CA: rediss:// works."""
    certs = short_tmp / "tls"
    certs.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=iii test CA", "-keyout", "ca.key", "-out", "ca.crt")
    (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "redis.key", "-out", "redis.csr")
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "redis.crt")
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "redis.crt"), "--tls-key-file",
         str(certs / "redis.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
         "--tls-auth-clients", "no", "--save", "", "--dir", str(certs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            import socket

            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, message="redis-server to listen")
        proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket",
                               str(short_tmp / "iii.sock"), "--data-dir",
                               str(short_tmp / "data"), "--redis-url",
                               f"redis://127.0.0.1:{port}/0"], env=child_env(short_tmp),
                              cwd=REPO, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr  # no TLS: no
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.crt'}"
        daemon = ThreadDaemon(short_tmp, "--redis-url", url).start()
        try:
            with connect(str(daemon.socket_path)) as client:
                client.trigger({"function_id": "state::set",
                                "payload": {"scope": "tls", "key": "k", "value": 1}})
                assert client.trigger({"function_id": "state::get",
                                       "payload": {"scope": "tls", "key": "k"}}) == 1
        finally:
            daemon.stop()
    finally:
        server.terminate()
        server.wait(10)


def test_state_may_stay_local_beside_redis_and_a_backend_must_exist(
        short_tmp: Path, redis_server: RedisServer) -> None:
    """``[state] backend = "local"``: this daemon's state stays its own while the rest is
    shared; a backend named without its connection is a config error at start."""
    for name in "ab":
        (short_tmp / name).mkdir()
    (short_tmp / "a" / "config.toml").write_text('[state]\nbackend = "local"\n')
    a = ThreadDaemon(short_tmp / "a", "--redis-url", redis_server.url).start()
    b = ThreadDaemon(short_tmp / "b", "--redis-url", redis_server.url).start()
    try:
        with connect(str(a.socket_path)) as client:
            client.trigger({"function_id": "state::set",
                            "payload": {"scope": "s", "key": "k", "value": 1}})
            shares = client.trigger({"function_id": "engine::status"})["backend"]["shares"]
        assert shares == ["pub/sub", "streams", "queues", "cron"]
        with connect(str(b.socket_path)) as client:
            assert client.trigger({"function_id": "state::get",
                                   "payload": {"scope": "s", "key": "k"}}) is None
    finally:
        a.stop()
        b.stop()
    for config, wanted in (('[state]\nbackend = "redis"\n', "no Redis URL is set"),
                           ('[streams]\nbackend = "bridge"\n', "there is no [bridge] url")):
        (short_tmp / "config.toml").write_text(config)
        refused = run_iii(short_tmp, "daemon", "start")
        assert refused.returncode == 1 and wanted in refused.stderr, refused.stderr
