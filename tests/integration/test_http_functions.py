"""HTTP-invoked functions against a real daemon and a real local HTTP server: the
daemon itself calls the URL, for calls from the official SDK over WebSocket, ours over
the socket, the CLI, a trigger and a queue."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import iii
import pytest
from iii_helpers.http import HttpAuthApiKey, HttpAuthBearer, HttpAuthHmac
from iii_helpers.http import HttpInvocationConfig as OfficialInvocation

from iii_sdk import HttpInvocationConfig, InvocationError, RegistrationRefused, register_worker
from tests.helpers import DaemonProcess, free_port, official_worker, run_iii, wait_for

ALLOWED = {"HOOK_TOKEN": "t0ken", "HOOK_KEY": "k3y", "HOOK_SECRET": "s3cret"}


class Hooks:
    """The webhook server: what it was sent, and answers by path."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                hooks.seen.append({"method": self.command, "path": url.path,
                                   "query": parse_qs(url.query), "body": body,
                                   "headers": dict(self.headers)})
                status, answer = 200, body or b'{"empty": true}'
                if url.path == "/fail":
                    status, answer = 500, b"boom: the hook broke"
                elif url.path == "/text":
                    answer = b"not json"
                elif url.path == "/slow":
                    time.sleep(1.5)
                elif url.path == "/query":
                    answer = json.dumps(parse_qs(url.query)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except BrokenPipeError:
                    pass  # /slow: the daemon gave up waiting, as it should

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self, path: str) -> dict[str, Any]:
        wait_for(lambda: any(s["path"] == path for s in self.seen), message=path)
        return [s for s in self.seen if s["path"] == path][-1]


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "config.toml").write_text(
            '[http_functions]\nallowed_env = ["HOOK_TOKEN", "HOOK_KEY", "HOOK_SECRET"]\n')
        self.hooks = Hooks()
        self.ws_port = free_port()
        self.daemon = DaemonProcess(tmp, "--ws-port", str(self.ws_port)).start()
        self.official = official_worker(self.ws_port, "official-hooks")
        self.ours = register_worker(str(self.daemon.socket_path))

    def close(self) -> None:
        self.official.shutdown()
        self.ours.shutdown()
        self.daemon.stop()
        self.hooks.server.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with pytest.MonkeyPatch.context() as env:
        for key, value in ALLOWED.items():
            env.setenv(key, value)  # the daemon's environment (child_env copies it)
        running = Setup(tmp_path_factory.mktemp("hooks"))
    yield running
    running.close()


def register(setup: Setup, kind: str, function_id: str, path: str, **config: Any) -> Any:
    """An HTTP-invoked function, registered through either SDK; waits until served."""
    url = setup.hooks.url + path
    if kind == "official":
        auth = config.pop("auth", None)
        official_auth = None if auth is None else {
            "bearer": HttpAuthBearer, "api_key": HttpAuthApiKey, "hmac": HttpAuthHmac,
        }[auth.pop("type")](**auth)
        ref = setup.official.register_function(function_id, OfficialInvocation(
            url=url, auth=official_auth, **config))
    else:
        ref = setup.ours.register_function(function_id, HttpInvocationConfig(url=url,
                                                                             **config))
    wait_for(lambda: function_id in listed(setup), message=f"{function_id} registered")
    return ref


def listed(setup: Setup) -> dict[str, dict[str, Any]]:
    functions = setup.ours.trigger({"function_id": "engine::functions::list"})["functions"]
    return {f["function_id"]: f for f in functions}


def call(setup: Setup, kind: str, function_id: str, payload: Any) -> Any:
    client = setup.official if kind == "official" else setup.ours
    return client.trigger({"function_id": function_id, "payload": payload})


