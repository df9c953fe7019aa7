"""Who may connect to a TCP listener: one check for every one of them (WebSocket,
channels, HTTP).

Anything on TCP, even on 127.0.0.1, is reachable by web pages the user visits (browsers
send ``Origin`` and do not block cross-origin WebSockets), by DNS-rebinding pages (a
foreign ``Host``) and by every other local user. The Unix socket has ``SO_PEERCRED``;
here the same question is answered from the kernel's socket table (``/proc/net/tcp``).

Rules, in order (protocol.md § Transports):

0. A header that decides (``Origin``, ``Host``, ``Authorization``, ``Referer``,
   ``Sec-Fetch-Site``) given twice is refused (400): which one would count is a guess.
1. A request with an ``Origin`` header is refused unless the origin is configured. So
   is a browser's cross-site request without one (an ``<img>``-style GET, which carries
   no ``Origin``): ``Sec-Fetch-Site: cross-site|same-site``, or, from browsers that do
   not send that, a ``Referer`` naming another host; its origin is the ``Referer``'s.
   Clients that are no browser send neither header and are not affected.
2. With a token configured, ``Authorization: Bearer TOKEN`` is required, and proves the
   client is no browser page (a page cannot set that header on a WebSocket); the Host
   and uid rules below then do not apply, so remote workers and other users the token
   was given to get in.
3. ``Host`` must name the listening address, a loopback name, or a configured host.
4. A loopback peer must belong to the daemon's own user.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from iii_sdk.client import addresses

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_PROC_TCP = {socket.AF_INET: Path("/proc/net/tcp"), socket.AF_INET6: Path("/proc/net/tcp6")}


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    return addresses.is_loopback(host)


def host_name(header: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:80`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header


def _proc_address(host: str, port: int, family: int) -> str:
    """An address as ``/proc/net/tcp{,6}`` prints it (32-bit words in host order)."""
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"


def tcp_peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the other end of a loopback TCP connection, or None when the kernel
    table does not show it (gone already, or no ``/proc`` on this platform)."""
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    try:
        wanted_local = _proc_address(peer[0], peer[1], family)
        wanted_remote = _proc_address(local[0], local[1], family)
    except OSError:
        return None
    try:
        with open(_PROC_TCP[family]) as table:
            next(table)  # header
            for line in table:
                fields = line.split()
                if fields[1] == wanted_local and fields[2] == wanted_remote:
                    return int(fields[7])
    except OSError:
        return None
    return None


def can_check_peer_uid() -> bool:
    return _PROC_TCP[socket.AF_INET].exists()


def peer_name(peer: Any) -> str:
    """A TCP peer as logs name it: ``host:port``."""
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 \
        else "a client"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    #: Sent to the client and logged.
    reason: str
    #: Groups refusals for the log (one line per kind, then a count).
    kind: str


