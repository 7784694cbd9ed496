"""The SSE parser against the WHATWG rules, the writers the web app uses, and the cut that lets
a read's first token go on ahead of the rest."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.body import split_after_first_token
from services.gateway.sse import SSEMessage, SSEParser, format_comment, format_sse


def parse_in_pieces(*chunks: bytes) -> list[SSEMessage]:
    parser = SSEParser()
    messages = []
    for chunk in chunks:
        messages.extend(parser.feed(chunk))
    return messages + parser.flush()


def test_simple_event_with_type_and_id():
    assert parse_in_pieces(b"event: token\nid: 7\ndata: hello\n\n") == [
        SSEMessage(event="token", data="hello", id="7", retry=None)
    ]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_works(newline):
    stream = newline.join([b"event: a", b"data: one", b"", b"data: two", b"", b""])
    assert [(m.event, m.data) for m in parse_in_pieces(stream)] == [("a", "one"), (None, "two")]


def test_crlf_split_across_chunks_is_one_line_break():
    # If the CR and LF were two breaks, the LF would be an empty line and dispatch early;
    # then "data: second" would arrive as a separate message.
    messages = parse_in_pieces(b"data: first\r", b"\ndata: second\r", b"\n\r", b"\n")
    assert [m.data for m in messages] == ["first\nsecond"]


def test_cr_at_chunk_end_dispatches_without_waiting_for_the_next_chunk():
    parser = SSEParser()
    assert parser.feed(b"data: now\r\n\r") == [SSEMessage(None, "now")]
    assert parser.feed(b"\ndata: later\r\n\r\n") == [SSEMessage(None, "later")]


def test_multi_line_data_is_joined_with_newlines():
    messages = parse_in_pieces(b"data: line one\ndata: line two\ndata:\ndata: four\n\n")
    assert messages[0].data == "line one\nline two\n\nfour"


def test_comments_are_ignored_and_do_not_dispatch():
    messages = parse_in_pieces(b": keep-alive\n\n:another\ndata: x\n: mid comment\n\n")
    assert messages == [SSEMessage(None, "x")]


def test_field_without_colon_has_empty_value():
    # "data" alone appends an empty line; "event" alone resets the type to the default.
    messages = parse_in_pieces(b"event\ndata\ndata\n\n")
    assert messages == [SSEMessage(None, "\n")]


def test_only_one_leading_space_is_stripped():
    assert parse_in_pieces(b"data:  two spaces\ndata:none\n\n")[0].data == " two spaces\nnone"


def test_utf8_character_split_across_chunks():
    encoded = "data: héllo → 🎉\n\n".encode("utf-8")
    cut_inside_emoji = encoded.index("🎉".encode("utf-8")) + 2
    cut_inside_e_acute = encoded.index("é".encode("utf-8")) + 1
    messages = parse_in_pieces(
        encoded[:cut_inside_e_acute],
        encoded[cut_inside_e_acute:cut_inside_emoji],
        encoded[cut_inside_emoji:],
    )
    assert messages == [SSEMessage(None, "héllo → 🎉")]


def test_byte_by_byte_feeding_gives_the_same_result():
    stream = 'event: token\r\ndata: {"text": "ü"}\r\n\r\nevent: done\rdata: {}\r\r'.encode()
    whole = parse_in_pieces(stream)
    pieces = parse_in_pieces(*[stream[i : i + 1] for i in range(len(stream))])
    assert whole == pieces
    assert [m.event for m in whole] == ["token", "done"]


def test_event_without_data_is_not_dispatched_and_its_type_does_not_leak():
    messages = parse_in_pieces(b"event: lonely\n\ndata: next\n\n")
    assert messages == [SSEMessage(None, "next")]


def test_unterminated_event_is_dropped_at_end_of_stream():
    assert parse_in_pieces(b"data: complete\n\ndata: cut off") == [SSEMessage(None, "complete")]


def test_id_persists_and_retry_is_reported():
    messages = parse_in_pieces(b"id: 1\ndata: a\n\ndata: b\n\nretry: 1500\ndata: c\n\nretry: soon\ndata: d\n\n")
    assert [(m.id, m.retry) for m in messages] == [("1", None), ("1", None), ("1", 1500), ("1", None)]


def test_leading_bom_is_ignored():
    assert parse_in_pieces(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEMessage(None, "x")]


def test_format_sse_round_trips_through_the_parser():
    text = "line one\nline two\r\nline three\rend"
    written = format_sse(text, event="token", id="42")
    assert written.startswith("event: token\nid: 42\n")
    assert written.count("data: ") == 4
    assert parse_in_pieces(written.encode()) == [SSEMessage("token", "line one\nline two\nline three\nend", "42")]


def test_format_sse_refuses_line_breaks_in_event_and_id():
    with pytest.raises(ValueError):
        format_sse("x", event="token\ndata: injected")
    with pytest.raises(ValueError):
        format_sse("x", id="1\r2")


def test_format_comment_is_ignored_by_parser():
    written = format_comment("heartbeat\nsecond line")
    assert written == ": heartbeat\n: second line\n\n"
    assert parse_in_pieces(written.encode() + format_sse("after").encode()) == [SSEMessage(None, "after")]


def reference_parse(text: str) -> list[SSEMessage]:
    """The spec's interpretation of a whole stream, written plainly, as the oracle."""
    messages, data, event, last_id, retry = [], [], "", None, None
    for line in re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))[:-1]:  # the last has no end
        if line == "":
            if data:
                messages.append(SSEMessage(event or None, "\n".join(data), last_id, retry))
            data, event, retry = [], "", None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return messages


