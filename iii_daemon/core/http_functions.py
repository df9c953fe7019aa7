"""Functions the daemon calls over HTTP (``registerfunction`` with an ``invocation``:
Lambda, Cloudflare Workers, any webhook), as ``iii_helpers.http.HttpInvocationConfig``
describes them.

Pure: checking an invocation when it is registered, making the request of a call from
the payload and the environment values its auth names, and reading the response. The
hub sends the request (off the loop's critical path) and hands the outcome back.

- The payload is the JSON body (for GET: the query string, each member of an object
  payload a parameter, strings as they are and other values as JSON).
- A 2xx response with a JSON body (or none: ``null``) is the result; anything else is an
  ``http_error`` with the status and the start of the body; a timeout is ``TIMEOUT``.
- ``auth``: ``bearer {token_key}`` sends ``Authorization: Bearer <$token_key>``;
  ``api_key {header, value_key}`` sends ``<header>: <$value_key>``; ``hmac
  {secret_key}`` signs: ``X-III-Timestamp: <unix seconds>`` and ``X-III-Signature:
  sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with $secret_key>``.
- The ``*_key`` fields name environment variables of the daemon, and only those the
  config allows (``[http_functions] allowed_env``, empty by default): a worker must
  never be able to send the daemon's environment to a URL of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from iii_sdk.error_codes import ErrorCode
from iii_sdk.limits import MAX_TIMEOUT_MS

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: The most of a response body the daemon reads (more is an error, not a result).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: How much of a failed response's body the error shows.
EXCERPT_BYTES = 512
_AUTH_KEYS = {"bearer": ("token_key",), "api_key": ("header", "value_key"),
              "hmac": ("secret_key",)}


class Refused(ValueError):
    """An invocation that cannot be registered; the message says why."""


@dataclass(frozen=True, slots=True)
class Invocation:
    url: str
    method: str = "POST"
    timeout_ms: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: ``{"type": ..., ...}`` as registered (the environment variable names only).
    auth: Mapping[str, str] | None = None

    @property
    def private(self) -> bool:
        """Its host is a loopback or private address (allowed, and logged)."""
        host = urlsplit(self.url).hostname or ""
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or address.is_private or address.is_link_local


def parse(raw: Any, allowed_env: frozenset[str]) -> Invocation:
    """An ``invocation`` as registered.

    Raises:
        Refused: it is malformed, or its auth names a variable the config does not allow.
    """
    if not isinstance(raw, dict):
        raise Refused("invocation must be an object {url, method?, timeout_ms?, headers?, "
                      "auth?}")
    url = raw.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"invocation.url must be an http(s) URL, got {url!r}")
    method = raw.get("method") or "POST"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise Refused(f"invocation.method must be one of {', '.join(sorted(METHODS))}")
    timeout_ms = raw.get("timeout_ms")
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or isinstance(
            timeout_ms, bool) or not 0 < timeout_ms <= MAX_TIMEOUT_MS):
        raise Refused(f"invocation.timeout_ms must be a whole number from 1 to "
                      f"{MAX_TIMEOUT_MS}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in
            k + v for k, v in headers.items()):
        raise Refused("invocation.headers must be an object of strings (one line each)")
    return Invocation(url=str(url), method=method.upper(), timeout_ms=timeout_ms,
                      headers=tuple(headers.items()), auth=_auth(raw.get("auth"),
                                                                 allowed_env))


def _auth(raw: Any, allowed_env: frozenset[str]) -> dict[str, str] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in _AUTH_KEYS:
        raise Refused("invocation.auth.type must be bearer, api_key or hmac")
    auth = {"type": str(kind)}
    for key in _AUTH_KEYS[str(kind)]:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise Refused(f"invocation.auth.{key} must be a non-empty string")
        auth[key] = value
        if key.endswith("_key") and value not in allowed_env:
            raise Refused(f"invocation.auth.{key} names the environment variable "
                          f"{value!r}, which [http_functions] allowed_env does not list "
                          "(the daemon sends no variable it was not told it may)")
    return auth


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def request(invocation: Invocation, payload: bytes, environ: Mapping[str, str],
            now: float) -> Request:
    """The request of one call (``payload``: its JSON), signed and authorized.

    Raises:
        Refused: an environment variable its auth needs is not set.
    """
    headers = dict(invocation.headers)
    url, body = invocation.url, payload
    if invocation.method == "GET":
        url, body = _with_query(url, payload), b""
    else:
        headers.setdefault("Content-Type", "application/json")
    auth = invocation.auth
    if auth is not None:
        def env(key: str) -> str:
            value = environ.get(auth[key])
            if value is None:
                raise Refused(f"the environment variable {auth[key]!r} is not set")
            return value

        if auth["type"] == "bearer":
            headers["Authorization"] = f"Bearer {env('token_key')}"
        elif auth["type"] == "api_key":
            headers[auth["header"]] = env("value_key")
        else:
            stamp = str(int(now))
            digest = hmac.new(env("secret_key").encode(), stamp.encode() + b"." + body,
                              hashlib.sha256).hexdigest()
            headers["X-III-Timestamp"] = stamp
            headers["X-III-Signature"] = f"sha256={digest}"
    return Request(invocation.method, url, headers, body or None)


def _with_query(url: str, payload: bytes) -> str:
    value = json.loads(payload) if payload else None
    if value is None:
        return url
    params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()} \
        if isinstance(value, dict) else {"data": json.dumps(value)}
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"


def outcome(status: int, body: bytes) -> tuple[bytes | None, dict[str, str] | None]:
    """``(result JSON, None)`` for a 2xx JSON answer, else ``(None, error)``."""
    if 200 <= status < 300:
        if not body.strip():
            return b"null", None
        try:
            json.loads(body)
        except ValueError:
            return None, {"code": ErrorCode.HTTP_ERROR, "message": f"HTTP {status}: the body is "
                          f"not JSON: {_excerpt(body)}"}
        return body, None
    return None, {"code": ErrorCode.HTTP_ERROR, "message": f"HTTP {status}: {_excerpt(body)}"}


def _excerpt(body: bytes) -> str:
    text = body[:EXCERPT_BYTES].decode(errors="replace")
    return text + ("…" if len(body) > EXCERPT_BYTES else "")
