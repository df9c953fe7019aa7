"""The channel relay on an event loop, without sockets: keys, one opener per end,
bounded buffers (a full channel makes its writer wait), the end, and expiry."""

from __future__ import annotations

import asyncio

import pytest

from iii_daemon.drivers import channels as channels_module
from iii_daemon.drivers.channels import BYTE_LIMIT, ChannelError, Channels


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_an_end_opens_once_with_its_own_key() -> None:
    async def scenario() -> None:
        relay = Channels()
        relay.base_url = "ws://127.0.0.1:1"
        refs = relay.create_refs(None)
        reader, writer = refs["reader"], refs["writer"]
        assert reader["channel_id"] == writer["channel_id"]
        assert (reader["direction"], writer["direction"]) == ("read", "write")
        with pytest.raises(ChannelError) as wrong:
            relay.open(reader["channel_id"], writer["access_key"], "read")
        assert wrong.value.status == 403
        relay.open(reader["channel_id"], reader["access_key"], "read")
        with pytest.raises(ChannelError) as twice:
            relay.open(reader["channel_id"], reader["access_key"], "read")
        assert twice.value.status == 409
        with pytest.raises(ChannelError) as unknown:
            relay.open("nope", "k", "write")
        assert unknown.value.status == 404

    run(scenario())


def test_without_a_websocket_listener_no_channel_is_made() -> None:
    async def scenario() -> None:
        with pytest.raises(ChannelError, match="WebSocket listener"):
            Channels().create_refs(None)

    run(scenario())


def test_a_full_channel_makes_its_writer_wait_until_the_reader_takes() -> None:
    async def scenario() -> None:
        channel = Channels().create(buffer_size=2)
        await channel.put(b"1")
        await channel.put("two")
        third = asyncio.ensure_future(channel.put(b"3"))
        await asyncio.sleep(0.01)
        assert not third.done()  # two frames buffered: the writer waits
        assert await channel.get() == b"1"
        assert await third is True
        channel.end()
        assert [await channel.get(), await channel.get(), await channel.get()] == \
            ["two", b"3", None]
        big = Channels().create()
        await big.put(b"x" * (BYTE_LIMIT - 10))
        more = asyncio.ensure_future(big.put(b"y" * 20))
        await asyncio.sleep(0.01)
        assert not more.done()  # bounded in bytes too
        big.close()
        assert await more is False  # nobody will read: the writer stops

    run(scenario())


def test_a_channel_nobody_opens_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_module, "OPEN_WITHIN_S", 0.05)

    async def scenario() -> None:
        relay = Channels()
        lonely = relay.create()
        used = relay.create(held="write")
        relay.open(used.id, used.keys["read"], "read")
        await asyncio.sleep(0.2)
        assert lonely.id not in relay.channels and lonely.closed
        assert used.id in relay.channels

    run(scenario())
