"""The client library's shared parts: one address parser, one exception tree."""

from __future__ import annotations

import pytest

from iii_sdk import errors
from iii_sdk.client.addresses import Address, BadAddress, parse, parse_url


@pytest.mark.parametrize("address, expected", [
    ("/run/user/1/iii/iii.sock", Address("unix", "/run/user/1/iii/iii.sock")),
    ("unix:///tmp/a.sock", Address("unix", "/tmp/a.sock")),
    ("relative.sock", Address("unix", "relative.sock")),
    ("ws://127.0.0.1:49134", Address("ws", "ws://127.0.0.1:49134")),
    ("wss://engine.example/ws", Address("ws", "wss://engine.example/ws")),
])
def test_one_parser_for_every_client(address: str, expected: Address) -> None:
    assert parse(address) == expected


def test_what_no_client_speaks_is_refused_and_urls_name_their_scheme() -> None:
    with pytest.raises(BadAddress, match="use ws://, wss:// or unix://"):
        parse("http://127.0.0.1:3111")
    with pytest.raises(BadAddress):
        parse_url("/tmp/a.sock")  # --url takes URLs; --socket takes paths
    assert parse_url("unix:///tmp/a.sock") == Address("unix", "/tmp/a.sock")


def test_every_client_failure_is_an_iii_error() -> None:
    for name in ("Unreachable", "Broken", "Closed", "Refused", "Lost", "Timeout",
                 "WatchRefused", "ConnectionFailed"):
        assert issubclass(getattr(errors, name), errors.IIIError), name
    assert issubclass(errors.Closed, errors.Broken)
    assert issubclass(errors.Broken, errors.Unreachable)
    assert issubclass(errors.Unreachable, errors.ConnectionFailed)
