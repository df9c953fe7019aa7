"""NDJSON framing: split a byte stream into lines, with a size limit."""

from __future__ import annotations

from iii_sdk.errors import FrameTooLarge


class LineReader:
    """Collects bytes and hands back complete lines (without their ``\\n``).

    Raises :class:`FrameTooLarge` as soon as a line grows past ``max_bytes``; the
    caller then reports the error and closes the stream, since its position in the
    byte stream can no longer be trusted. An incomplete line is kept as a list of
    chunks, so a 64 MiB frame arriving in small reads costs linear time.
    """

    __slots__ = ("_max", "_parts", "_size")

    def __init__(self, max_bytes: int) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._size += len(data)
            if self._size > self._max:
                self._reset()
                raise FrameTooLarge(f"frame larger than {self._max} bytes")
            self._parts.append(data)
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
        lines = data.split(b"\n")
        rest = lines.pop()
        self._parts = [rest] if rest else []
        self._size = len(rest)
        if self._size > self._max or any(len(line) > self._max for line in lines):
            self._reset()
            raise FrameTooLarge(f"frame larger than {self._max} bytes")
        return [line for line in lines if line]

    def _reset(self) -> None:
        self._parts = []
        self._size = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held back."""
        return self._size
