"""HTTP triggers against a real daemon: real HTTP requests, SDK workers, channels over
the WebSocket listener, and the CLI (issue: HTTP triggers and channels)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import InitOptions, register_worker
from tests.helpers import DaemonProcess, free_port, official_worker, rss_kib, run_iii, wait_for
from tests.integration.test_security import ROOT, as_nobody


class Site:
    """A daemon with its HTTP and WebSocket listeners on free ports, and a worker."""

    def __init__(self, tmp: Path, config: str = "") -> None:
        self.tmp = tmp
        (tmp / "config.toml").write_text(config)
        self.http_port, self.ws_port = free_port(), free_port()
        self.daemon = DaemonProcess(tmp, "--http-port", str(self.http_port),
                                    "--ws-port", str(self.ws_port)).start()
        self.worker = register_worker(str(self.daemon.socket_path),
                                      InitOptions(connect_timeout_s=5))
        self.seen: list[Any] = []

    def close(self) -> None:
        self.worker.shutdown()
        if self.daemon.alive:
            self.daemon.stop()

    def serve(self, function_id: str, handler: Any, api_path: str, method: str = "GET",
              **config: Any) -> None:
        self.worker.register_function(function_id, handler)
        self.worker.register_trigger({"type": "http", "function_id": function_id,
                                      "config": {"api_path": api_path,
                                                 "http_method": method, **config}})
        self.worker.ping()

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as tmp:
        site = Site(Path(tmp), '[http]\nmax_body_bytes = 100_000_000\n'
                               'cors_origins = ["http://app.example"]\n')
        yield site
        site.close()


def echo(seen: list[Any], answer: Any = None) -> Any:
    def handler(data: Any) -> Any:
        plain = {k: v for k, v in data.items() if k not in ("request_body", "response")}
        plain["refs"] = sorted(k for k in ("request_body", "response") if k in data)
        seen.append(plain)
        return answer
    return handler


def test_a_new_user_exposes_post_orders_id_with_one_register_trigger(site: Site) -> None:
    seen: list[Any] = []
    site.worker.register_function("orders::create", echo(seen, {
        "status_code": 201, "headers": {"X-Order": "made"}, "body": {"ok": True}}))
    site.worker.ping()
    cli = run_iii(site.tmp, "register-trigger", "--type", "http", "--function",
                  "orders::create", "--config",
                  '{"api_path": "orders/:id", "http_method": "POST"}')
    assert cli.returncode == 0, cli.stderr
    status, headers, body = site.request("POST", "/orders/42?dry=1&dry=2",
                                         json.dumps({"qty": 2}),
                                         {"Content-Type": "application/json",
                                          "X-Trace": "t1"})
    assert (status, headers["x-order"], json.loads(body)) == (201, "made", {"ok": True})
    [got] = seen
    assert got["method"] == "POST" and got["path"] == "orders/:id"
    assert got["path_params"] == {"id": "42"} and got["query_params"] == {"dry": "1"}
    assert got["headers"]["x-trace"] == "t1" and got["body"] == {"qty": 2}
    assert got["trigger"] == {"type": "http", "path": "orders/:id", "method": "POST"}
    assert got["refs"] == ["request_body", "response"]
    listed = run_iii(site.tmp, "list", "triggers", "-o", "json")
    [row] = [t for t in json.loads(listed.stdout) if t["function_id"] == "orders::create"]
    assert row["url"] == f"http://127.0.0.1:{site.http_port}/orders/:id"
    # Every request is an invocation with source trigger:http in the events.
    events = site.worker.trigger({"function_id": "engine::events::list",
                                  "payload": {"event": "invocation.finished"}})["events"]
    assert any(e["source"] == "trigger:http" and e["function_id"] == "orders::create"
               for e in events)


@pytest.mark.parametrize("result, status, header, body", [
    ({"statusCode": 202, "headers": ["X-Kind: list"], "body": [1]}, 202,
     ("x-kind", "list"), b"[1]"),
    ({"status_code": 200, "headers": {"Content-Type": "text/plain"}, "body": "hi"}, 200,
     ("content-type", "text/plain"), b"hi"),
    ({"plain": "result"}, 200, ("content-type", "application/json"), b'{"plain":"result"}'),
])
def test_return_values_become_responses(site: Site, result: Any, status: int,
                                        header: tuple[str, str], body: bytes) -> None:
    path = f"ret/{status}/{header[1].replace('/', '-')}"
    site.serve(f"ret::{path}", lambda data: result, path)
    got = site.request("GET", "/" + path)
    assert (got[0], got[1][header[0]], got[2]) == (status, header[1], body)


def test_errors_have_the_upstream_statuses(site: Site) -> None:
    def broken(data: Any) -> Any:
        raise KeyError("no such order")

    site.serve("err::broken", broken, "err/broken")
    site.serve("err::slow", lambda data: time.sleep(2), "err/slow", timeout_ms=200)
    site.serve("err::gate", lambda data: data["query_params"].get("let") == "1", "err/gate")
    site.serve("err::gated", lambda data: "in", "err/gated", condition_function_id="err::gate")
    site.worker.register_trigger({"type": "http", "function_id": "err::nobody",
                                  "config": {"api_path": "err/nobody"}})
    site.worker.ping()
    assert site.request("GET", "/err/none")[0] == 404
    status, headers, _ = site.request("POST", "/err/broken")
    assert (status, headers["allow"]) == (405, "GET")
    status, _, body = site.request("GET", "/err/broken")
    failure = json.loads(body)
    assert status == 500 and failure["error"] == "KeyError: 'no such order'"
    wait_for(lambda: failure["error_id"] in site.daemon.log(), message="the id in the log")
    assert "raise KeyError" in site.daemon.log()  # with the stack
    assert site.request("GET", "/err/slow")[0] == 504
    assert site.request("GET", "/err/nobody")[0] == 503
    status, _, body = site.request("GET", "/err/gated")
    assert (status, json.loads(body)) == (422, {"error": "Request condition not met",
                                               "skipped": True})
    assert site.request("GET", "/err/gated?let=1")[2] == b'"in"'
    status, _, body = site.request("PUT", "/orders/1", "x" * 10,
                                   {"Content-Length": str(200_000_000)})
    assert status in (405, 413)  # too large is decided before the route when announced
    status, _, body = site.request("POST", "/orders/1", "{not json",
                                   {"Content-Type": "application/json"})
    assert status == 400 and b"not valid JSON" in body


def test_a_second_trigger_for_a_route_is_refused_with_a_clear_message(site: Site) -> None:
    site.serve("dup::a", lambda data: "a", "dup/:id", "PUT")
    cli = run_iii(site.tmp, "register-trigger", "--type", "http", "--function", "dup::b",
                  "--config", '{"api_path": "/dup/:other", "http_method": "PUT"}')
    assert cli.returncode != 0
    assert "PUT /dup/:id is already served by trigger" in cli.stderr


def test_routes_come_and_go_with_triggers_and_workers(site: Site) -> None:
    other = register_worker(str(site.daemon.socket_path))
    try:
        other.register_function("live::f", lambda data: "here")
        trigger = other.register_trigger({"type": "http", "function_id": "live::f",
                                          "config": {"api_path": "live"}})
        other.ping()
        assert site.request("GET", "/live")[2] == b'"here"'
        trigger.unregister()
        other.ping()
        assert site.request("GET", "/live")[0] == 404
        other.register_trigger({"type": "http", "function_id": "live::f",
                                "config": {"api_path": "live"}})
        other.ping()
        assert site.request("GET", "/live")[0] == 200
    finally:
        other.shutdown()
    wait_for(lambda: site.request("GET", "/live")[0] == 404, message="the route to go")


def test_a_large_upload_streams_through_the_request_channel(site: Site) -> None:
    def count(data: Any) -> Any:
        total = sum(len(chunk) for chunk in data["request_body"])
        return {"bytes": total, "body": data["body"]}

    site.serve("up::count", count, "up", "POST")
    rss_before = rss_kib(site.daemon)
    payload = b"z" * 60_000_000
    status, _, body = site.request("POST", "/up", payload,
                                   {"Content-Type": "application/octet-stream"})
    assert (status, json.loads(body)) == (200, {"bytes": 60_000_000, "body": None})
    # Streamed, never held whole: the daemon grew by far less than the body.
    assert rss_kib(site.daemon) - rss_before < 30_000


def test_a_response_streams_as_the_function_writes_it(site: Site) -> None:
    go_on = threading.Event()

    def stream(data: Any) -> None:
        out = data["response"]
        out.send_message(json.dumps({"type": "set_status", "status_code": 207}))
        out.send_message(json.dumps({"type": "set_headers",
                                     "headers": {"content-type": "text/plain"}}))
        out.write_sync(b"first;")
        go_on.wait(10)  # the client reads the first part before the rest is written
        out.write_sync(b"second")
        out.close()

    site.serve("stream::out", stream, "stream")
    conn = site.connection()
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert (response.status, response.getheader("content-type")) == (207, "text/plain")
    assert response.read1() == b"first;"
    go_on.set()
    assert response.read() == b"second"
    conn.close()


def test_a_slow_route_does_not_block_others_and_keep_alive_and_pipelining_work(
        site: Site) -> None:
    release = threading.Event()
    site.serve("conc::slow", lambda data: release.wait(10) and "slow", "conc/slow")
    site.serve("conc::fast", lambda data: "fast", "conc/fast")
    results: list[bytes] = []
    slow = threading.Thread(target=lambda: results.append(site.request("GET",
                                                                       "/conc/slow")[2]))
    slow.start()
    try:
        conn = site.connection()
        for _ in range(3):  # one connection, several requests: keep-alive
            conn.request("GET", "/conc/fast")
            assert conn.getresponse().read() == b'"fast"'
        conn.close()
        assert not results  # the slow one still waits
    finally:
        release.set()
        slow.join(10)
    assert results == [b'"slow"']
    with socket.create_connection(("127.0.0.1", site.http_port), timeout=10) as raw:
        one = b"GET /conc/fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        raw.sendall(one * 2)  # pipelined: both in one write
        received = b""
        while received.count(b'"fast"') < 2:
            chunk = raw.recv(65536)
            assert chunk, received
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_a_client_that_sends_slowly_or_never_reads_costs_only_itself(site: Site) -> None:
    site.serve("big::get", lambda data: "x" * 2_000_000, "big")
    site.serve("small::get", lambda data: "ok", "small")
    rss_before = rss_kib(site.daemon)
    slow = socket.create_connection(("127.0.0.1", site.http_port))
    slow.sendall(b"GET /small HTTP/1.1\r\nHo")  # and then nothing
    readers = []
    for _ in range(4):  # 50 pipelined requests for 2 MB each, and never read a byte
        sock = socket.create_connection(("127.0.0.1", site.http_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 50)
        readers.append(sock)
    try:
        started = time.monotonic()
        assert site.request("GET", "/small")[2] == b'"ok"'  # others are served meanwhile
        assert time.monotonic() - started < 5
        wait_for(lambda: site.worker.trigger({"function_id": "engine::status"})
                 ["pending_invocations"] == 0, message="the answers it could write")
        # Each connection waits with its first answers unsent; the other 48 are not
        # made: 4 x 50 x 2 MB would be 400 MB.
        assert rss_kib(site.daemon) - rss_before < 60_000
    finally:
        slow.close()
        for sock in readers:
            sock.close()


def test_cors_only_for_configured_origins(site: Site) -> None:
    site.serve("cors::f", lambda data: "c", "cors", "POST")
    status, headers, _ = site.request("POST", "/cors", "", {"Origin": "http://app.example"})
    assert (status, headers["access-control-allow-origin"]) == (200, "http://app.example")
    status, headers, _ = site.request("OPTIONS", "/cors", None, {
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    status, headers, body = site.request("POST", "/cors", "", {"Origin": "http://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers
    assert b"cors_origins" in body
    assert "access-control-allow-origin" not in site.request("POST", "/cors")[1]
    status, _, body = site.request("POST", "/cors", "", {"Host": "evil.example"})
    assert status == 403 and b"host 'evil.example'" in body


def test_channels_between_workers_and_a_wrong_key(site: Site) -> None:
    channel = site.worker.create_channel()
    reader_got: list[bytes] = []
    messages: list[str] = []

    def read() -> None:
        channel.reader.on_message(messages.append)
        reader_got.append(channel.reader.read_all_sync())

    thread = threading.Thread(target=read)
    thread.start()
    channel.writer.send_message("hello")
    channel.writer.write_sync(b"a" * 200_000)
    channel.writer.close()
    thread.join(10)
    assert reader_got == [b"a" * 200_000] and messages == ["hello"]
    refs = site.worker.trigger({"function_id": "engine::channels::create", "payload": {}})
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    base = f"ws://127.0.0.1:{site.ws_port}/ws/channels/{refs['reader']['channel_id']}"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{base}?key=wrong&dir=read")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as missing:
        connect(f"ws://127.0.0.1:{site.ws_port}/ws/channels/nope?key=x&dir=read")
    assert missing.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as browser:  # the right key, from a web page
        connect(f"{base}?key={refs['reader']['access_key']}&dir=read",
                origin="https://evil.example")  # type: ignore[arg-type]
    assert browser.value.response.status_code == 403
    with connect(f"{base}?key={refs['reader']['access_key']}&dir=read") as ws:
        with pytest.raises(InvalidStatus) as twice:
            connect(f"{base}?key={refs['reader']['access_key']}&dir=read")
        assert twice.value.response.status_code == 409
        ws.close()


def reopened_status(url: str) -> int | None:
    """Opening a channel end again: None while it is still open (409), else the status
    (404 once the daemon dropped the channel)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url):
            return 200
    except InvalidStatus as refused:
        status: int = refused.response.status_code
        return None if status == 409 else status


