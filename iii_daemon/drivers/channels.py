"""Channels: one-way streams between two peers, through the daemon (a driver).

``engine::channels::create {buffer_size?}`` answers ``{writer, reader}`` refs
(``{channel_id, access_key, direction}``); each end is opened once, on the WebSocket
listener at ``/ws/channels/{channel_id}?key=ACCESS_KEY&dir=write|read``. Text frames
carry control messages, binary frames data; the writer closing ends the stream, and the
reader's socket is closed once it got everything. The HTTP listener holds one end of a
request's two channels itself (it writes the request body, it reads the response).

Bounds: a frame is at most ``FRAME_LIMIT`` bytes; a channel holds at most
``buffer_size`` frames and ``BYTE_LIMIT`` bytes, then the writer waits (its socket is
not read), so a slow reader slows its writer and nothing else. A channel whose ends are
not both opened within ``OPEN_WITHIN_S`` expires: its ends are closed and it is gone.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iii_daemon.core.errors import CallError
from iii_sdk.error_codes import ErrorCode

log = logging.getLogger(__name__)

#: The largest frame on a channel (the official SDKs send 64 KiB frames).
FRAME_LIMIT = 1024 * 1024
#: Bytes one channel holds before its writer waits.
BYTE_LIMIT = 4 * 1024 * 1024
DEFAULT_BUFFER = 64
MAX_BUFFER = 4096
#: How long a channel waits for its ends to be opened.
OPEN_WITHIN_S = 60.0
#: Channels that may exist at once (each costs at most BYTE_LIMIT).
MAX_CHANNELS = 10_000

Frame = bytes | str


class ChannelError(CallError):
    """Why a channel cannot be made or an end opened; ``status`` is the HTTP status a
    handshake is refused with (a daemon function answers ``bad_request`` or
    ``invocation_failed``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST if status == 400
                         else ErrorCode.INVOCATION_FAILED, message)
        self.status = status


@dataclass(eq=False)
class Channel:
    id: str
    keys: dict[str, str]
    buffer_size: int
    frames: collections.deque[Frame] = field(default_factory=collections.deque)
    size: int = 0
    #: The writer closed: no more frames will come.
    ended: bool = False
    #: Directions whose end was opened (by a peer, or held by the daemon).
    opened: set[str] = field(default_factory=set)
    #: Called once when a peer opens the write end (the http listener waits for it).
    on_writer: Callable[[], None] | None = None
    #: The reader, or the writer, went away for good.
    closed: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.TimerHandle | None = None

    def ref(self, direction: str) -> dict[str, str]:
        return {"channel_id": self.id, "access_key": self.keys[direction],
                "direction": direction}

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()  # waiters hold the old one, which is set

    async def put(self, frame: Frame) -> bool:
        """Add a frame, waiting while the channel is full; False once nobody will read."""
        while not self.closed and (len(self.frames) >= self.buffer_size
                                   or (self.frames and self.size + len(frame) > BYTE_LIMIT)):
            await self._changed.wait()
        if self.closed:
            return False
        self.frames.append(frame)
        self.size += len(frame)
        self._wake()
        return True

    def end(self) -> None:
        """The writer is done."""
        self.ended = True
        self._wake()

    def close(self) -> None:
        """Nobody reads or writes any more: wake everyone so they stop."""
        self.closed = True
        self.frames.clear()
        self.size = 0
        self._wake()

    async def get(self) -> Frame | None:
        """The next frame; None at the end of the stream (or when closed)."""
        while not self.frames:
            if self.ended or self.closed:
                return None
            await self._changed.wait()
        frame = self.frames.popleft()
        self.size -= len(frame)
        self._wake()
        return frame


class Channels:
    """Every live channel, by id."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        # Ids need only be unique (the keys are the secret): a random prefix per start
        # and a counter, for the price of a counter.
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)
        #: The WebSocket listener's base URL, once it is up (``None``: channels cannot
        #: be opened by peers).
        self.base_url: str | None = None

    def create(self, buffer_size: int | None = None, held: str | None = None) -> Channel:
        """A new channel; ``held`` names the end the daemon holds itself (http).

        Raises:
            ChannelError: too many channels, or a bad buffer size.
        """
        size = DEFAULT_BUFFER if buffer_size is None else buffer_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BUFFER:
            raise ChannelError(400, f"buffer_size must be a whole number from 1 to "
                                    f"{MAX_BUFFER}")
        if len(self.channels) >= MAX_CHANNELS:
            raise ChannelError(503, f"too many channels open ({MAX_CHANNELS})")
        key = base64.urlsafe_b64encode(secrets.token_bytes(36)).decode()
        channel = Channel(id=f"{self._id_prefix}{next(self._ids):016x}",
                          keys={"read": key[:24], "write": key[24:]}, buffer_size=size)
        self.channels[channel.id] = channel
        if held is not None:
            channel.opened.add(held)  # whoever holds it drops it when done
        else:
            channel.expiry = asyncio.get_running_loop().call_later(
                OPEN_WITHIN_S, self._expire, channel)
        return channel

    def create_refs(self, buffer_size: int | None) -> dict[str, Any]:
        """What ``engine::channels::create`` answers.

        Raises:
            ChannelError: as :meth:`create`, or no listener peers could reach.
        """
        if self.base_url is None:
            raise ChannelError(503, "channels need the WebSocket listener, which is off "
                                    "(see iii daemon status)")
        channel = self.create(buffer_size)
        return {"writer": channel.ref("write"), "reader": channel.ref("read")}

    def _expire(self, channel: Channel) -> None:
        channel.expiry = None
        if len(channel.opened) < 2 and self.channels.get(channel.id) is channel:
            log.info("channel %s expired: %s end never opened", channel.id,
                     " and ".join(sorted({"read", "write"} - channel.opened)))
            self.drop(channel)

    def drop(self, channel: Channel) -> None:
        if self.channels.pop(channel.id, None) is not None:
            channel.close()
            if channel.expiry is not None:
                channel.expiry.cancel()
                channel.expiry = None

    def open(self, channel_id: str, key: str, direction: str) -> Channel:
        """Claim one end of a channel for a peer.

        Raises:
            ChannelError: unknown or expired channel, wrong key or direction, or that end
                opened already.
        """
        if direction not in ("read", "write"):
            raise ChannelError(400, "dir must be read or write")
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ChannelError(404, f"no channel {channel_id!r} (never made, done, or "
                                    f"expired)")
        if not hmac.compare_digest(channel.keys[direction].encode(), key.encode()):
            raise ChannelError(403, "wrong access key for this channel")
        if direction in channel.opened:
            raise ChannelError(409, f"the {direction} end of this channel is open already")
        channel.opened.add(direction)
        channel._wake()
        if direction == "write" and channel.on_writer is not None:
            channel.on_writer()
        return channel
