"""NDJSON framing: split a byte stream into lines, with a size limit."""

from __future__ import annotations

from iii_sdk.errors import FrameTooLarge

#: Bytes kept from each end of a line too large to keep: enough to find its type and
#: invocation id, wherever its sender put them.
PEEK_BYTES = 4096


class Oversized:
    """A line over the limit that was read and dropped: its size, and its first and
    last :data:`PEEK_BYTES` (they may overlap)."""

    __slots__ = ("head", "size", "tail")

    def __init__(self, chunks: list[bytes] | None = None) -> None:
        self.head = b""
        self.tail = b""
        self.size = 0
        for chunk in chunks or ():
            self.add(chunk)

    @classmethod
    def of(cls, frame: bytes) -> Oversized:
        """A whole frame over the limit (a WebSocket message)."""
        line = cls()
        line.head, line.tail, line.size = frame[:PEEK_BYTES], frame[-PEEK_BYTES:], len(frame)
        return line

    def add(self, data: bytes) -> None:
        if len(self.head) < PEEK_BYTES:
            self.head += data[:PEEK_BYTES - len(self.head)]
        self.tail = (self.tail + data[-PEEK_BYTES:])[-PEEK_BYTES:]
        self.size += len(data)


class LineReader:
    """Collects bytes and hands back complete lines (without their ``\\n``).

    A line that grows past ``max_bytes``: by default :class:`FrameTooLarge` is raised
    as soon as that is known, and the caller closes the stream. With
    ``skip_oversized`` (the daemon) the line is read to its end and dropped instead,
    keeping only its ends, and appended to :attr:`oversized` for the caller to answer;
    the lines after it are read as usual. An incomplete line is kept as a list of
    chunks, so a 64 MiB frame arriving in small reads costs linear time.
    """

    __slots__ = ("_max", "_parts", "_size", "_skip", "_skipping", "oversized")

    def __init__(self, max_bytes: int, skip_oversized: bool = False) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_bytes
        self._skip = skip_oversized
        #: The oversized line being read past, if any.
        self._skipping: Oversized | None = None
        #: Oversized lines dropped so far; the caller takes them (and clears the list).
        self.oversized: list[Oversized] = []

    def feed(self, data: bytes) -> list[bytes]:
        if self._skipping is not None:
            newline = data.find(b"\n")
            if newline < 0:
                self._skipping.add(data)
                return []
            self._skipping.add(data[:newline])
            self.oversized.append(self._skipping)
            self._skipping = None
            data = data[newline + 1:]
        if b"\n" not in data:
            self._size += len(data)
            if self._size > self._max:
                self._too_large([*self._parts, data], complete=False)
                return []
            if data:
                self._parts.append(data)
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
        lines = data.split(b"\n")
        rest = lines.pop()
        self._parts = [rest] if rest else []
        self._size = len(rest)
        limit = self._max
        if max(map(len, lines)) > limit:  # lines is not empty: data held a newline
            for line in lines:
                if len(line) > limit:
                    self._too_large([line], complete=True)
            lines = [line for line in lines if len(line) <= limit]
        if self._size > limit:
            self._too_large([rest], complete=False)
        return [line for line in lines if line]

    def _too_large(self, chunks: list[bytes], complete: bool) -> None:
        if not self._skip:
            self._reset()
            raise FrameTooLarge(f"frame larger than {self._max} bytes")
        line = Oversized(chunks)
        if complete:
            self.oversized.append(line)
        else:  # read past the rest of it as it arrives
            self._reset()
            self._skipping = line

    def _reset(self) -> None:
        self._parts = []
        self._size = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held back."""
        return self._size
