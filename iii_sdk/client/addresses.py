"""Where a client connects: a Unix socket path (or ``unix://PATH``) or a ``ws://`` /
``wss://`` URL, told apart in one place.

Imports nothing: the ``iii trigger`` fast path uses it.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

WS_SCHEMES = ("ws://", "wss://")


class Address(NamedTuple):
    #: ``unix`` or ``ws``.
    kind: str
    #: The socket path, or the whole URL.
    target: str


class BadAddress(ValueError):
    """An address with a scheme no client speaks."""


def parse(address: str) -> Address:
    """``unix://PATH`` and plain paths are sockets; ``ws://`` and ``wss://`` URLs, URLs.

    Raises:
        BadAddress: another scheme (``http://``, ...).
    """
    if address.startswith(WS_SCHEMES):
        return Address("ws", address)
    if address.startswith("unix://"):
        return Address("unix", address[len("unix://"):])
    if "://" in address:
        raise BadAddress(f"unsupported URL {address!r}: use ws://, wss:// or unix://")
    return Address("unix", address)


def parse_url(url: str) -> Address:
    """A ``--url`` or ``$III_URL``: as :func:`parse`, but it must name its scheme.

    Raises:
        BadAddress: no scheme, or one no client speaks.
    """
    if "://" not in url:
        raise BadAddress(f"unsupported URL {url!r}: use ws://, wss:// or unix://")
    return parse(url)


def without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it becomes ``***``."""
    from urllib.parse import urlsplit, urlunsplit  # not on the fast path's way

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, without brackets) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
