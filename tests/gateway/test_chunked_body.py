"""The chunked-body decoder the task streams read with: every split of the bytes gives the same
payload, several chunks come out of one read, and broken framing is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.transport import ChunkedBody, MalformedChunking


def encode(chunks: list[bytes], extension: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks if c)
    return body + b"0\r\nTrailer: x\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
    extension=st.sampled_from([b"", b";name=value"]),
)
def test_any_split_of_the_bytes_gives_the_whole_payload_once(chunks, cuts, extension):
    raw = encode(chunks, extension)
    body, payload, start = ChunkedBody(), b"", 0
    for cut in sorted({min(c, len(raw)) for c in cuts}) + [len(raw)]:
        payload += body.feed(raw[start:cut])
        start = cut
    assert payload == b"".join(chunks)
    assert body.done


def test_one_read_holding_many_chunks_gives_them_all_at_once():
    events = [b"event: token\ndata: {}\n\n"] * 5
    body = ChunkedBody()
    raw = encode(events)
    assert body.feed(raw[: raw.index(b"0\r\nTrailer")]) == b"".join(events) and not body.done


def test_nothing_after_the_last_chunk_counts():
    body = ChunkedBody()
    assert body.feed(b"3\r\nabc\r\n0\r\n\r\n5\r\nnever\r\n") == b"abc"
    assert body.done and body.feed(b"more") == b""


@pytest.mark.parametrize(
    "raw",
    [b"zz\r\nabc\r\n", b"3\r\nabcX\r\n", b"0x3\r\nabc\r\n", b"1_0\r\n", b"-3\r\nabc\r\n", b"1" * 5000],
)
def test_broken_framing_is_refused(raw):
    with pytest.raises(MalformedChunking):
        ChunkedBody().feed(raw)