@dataclass
class AccessPolicy:
    """The access check of one listener (``[websocket]``, ``[http]``)."""

    listener: str
    host: str
    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    #: The config key that lists allowed origins (named in refusals).
    origins_key: str = "allowed_origins"
    #: Looks up the uid behind a loopback peer; replaceable in tests.
    peer_uid: Callable[[tuple[str, int], tuple[str, int]], int | None] = tcp_peer_uid
    #: An RBAC listener: past the browser rules, the listener's auth function decides
    #: who comes in (other users and hosts are who it is for), not the token or uid.
    auth_decides: bool = False
    _log: RefusalLog = field(init=False)

    def __post_init__(self) -> None:
        self._log = RefusalLog(self.listener)
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in self.allowed_origins)
        self.allowed_hosts = frozenset(host_name(h) for h in self.allowed_hosts)

    def check(self, headers: Callable[[str], list[str]], peer: tuple[str, int] | None,
              local: tuple[str, int] | None, uid_checked: bool = False) -> Refusal | None:
        """None when the request may go on, else why not (logged here). ``headers(name)``
        gives every value of a header. ``uid_checked``: this connection's peer passed
        the uid rule already (HTTP keep-alive: the kernel table is read once per
        connection, not per request)."""
        values: dict[str, str | None] = {}
        for name in _DECIDING:
            found = headers(name)
            if len(found) > 1:
                refusal: Refusal | None = Refusal(
                    400, f"the {name} header is given {len(found)} times", "duplicate")
                break
            values[name] = found[0] if found else None
        else:
            refusal = self._refusal(values.get, peer, local, uid_checked)
        if refusal is not None:
            self._log.refused(refusal, peer)
        return refusal

    def _refusal(self, header: Callable[[str], str | None], peer: tuple[str, int] | None,
                 local: tuple[str, int] | None, uid_checked: bool) -> Refusal | None:
        origin = header("Origin")
        if origin is None:
            origin = _cross_site_origin(header)
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            return Refusal(403, f"origin {origin!r} is not allowed (add it to "
                                f"[{self.listener}] {self.origins_key} to let a browser in)",
                           "origin")
        if self.auth_decides:
            name = host_name(header("Host") or "")
            if is_loopback(self.host) and name not in LOOPBACK_NAMES \
                    and name not in self.allowed_hosts:  # a rebinding page's Host
                return Refusal(403, f"host {name!r} is not this daemon's address", "host")
            return None
        if self.token is not None:
            given = header("Authorization") or ""
            if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return None
            return Refusal(401, "a valid bearer token is required", "token")
        name = host_name(header("Host") or "")
        if name not in LOOPBACK_NAMES and name != self.host.lower() \
                and name not in self.allowed_hosts:
            return Refusal(403, f"host {name!r} is not this daemon's address (add it to "
                                f"[{self.listener}] allowed_hosts)", "host")
        if peer is None or local is None or not is_loopback(peer[0]):
            return Refusal(403, "only loopback clients may connect without a token", "remote")
        if uid_checked or not can_check_peer_uid():
            return None  # asked already, or no kernel table to ask (warned at start)
        uid = self.peer_uid(peer, local)
        if uid != os.getuid():
            who = "an unknown user" if uid is None else f"uid {uid}"
            return Refusal(403, f"connections from other users are refused ({who})", "uid")
        return None


#: The headers the rules read; each may be given once.
_DECIDING = ("Origin", "Host", "Authorization", "Referer", "Sec-Fetch-Site")


def _cross_site_origin(header: Callable[[str], str | None]) -> str | None:
    """The origin of a browser request from another site that sent no ``Origin``
    (``"null"`` when the browser withheld the referrer too), else None."""
    referer = header("Referer")
    referer_origin = None
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            referer_origin = f"{parts.scheme}://{parts.netloc}".lower()
    site = (header("Sec-Fetch-Site") or "").lower()
    if site in ("cross-site", "same-site"):
        return referer_origin or "null"
    if site or referer_origin is None:
        return None  # same-origin or typed by the user ("none"); or no browser at all
    host = (header("Host") or "").strip().lower()
    return None if urlsplit(referer_origin).netloc == host else referer_origin


class RefusalLog:
    """One log line per kind of refusal, then at most one a minute with a count, so a
    hostile page retrying in a loop cannot flood the log."""

    INTERVAL_S = 60.0

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refused(self, refusal: Refusal, peer: tuple[str, int] | None) -> None:
        now = time.monotonic()
        last = self._last.get(refusal.kind)
        if last is not None and now - last < self.INTERVAL_S:
            self._suppressed[refusal.kind] = self._suppressed.get(refusal.kind, 0) + 1
            return
        self._last[refusal.kind] = now
        more = self._suppressed.pop(refusal.kind, 0)
        log.warning("%s listener refused %s: %s%s", self.listener, peer_name(peer),
                    refusal.reason,
                    f" ({more} more refusals of this kind since the last line)" if more
                    else "")
