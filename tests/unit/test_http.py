"""HTTP triggers in the core, without sockets: routes, the payload a function gets, and
every answer of the upstream engine's contract (404, 405, 422, 500, 503, 504, results)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii_daemon.core.effects import HttpReply
from iii_daemon.core.http_requests import HttpRequest, response_of
from tests.unit.test_router import Core, result

REFS = {"request_body": {"channel_id": "in", "access_key": "k1", "direction": "read"},
        "response": {"channel_id": "out", "access_key": "k2", "direction": "write"}}


@pytest.fixture
def core() -> Core:
    c = Core()
    c.connect(1)  # worker
    c.connect(2)  # who registers triggers
    c.register(1, "orders::create")
    return c


def http_trigger(core: Core, trigger_id: str, api_path: str, method: str = "POST",
                 function_id: str = "orders::create", **config: Any) -> dict[str, Any]:
    out = core.send(2, {"type": "registertrigger", "id": trigger_id, "trigger_type": "http",
                        "function_id": function_id,
                        "config": {"api_path": api_path, "http_method": method, **config}})
    [(_, answer)] = out
    return answer  # type: ignore[no-any-return]


def request(core: Core, method: str, path: str, request_id: int = 7, body: Any = None,
            query: dict[str, str] | None = None) -> list[tuple[int, Any]]:
    return core._render(core.router.http_request(HttpRequest(
        request_id, method, path, query or {}, {"content-type": "application/json"}, body,
        REFS["request_body"], REFS["response"]), core.now))


def reply_of(out: list[tuple[int, Any]]) -> HttpReply:
    [found] = [m for _, m in out if isinstance(m, HttpReply)]
    return found


def invocation(out: list[tuple[int, Any]]) -> dict[str, Any]:
    [found] = [m for c, m in out if c == 1 and isinstance(m, dict)
               and m["type"] == "invokefunction"]
    return found


def test_the_function_gets_the_upstream_payload_and_its_result_answers(core: Core) -> None:
    assert "error" not in http_trigger(core, "t", "orders/:id")
    out = request(core, "POST", "/orders/42", body={"qty": 2}, query={"dry": "1"})
    call = invocation(out)
    assert call["data"] == {
        "method": "POST", "path": "orders/:id", "path_params": {"id": "42"},
        "query_params": {"dry": "1"}, "headers": {"content-type": "application/json"},
        "body": {"qty": 2}, "trigger": {"type": "http", "path": "orders/:id",
                                        "method": "POST"}, **REFS}
    assert not [m for _, m in out if isinstance(m, HttpReply)]  # it waits for the worker
    done = core.send(1, result(call["invocation_id"], result={"status_code": 201}))
    assert json.loads(reply_of(done).result or b"") == {"status_code": 201}


def test_routes_match_static_segments_first_and_by_method(core: Core) -> None:
    core.register(1, "orders::new")
    http_trigger(core, "by-id", "/orders/:id", "GET")
    http_trigger(core, "new", "orders/new/", "GET", "orders::new")
    http_trigger(core, "post", "orders/:id", "POST")
    assert invocation(request(core, "GET", "orders/new"))["function_id"] == "orders::new"
    assert invocation(request(core, "GET", "/orders/9"))["data"]["path_params"] == {"id": "9"}
    wrong = reply_of(request(core, "DELETE", "/orders/9"))
    assert wrong.status == 405 and wrong.headers == (("Allow", "GET, POST"),)
    assert reply_of(request(core, "GET", "/orders")).status == 404
    assert reply_of(request(core, "GET", "/orders/9/items")).status == 404


def test_a_second_trigger_for_a_route_is_refused_and_replacing_it_is_not(core: Core) -> None:
    http_trigger(core, "a", "orders/:id")
    refused = http_trigger(core, "b", "/orders/:other")
    assert refused["error"]["code"] == "trigger_registration_failed"
    assert refused["error"]["message"] == \
        "POST /orders/:id is already served by trigger 'a' (-> orders::create)"
    assert "error" not in http_trigger(core, "a", "orders/:id", timeout_ms=5)  # replace
    assert "error" not in http_trigger(core, "c", "orders/:id", "PUT")  # another method


def test_routes_go_with_their_trigger_and_their_worker(core: Core) -> None:
    core.connect(3)
    out = core.send(3, {"type": "registertrigger", "id": "w", "trigger_type": "http",
                        "function_id": "orders::create",
                        "config": {"api_path": "gone", "http_method": "GET"}})
    assert "error" not in out[0][1]
    assert invocation(request(core, "GET", "/gone"))
    core.disconnect(3)
    assert reply_of(request(core, "GET", "/gone")).status == 404
    http_trigger(core, "t", "x", "GET")
    core.send(2, {"type": "unregistertrigger", "id": "t"})
    assert reply_of(request(core, "GET", "/x")).status == 404


@pytest.mark.parametrize("config, fragment", [
    ({}, "config.api_path must be a non-empty string"),
    ({"api_path": "a", "http_method": "BREW"}, "config.http_method must be one of"),
    ({"api_path": "a/:"}, "is not a parameter name"),
    ({"api_path": "a?b=1"}, "without a query"),
    ({"api_path": "a", "timeout_ms": 0}, "config.timeout_ms must be a whole number"),
])
def test_bad_configs_are_refused(core: Core, config: dict[str, Any], fragment: str) -> None:
    out = core.send(2, {"type": "registertrigger", "id": "t", "trigger_type": "http",
                        "function_id": "f", "config": config})
    assert fragment in out[0][1]["error"]["message"]


def test_errors_map_to_statuses(core: Core) -> None:
    http_trigger(core, "t", "boom", "GET")
    call = invocation(request(core, "GET", "/boom"))
    out = core.send(1, result(call["invocation_id"], error={
        "code": "invocation_failed", "message": "KeyError: 'x'", "stacktrace": "..."}))
    failed = reply_of(out)
    assert failed.status == 500 and failed.body["error"] == "KeyError: 'x'"
    assert len(failed.body["error_id"]) == 16
    http_trigger(core, "missing", "missing", "GET", "nobody::serves")
    assert reply_of(request(core, "GET", "/missing")).status == 503
    http_trigger(core, "slow", "slow", "GET", timeout_ms=1000)
    assert invocation(request(core, "GET", "/slow"))
    timed_out = reply_of(core.advance(1.5))
    assert timed_out.status == 504 and "1000 ms" in timed_out.body["error"]
    call = invocation(request(core, "GET", "/boom"))
    stopped = reply_of(core.disconnect(1))
    assert stopped.status == 502


def test_a_falsy_condition_is_422_and_a_truthy_one_runs_the_function(core: Core) -> None:
    core.register(1, "gate")
    http_trigger(core, "t", "gated", "GET", condition_function_id="gate")
    [ask] = [m for c, m in request(core, "GET", "/gated") if c == 1]
    assert ask["function_id"] == "gate"
    skipped = reply_of(core.send(1, result(ask["invocation_id"], result=False)))
    assert (skipped.status, skipped.body) == (422, {"error": "Request condition not met",
                                                    "skipped": True})
    [ask] = [m for c, m in request(core, "GET", "/gated") if c == 1]
    [run] = [m for c, m in core.send(1, result(ask["invocation_id"], result=True))
             if c == 1]
    assert run["function_id"] == "orders::create"


@pytest.mark.parametrize("value, status, headers, body", [
    ({"ok": True}, 200, [("Content-Type", "application/json")], b'{"ok":true}'),
    (None, 200, [("Content-Type", "application/json")], b"null"),
    ({"status_code": 201, "body": {"id": 1}}, 201, [("Content-Type", "application/json")],
     b'{"id":1}'),
    ({"statusCode": 204, "headers": {"X-A": "1"}}, 204,
     [("X-A", "1"), ("Content-Type", "application/json")], b"null"),
    ({"status_code": 200, "headers": ["Content-Type: text/plain", "X-B: 2"], "body": "hi"},
     200, [("Content-Type", "text/plain"), ("X-B", "2")], b"hi"),
    ({"status_code": 99}, 500, [("Content-Type", "application/json")], None),
    ({"status_code": 200, "headers": ["no colon"]}, 500,
     [("Content-Type", "application/json")], None),
    ({"status_code": 200, "headers": {"X": "a\r\nSet-Cookie: b"}}, 500,
     [("Content-Type", "application/json")], None),
])
def test_a_result_becomes_a_response(value: Any, status: int, headers: list[tuple[str, str]],
                                     body: bytes | None) -> None:
    response = response_of(value)
    assert (response.status, response.headers) == (status, headers)
    if body is not None:
        assert response.body == body
    else:
        assert b"malformed" in response.body
