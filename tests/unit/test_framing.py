from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_sdk.errors import FrameTooLarge
from iii_sdk.framing import PEEK_BYTES, LineReader


def test_splits_lines_and_keeps_the_partial_one() -> None:
    reader = LineReader(100)
    assert reader.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert reader.buffered == 4
    assert reader.feed(b':2}\n\n') == [b'{"b":2}']  # empty lines are skipped
    assert reader.buffered == 0


def test_a_frame_over_the_limit_raises_even_before_its_newline() -> None:
    reader = LineReader(10)
    reader.feed(b"12345")
    with pytest.raises(FrameTooLarge):
        reader.feed(b"678901")
    assert reader.buffered == 0


def test_a_complete_frame_over_the_limit_raises() -> None:
    with pytest.raises(FrameTooLarge):
        LineReader(10).feed(b"x" * 11 + b"\n")


def test_a_frame_exactly_at_the_limit_passes() -> None:
    assert LineReader(10).feed(b"x" * 10 + b"\n") == [b"x" * 10]


def test_a_large_frame_in_many_small_chunks() -> None:
    reader = LineReader(64 * 1024 * 1024)
    chunk = b"y" * 65536
    for _ in range(256):  # 16 MiB in 64 KiB reads stays linear, not quadratic
        assert reader.feed(chunk) == []
    assert reader.feed(b"\n") == [chunk * 256]


@given(st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b),
                max_size=20),
       st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=10))
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    reader = LineReader(1000)
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        got += reader.feed(stream[pos:pos + size])
        pos += size
        i += 1
    assert got == lines


def test_the_daemon_skips_an_oversized_line_and_keeps_reading() -> None:
    """Issue: one line over the limit cost the whole connection; now only that line."""
    reader = LineReader(10, skip_oversized=True)
    assert reader.feed(b'{"a":1}\n{"big":"') == [b'{"a":1}']
    assert reader.feed(b"x" * 100_000) == [] and reader.buffered == 0  # not held
    assert reader.feed(b'","end":1}\n{"b":2}\n') == [b'{"b":2}']
    [line] = reader.oversized
    assert line.size == len(b'{"big":"') + 100_000 + len(b'","end":1}')
    assert line.head.startswith(b'{"big":"') and line.tail.endswith(b'","end":1}')
    assert len(line.head) == len(line.tail) == PEEK_BYTES


def test_complete_oversized_lines_in_one_read_are_each_skipped() -> None:
    reader = LineReader(10, skip_oversized=True)
    assert reader.feed(b"y" * 11 + b"\nok\n" + b"z" * 12 + b"\nfine\n") == [b"ok", b"fine"]
    assert [line.size for line in reader.oversized] == [11, 12]
