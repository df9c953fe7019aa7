from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_sdk.errors import FrameTooLarge
from iii_sdk.framing import LineReader


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