KINDS = ["official", "ours"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_2xx_json_answer_is_the_result_and_the_payload_the_body(setup: Setup,
                                                                  kind: str) -> None:
    register(setup, kind, f"{kind}::ok", "/ok", headers={"X-Team": "shop"})
    assert call(setup, kind, f"{kind}::ok", {"n": 1}) == {"n": 1}
    sent = setup.hooks.last("/ok")
    assert sent["method"] == "POST" and sent["headers"]["X-Team"] == "shop"
    assert sent["headers"]["Content-Type"] == "application/json"
    row = listed(setup)[f"{kind}::ok"]
    assert row["invocation"] == {"url": setup.hooks.url + "/ok", "method": "POST"}


@pytest.mark.parametrize("kind", KINDS)
def test_non_2xx_non_json_and_timeouts_are_errors(setup: Setup, kind: str) -> None:
    register(setup, kind, f"{kind}::fail", "/fail")
    register(setup, kind, f"{kind}::text", "/text")
    register(setup, kind, f"{kind}::slow", "/slow", timeout_ms=300)
    errors = (InvocationError, iii.InvocationError)
    with pytest.raises(errors) as failed:
        call(setup, kind, f"{kind}::fail", {})
    assert "http_error" in str(failed.value) and "500" in str(failed.value)
    assert "boom: the hook broke" in str(failed.value)
    with pytest.raises(errors, match="not JSON"):
        call(setup, kind, f"{kind}::text", {})
    with pytest.raises(errors, match="TIMEOUT"):
        call(setup, kind, f"{kind}::slow", {})


@pytest.mark.parametrize("kind", KINDS)
def test_each_auth_type(setup: Setup, kind: str) -> None:
    register(setup, kind, f"{kind}::bearer", f"/bearer-{kind}",
             auth={"type": "bearer", "token_key": "HOOK_TOKEN"})
    register(setup, kind, f"{kind}::key", f"/key-{kind}",
             auth={"type": "api_key", "header": "X-Api-Key", "value_key": "HOOK_KEY"})
    register(setup, kind, f"{kind}::hmac", f"/hmac-{kind}",
             auth={"type": "hmac", "secret_key": "HOOK_SECRET"})
    for suffix in ("bearer", "key", "hmac"):
        call(setup, kind, f"{kind}::{suffix}", {"a": 1})
    assert setup.hooks.last(f"/bearer-{kind}")["headers"]["Authorization"] == "Bearer t0ken"
    assert setup.hooks.last(f"/key-{kind}")["headers"]["X-Api-Key"] == "k3y"
    signed = setup.hooks.last(f"/hmac-{kind}")
    stamp = signed["headers"]["X-III-Timestamp"]
    expected = hmac.new(b"s3cret", stamp.encode() + b"." + signed["body"],
                        hashlib.sha256).hexdigest()
    assert signed["headers"]["X-III-Signature"] == f"sha256={expected}"
    assert abs(int(stamp) - time.time()) < 60


def test_an_env_var_the_config_does_not_allow_is_refused(setup: Setup) -> None:
    ref = setup.ours.register_function("ours::leak", HttpInvocationConfig(
        url=setup.hooks.url + "/leak", auth={"type": "bearer", "token_key": "HOME"}))
    with pytest.raises(RegistrationRefused, match="allowed_env"):
        ref.ready(5)
    setup.official.register_function("official::leak", OfficialInvocation(
        url=setup.hooks.url + "/leak", auth=HttpAuthBearer(token_key="PATH")))
    wait_for(lambda: "official::leak" in setup.daemon.log(), message="the refusal logged")
    assert not {"ours::leak", "official::leak"} & set(listed(setup))
    assert not any(s["path"] == "/leak" for s in setup.hooks.seen)


def test_urls_must_be_http(setup: Setup) -> None:
    ref = setup.ours.register_function("ours::file", {"url": "file:///etc/passwd"})
    with pytest.raises(RegistrationRefused, match="http"):
        ref.ready(5)


@pytest.mark.parametrize("kind", KINDS)
def test_unregister_stops_delivery(setup: Setup, kind: str) -> None:
    ref = register(setup, kind, f"{kind}::gone", f"/gone-{kind}")
    call(setup, kind, f"{kind}::gone", {})
    ref.unregister()
    wait_for(lambda: f"{kind}::gone" not in listed(setup), message="unregistered")
    before = len(setup.hooks.seen)
    with pytest.raises(Exception, match="function_not_found"):
        call(setup, kind, f"{kind}::gone", {})
    assert len(setup.hooks.seen) == before


def test_get_sends_the_payload_as_the_query(setup: Setup) -> None:
    register(setup, "ours", "ours::get", "/query", method="GET")
    assert call(setup, "ours", "ours::get", {"q": "shoes", "n": 2}) == {
        "q": ["shoes"], "n": ["2"]}


def test_the_cli_a_trigger_and_a_queue_reach_it(setup: Setup) -> None:
    register(setup, "ours", "ours::sink", "/sink")
    done = run_iii(setup.tmp, "trigger", "ours::sink", "from=cli")
    assert done.returncode == 0 and json.loads(done.stdout) == {"from": "cli"}
    setup.ours.register_trigger({"type": "subscribe", "function_id": "ours::sink",
                                 "config": {"topic": "hooks"}}).ready(5)
    setup.ours.trigger({"function_id": "publish",
                        "payload": {"topic": "hooks", "data": {"from": "trigger"}}})
    setup.ours.trigger({"function_id": "ours::sink", "payload": {"from": "queue"},
                        "action": {"type": "enqueue", "queue": "hooks"}})
    setup.ours.trigger({"function_id": "ours::sink", "payload": {"from": "void"},
                        "action": {"type": "void"}})
    wait_for(lambda: {json.loads(s["body"])["from"] for s in setup.hooks.seen
                      if s["path"] == "/sink"} == {"cli", "trigger", "queue", "void"},
             message="all four")
    table = run_iii(setup.tmp, "list", "functions", "-o", "table").stdout
    assert f"POST {setup.hooks.url}/sink" in table


@pytest.mark.parametrize("kind", KINDS)
def test_observers_see_its_calls_and_can_target_it(setup: Setup, kind: str) -> None:
    client = setup.official if kind == "official" else setup.ours
    register(setup, kind, f"{kind}::observed", "/observed")
    register(setup, kind, f"{kind}::alerted", f"/alerted-{kind}")
    handle = client.observe({"function_id": f"{kind}::observed", "capture": ["input"]},
                            f"{kind}::alerted")
    handle.ready(5)
    call(setup, kind, f"{kind}::observed", {"order": 7})
    envelope = json.loads(setup.hooks.last(f"/alerted-{kind}")["body"])
    assert envelope["function_id"] == f"{kind}::observed"
    assert envelope["input"] == {"order": 7} and envelope["status"] == "success"
    handle.dispose()
