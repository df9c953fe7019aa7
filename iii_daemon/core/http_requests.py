"""HTTP requests in the core: what the function gets, and what the client gets back.

Pure: the listener hands the router an :class:`HttpRequest`; the router finds its route
(``triggers/http.py``), fires the binding and answers with an :class:`HttpReply`. How a
function's result becomes a response (:func:`response_of`) is also here, so the rules
of the upstream engine are tested without a socket:

- no route 404; the path served for other methods only 405 (with ``Allow``); a falsy
  condition 422 ``{"error": "Request condition not met", "skipped": true}``; the
  function failing 500 ``{error, error_id}`` (the id is logged with the stack); no
  answer in time 504; nobody serving the function 503; its worker gone 502;
- a result ``{status_code (or statusCode), headers?, body?}`` is the response (headers
  a dict or a list of ``"Name: value"`` strings); any other result is a 200 with the
  result as its JSON body.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iii_daemon.core.effects import EVENTS, HttpReply, Output
from iii_daemon.core.triggers.http import DEFAULT_TIMEOUT_MS, Match, WrongMethod
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

log = logging.getLogger("iii_daemon")

JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    id: int
    method: str
    path: str
    #: One string per key (the last value when a key repeats).
    query: dict[str, str]
    #: Lower-case names; repeated headers joined with ", ".
    headers: dict[str, str]
    #: The parsed JSON body, or None (not JSON, or no body).
    body: Any
    #: Channel refs: the function reads the body from ``request_body`` and may write
    #: its response to ``response``.
    request_body: dict[str, str]
    response: dict[str, str]


def payload(request: HttpRequest, match: Match) -> dict[str, Any]:
    """What the function gets (the upstream engine's shape)."""
    api_path = match.binding.config["api_path"]
    return {
        "method": request.method,
        "path": api_path,
        "path_params": match.path_params,
        "query_params": request.query,
        "headers": request.headers,
        "body": request.body,
        "trigger": {"type": "http", "path": api_path, "method": request.method},
        "request_body": request.request_body,
        "response": request.response,
    }


#: ``call(function_id, data, then, out)``: a call the daemon makes, ``then(result, error,
#: out)`` once it ends.
MiddlewareCall = Callable[[str, Any, Callable[[Any, "p.ErrorBody | None", Output], None],
                           Output], None]


def through_middleware(chain: list[str], request: dict[str, Any], call: MiddlewareCall,
                       go_on: Callable[[Output], None],
                       answered: Callable[[Any, p.ErrorBody | None, Output], None],
                       out: Output) -> None:
    """Run an http trigger's ``middleware_function_ids`` in order before its function:
    each gets ``{phase: "request", index, request}`` (the function's payload) and answers
    null or ``{"continue": true}`` to let the request on, or anything else to answer it
    itself (the rules of a function's result: ``{status_code, headers?, body?}``). One
    that fails answers the request as the function failing would."""

    def step(index: int, out: Output) -> None:
        if index == len(chain):
            go_on(out)
            return

        def decided(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:
                answered(None, error, out)
                return
            value = p.from_raw(result or p.NULL)
            if value is None or (isinstance(value, dict) and value.get("continue") is True):
                step(index + 1, out)
            else:
                answered(result, None, out)

        call(chain[index], {"phase": "request", "index": index, "request": request},
             decided, out)

    step(0, out)


def timeout_of(match: Match) -> int:
    timeout = match.binding.config.get("timeout_ms")
    return timeout if isinstance(timeout, int) else DEFAULT_TIMEOUT_MS


def no_route(request: HttpRequest, found: WrongMethod | None, out: Output) -> None:
    if found is None:
        out.append((EVENTS, HttpReply(request.id, 404, {
            "error": f"no route for {request.method} {request.path}"})))
    else:
        out.append((EVENTS, HttpReply(request.id, 405, {
            "error": f"{request.method} is not served at {request.path} (allowed: "
                     f"{', '.join(found.allowed)})"},
            headers=(("Allow", ", ".join(found.allowed)),))))


def reply(request: HttpRequest, match: Match, skipped: str | None, result: Any,
          error: p.ErrorBody | None, out: Output) -> None:
    """Answer the request with how its firing ended."""
    binding = match.binding
    if skipped is not None:
        out.append((EVENTS, HttpReply(request.id, 422, {
            "error": "Request condition not met", "skipped": True})))
    elif error is None:
        out.append((EVENTS, HttpReply(request.id, result=bytes(result or p.NULL))))
    elif error.code == ErrorCode.FUNCTION_NOT_FOUND:
        out.append((EVENTS, HttpReply(request.id, 503, {
            "error": f"function '{binding.function_id}' is not served by any worker"})))
    elif error.code == ErrorCode.TIMEOUT:
        out.append((EVENTS, HttpReply(request.id, 504, {
            "error": f"'{binding.function_id}' did not answer within "
                     f"{timeout_of(match)} ms"})))
    elif error.code == ErrorCode.INVOCATION_STOPPED:
        out.append((EVENTS, HttpReply(request.id, 502, {"error": error.message})))
    else:
        error_id = secrets.token_hex(8)
        log.warning("http %s %s -> %s failed (error_id %s): %s: %s%s", request.method,
                    request.path, binding.function_id, error_id, error.code, error.message,
                    f"\n{error.stacktrace}" if error.stacktrace else "")
        out.append((EVENTS, HttpReply(request.id, 500, {
            "error": error.message, "error_id": error_id})))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def response_of_raw(result: bytes) -> Response | None:
    """The response for a result that cannot ask for one (no ``status_code`` key in
    it): its JSON as it came, never decoded. None: decode it, :func:`response_of`."""
    if b'"status_code"' in result or b'"statusCode"' in result:
        return None
    return Response(200, [("Content-Type", JSON_TYPE)], result)


def response_of(result: Any) -> Response:
    """The response a function's (decoded) result asks for."""
    if isinstance(result, dict) and ("status_code" in result or "statusCode" in result):
        status = result.get("status_code", result.get("statusCode"))
        if not isinstance(status, int) or isinstance(status, bool) or \
                not 100 <= status <= 599:
            return _bad_result(f"status_code must be a whole number from 100 to 599, "
                               f"got {status!r}")
        headers = _headers(result.get("headers"))
        if headers is None:
            return _bad_result("headers must be an object of strings or a list of "
                               "'Name: value' strings")
        return Response(status, headers, *_body(result.get("body"), headers))
    return Response(200, [("Content-Type", JSON_TYPE)], _json(result))


def _body(body: Any, headers: list[tuple[str, str]]) -> tuple[bytes]:
    """The body as bytes: a string goes as it is when the function set a non-JSON
    content type; everything else is JSON (a Content-Type is added when missing)."""
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    if isinstance(body, str) and content_type is not None and "json" not in content_type:
        return (body.encode(),)
    if content_type is None:
        headers.append(("Content-Type", JSON_TYPE))
    return (b"" if body is None and content_type is not None else _json(body),)


def _headers(headers: Any) -> list[tuple[str, str]] | None:
    if headers is None:
        return []
    pairs: list[tuple[str, str]] = []
    if isinstance(headers, dict):
        for name, value in headers.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                return None
            pairs.append((str(name), str(value)))
    elif isinstance(headers, list):
        for line in headers:
            if not isinstance(line, str) or ":" not in line:
                return None
            name, _, value = line.partition(":")
            pairs.append((name.strip(), value.strip()))
    else:
        return None
    if any(not name or "\n" in name + value or "\r" in name + value for name, value in pairs):
        return None
    return pairs


def _json(value: Any) -> bytes:
    return bytes(p.to_raw(value))


def _bad_result(why: str) -> Response:
    return Response(500, [("Content-Type", JSON_TYPE)],
                    _json({"error": f"the function's response is malformed: {why}"}))