def test_a_reader_that_leaves_a_quiet_channel_frees_it(site: Site) -> None:
    """The reader goes away while its writer is connected and sends nothing: the channel
    is dropped then (not at the writer's next frame), and the writer is told."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    refs = site.worker.trigger({"function_id": "engine::channels::create", "payload": {}})
    base = f"ws://127.0.0.1:{site.ws_port}/ws/channels/{refs['reader']['channel_id']}"
    reader_url = f"{base}?key={refs['reader']['access_key']}&dir=read"
    with connect(f"{base}?key={refs['writer']['access_key']}&dir=write") as writer:
        with connect(reader_url):
            pass  # the reader leaves at once
        assert wait_for(lambda: reopened_status(reader_url),
                        message="the channel to be dropped") == 404
        with pytest.raises(ConnectionClosed):
            writer.send(b"late")
            writer.recv(timeout=5)


def test_a_worker_that_shuts_down_closes_its_channel_ends(site: Site) -> None:
    """A reader still waiting when its worker shuts down is closed by the shutdown (not
    left open until the process exits), so the daemon drops the channel."""
    worker = register_worker(str(site.daemon.socket_path))
    channel = worker.create_channel()
    heard: list[str] = []
    channel.reader.on_message(heard.append)

    def read() -> None:
        with contextlib.suppress(Exception):  # it ends with the worker
            channel.reader.read_all_sync()

    threading.Thread(target=read, daemon=True).start()
    channel.writer.send_message("hello")
    wait_for(lambda: heard == ["hello"], message="the reader to be in")
    worker.shutdown()
    url = (f"ws://127.0.0.1:{site.ws_port}/ws/channels/{channel.reader_ref['channel_id']}"
           f"?key={channel.reader_ref['access_key']}&dir=read")
    assert wait_for(lambda: reopened_status(url), message="the channel to be dropped") == 404


def test_stopping_does_not_wait_long_for_a_silent_websocket_peer(short_tmp: Path) -> None:
    """A TCP connection to the WebSocket port that never sends its handshake holds one
    of the listener's handshakes; stopping waits a second for such peers, not more."""
    port = free_port()
    daemon = DaemonProcess(short_tmp, "--ws-port", str(port)).start()
    with socket.create_connection(("127.0.0.1", port)):
        wait_for(lambda: "websocket" in run_iii(short_tmp, "daemon", "status").stdout,
                 message="the listener")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 3.5  # it waited 5 s and more before


