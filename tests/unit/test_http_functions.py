"""HTTP-invoked functions in the core: checking an invocation, making the request, reading
the answer, and routing a call through the driver's HttpCall."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from iii_daemon.core import http_functions as hf
from iii_daemon.core.effects import HttpCall
from iii_sdk import protocol as p
from tests.unit.test_router import Core

ENV = frozenset({"TOKEN", "SECRET"})


@pytest.mark.parametrize(("raw", "why"), [
    ("http://x", "object"),
    ({"url": "ftp://x/y"}, "http(s) URL"),
    ({"url": "http:///nohost"}, "http(s) URL"),
    ({"url": "http://x", "method": "TRACE"}, "method"),
    ({"url": "http://x", "timeout_ms": 0}, "timeout_ms"),
    ({"url": "http://x", "headers": {"X": "a\r\nInjected: 1"}}, "one line"),
    ({"url": "http://x", "auth": {"type": "basic"}}, "bearer, api_key or hmac"),
    ({"url": "http://x", "auth": {"type": "bearer", "token_key": "HOME"}}, "allowed_env"),
    ({"url": "http://x", "auth": {"type": "api_key", "header": "X-K"}}, "value_key"),
])
def test_invocations_that_are_refused(raw: Any, why: str) -> None:
    with pytest.raises(hf.Refused, match=why.replace("(", r"\(").replace(")", r"\)")):
        hf.parse(raw, ENV)


def test_requests_carry_auth_from_allowed_variables() -> None:
    bearer = hf.parse({"url": "https://h/x", "auth": {"type": "bearer",
                                                      "token_key": "TOKEN"}}, ENV)
    made = hf.request(bearer, b'{"a":1}', {"TOKEN": "t"}, 1000.0)
    assert made.headers["Authorization"] == "Bearer t" and made.body == b'{"a":1}'
    with pytest.raises(hf.Refused, match="not set"):
        hf.request(bearer, b"{}", {}, 1000.0)
    signed = hf.parse({"url": "https://h/x", "auth": {"type": "hmac",
                                                      "secret_key": "SECRET"}}, ENV)
    made = hf.request(signed, b"{}", {"SECRET": "s"}, 1000.9)
    assert made.headers["X-III-Timestamp"] == "1000"
    assert made.headers["X-III-Signature"] == "sha256=" + hmac.new(
        b"s", b"1000.{}", hashlib.sha256).hexdigest()
    get = hf.parse({"url": "http://h/x?k=1", "method": "get"}, ENV)
    made = hf.request(get, b'{"q":"a b","n":[1]}', {}, 0)
    assert made.method == "GET" and made.body is None
    assert made.url == "http://h/x?k=1&q=a+b&n=%5B1%5D"
    assert hf.parse({"url": "http://127.0.0.1:9/x"}, ENV).private
    assert not hf.parse({"url": "https://example.com/x"}, ENV).private


def test_answers() -> None:
    assert hf.outcome(200, b'{"ok":true}') == (b'{"ok":true}', None)
    assert hf.outcome(204, b"") == (b"null", None)
    assert hf.outcome(200, b"<html>")[1]["code"] == "http_error"  # type: ignore[index]
    _, error = hf.outcome(502, b"x" * 600)
    assert error is not None and error["message"].startswith("HTTP 502: xxx")
    assert error["message"].endswith("…") and len(error["message"]) < 600


def test_a_call_becomes_an_http_call_and_its_answer_the_result() -> None:
    core = Core()
    core.connect(1)
    core.connect(2)
    core.send(1, {"type": "registerfunction", "id": "hook",
                  "invocation": {"url": "http://127.0.0.1:9/hook", "timeout_ms": 500}})
    out = core.router.handle(2, p.decode(b'{"type":"invokefunction","function_id":"hook",'
                                         b'"data":{"a":1},"invocation_id":"c1"}'), core.now)
    [(_, call)] = out
    assert isinstance(call, HttpCall) and call.payload == b'{"a":1}'
    assert call.timeout_ms == 500
    answered = core._render(core.router.http_answered(call.invocation_id, b'{"b":2}', None,
                                                      core.now))
    assert answered == [(2, {"type": "invocationresult", "invocation_id": "c1",
                             "function_id": "hook", "result": {"b": 2}})]
    # The registering connection leaves: a call in flight ends, the function goes.
    out = core.router.handle(2, p.decode(b'{"type":"invokefunction","function_id":"hook",'
                                         b'"invocation_id":"c2"}'), core.now)
    [(_, call)] = out
    [(_, stopped)] = core.disconnect(1)
    assert stopped["error"]["code"] == "invocation_stopped"
    assert core.router.http_answered(call.invocation_id, b"1", None, core.now) == []