LINES = st.sampled_from(
    ["", "", "data: x", "data:y", "data", "event: token", "id: 7", "retry: 50", ": hi", "data:  two", "é data: ü"]
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINES, max_size=20),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_any_line_endings_in_any_pieces_parse_as_the_spec_says(lines, ends, cuts):
    text = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    raw = text.encode()
    parser, got, start = SSEParser(), [], 0
    for cut in sorted(c for c in cuts if c < len(raw)):
        got += parser.feed(raw[start:cut])
        start = cut
    got += parser.feed(raw[start:])
    # A CR at the very end may be half a CRLF: the spec waits for the next byte, this parser
    # does not (test_cr_at_chunk_end_dispatches_without_waiting_for_the_next_chunk); same result.
    assert got == reference_parse(text + ("\n" if text.endswith("\r") else ""))


# ---- body.split_after_first_token: the first token of a read goes on ahead of the rest ----------

FIRST_READ = [
    ("status_update", {"status": "planning"}),
    ("token", {"text": "one "}),
    ("token", {"text": "token "}),  # "token" in a text: no harm
    ("usage", {"prompt_tokens": 1, "completion_tokens": 2}),
    ("done", {"status": "complete"}),
]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_a_read_is_cut_right_after_its_first_token_event_and_parses_the_same(newline):
    payload = "".join(f"event: {kind}{newline}data: {json.dumps(data)}{newline}{newline}" for kind, data in FIRST_READ)
    head, rest = split_after_first_token(payload.encode())
    assert head + rest == payload.encode()
    first = SSEParser().feed(head)
    assert [m.event for m in first] == ["status_update", "token"]  # nothing after the first token
    parser = SSEParser()
    assert parser.feed(head) + parser.feed(rest) == SSEParser().feed(payload.encode())


def test_a_read_without_a_whole_token_event_is_not_cut():
    assert split_after_first_token(b"event: status_update\ndata: {}\n\n") == (
        b"event: status_update\ndata: {}\n\n",
        b"",
    )
    partial = b'event: token\ndata: {"text": "a'  # the event's end is in the next read
    assert split_after_first_token(partial) == (partial, b"")