def test_the_daemon_status_shows_the_http_listener(site: Site) -> None:
    out = run_iii(site.tmp, "daemon", "status")
    assert out.returncode == 0 and f"http://127.0.0.1:{site.http_port}" in out.stdout


def test_limits_token_and_a_streamed_body_past_the_limit(short_tmp: Path) -> None:
    site = Site(short_tmp, '[http]\nmax_body_bytes = 1000\ntoken = "s3cret"\n')
    try:
        site.serve("lim::f", lambda data: sum(len(c) for c in data["request_body"]), "lim",
                   "POST")
        auth = {"Authorization": "Bearer s3cret"}
        assert site.request("POST", "/lim", "x" * 10)[0] == 401
        assert site.request("POST", "/lim", "x" * 10, auth)[2] == b"10"
        assert site.request("POST", "/lim", "x" * 1001, auth)[0] == 413
        conn = site.connection()  # chunked: the limit is found while streaming
        conn.putrequest("POST", "/lim")
        conn.putheader("Authorization", "Bearer s3cret")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(4):
            conn.send(b"1f4\r\n" + b"y" * 500 + b"\r\n")
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 413
        conn.close()
    finally:
        site.close()


def test_the_official_sdk_serves_http_triggers_over_websocket(site: Site) -> None:
    from iii_helpers.http import HttpResponse, http

    async def upload(req: Any, res: Any) -> None:
        total = 0
        async for chunk in req.request_body:
            total += len(chunk)
        await res.status(202)
        await res.headers({"content-type": "text/plain", "x-total": str(total)})
        res.stream.write(b"got ")
        res.stream.write(str(total).encode())
        res.close()

    async def hello(req: Any) -> Any:
        return HttpResponse(status_code=200, headers={"x-by": "official"},
                            body={"hello": req["path_params"]["name"]})

    official = official_worker(site.ws_port)
    try:
        official.register_function("off::upload", http(upload))
        official.register_function("off::hello", hello)
        with pytest.warns(DeprecationWarning):
            official.register_trigger({"type": "http", "function_id": "off::upload",
                                       "config": {"api_path": "/off/upload",
                                                  "http_method": "POST"}})
            official.register_trigger({"type": "http", "function_id": "off::hello",
                                       "config": {"api_path": "/off/hello/:name"}})
        wait_for(lambda: site.request("GET", "/off/hello/ann")[0] == 200,
                 message="the official routes")
        status, headers, body = site.request("GET", "/off/hello/ann")
        assert (headers["x-by"], json.loads(body)) == ("official", {"hello": "ann"})
        status, headers, body = site.request("POST", "/off/upload", b"u" * 3_000_000,
                                             {"Content-Type": "application/octet-stream"})
        assert (status, headers["x-total"], body) == (202, "3000000", b"got 3000000")
    finally:
        official.shutdown()


@pytest.mark.skipif(not ROOT, reason="needs root to act as another user")
def test_another_user_over_loopback_is_refused(site: Site) -> None:
    site.serve("uid::f", lambda data: "mine", "uid")
    proc = as_nobody(f"""
s = socket.create_connection(("127.0.0.1", {site.http_port}), timeout=5)
s.sendall(b"GET /uid HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
print(s.recv(4096).split(b"\\r\\n", 1)[0].split()[1].decode())
""")
    assert proc.stdout.strip() == "403", proc.stderr
    wait_for(lambda: "http listener refused" in site.daemon.log()
             and "connections from other users are refused (uid 65534)" in site.daemon.log(),
             message="the refusal in the log")
    assert site.request("GET", "/uid")[2] == b'"mine"'  # our own user still gets in


def test_a_cross_site_browser_request_without_origin_is_refused(site: Site) -> None:
    """An <img>-style GET carries no Origin; the browser still says where it came from."""
    site.serve("xs::f", lambda data: "secret", "xs")
    refused = [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors",
         "Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},  # referrer withheld: origin "null"
        {"Sec-Fetch-Site": "same-site", "Referer": "http://127.0.0.1:8000/"},
        {"Referer": "http://evil.example/"},  # a browser without Sec-Fetch-*
    ]
    for headers in refused:
        status, _, body = site.request("GET", "/xs", None, headers)
        assert status == 403 and b"is not allowed" in body, headers
    allowed = [
        {},  # curl, SDKs, scripts: neither header
        {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},  # typed by the user
        {"Sec-Fetch-Site": "same-origin", "Referer": f"http://127.0.0.1:{site.http_port}/"},
        {"Sec-Fetch-Site": "cross-site", "Referer": "http://app.example/page"},  # allowed
        {"Referer": f"http://127.0.0.1:{site.http_port}/a"},
    ]
    for headers in allowed:
        status, _, body = site.request("GET", "/xs", None, headers)
        assert (status, json.loads(body)) == (200, "secret"), headers
    conn = site.connection()
    conn.putrequest("GET", "/xs", skip_host=True)
    conn.putheader("Host", "127.0.0.1")
    conn.putheader("Host", "evil.example")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 400  # aiohttp's own parser refuses it, before the policy
    conn.close()


def test_slow_uploads_hold_no_other_function_of_the_worker(site: Site) -> None:
    """Before: 10 uploads that trickle in, to a handler that reads its request channel,
    took the worker's 6 threads, and every other function of it timed out."""
    def drain(data: Any) -> Any:
        return {"bytes": sum(len(chunk) for chunk in data["request_body"])}

    site.serve("slow::upload", drain, "slow-upload", "POST")
    site.serve("slow::other", lambda data: "fine", "slow-other")
    uploads = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", site.http_port), timeout=10)
            sock.sendall(b"POST /slow-upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/octet-stream\r\n"
                         b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000)
            uploads.append(sock)
        wait_for(lambda: site.worker._handlers.active >= 10,
                 message="the ten handlers to be reading")
        status, _, body = site.request("GET", "/slow-other")
        assert (status, json.loads(body)) == (200, "fine")
    finally:
        for sock in uploads:
            sock.close()
