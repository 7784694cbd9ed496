"""Server-sent events: an incremental parser and the helpers that write a stream.

The parser follows the WHATWG "event stream interpretation" rules: lines end in LF, CR or
CRLF (a CRLF may be split across two chunks), comment lines start with ':', a field without
a colon has an empty value, one space after the colon is dropped, several data lines join
with LF, and an event is dispatched by an empty line. Bytes are decoded as UTF-8
incrementally, so a character split across chunks is kept whole.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEMessage:
    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed it bytes as they arrive; it returns the messages those bytes completed."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # decoded text after the last complete line
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._at_stream_start = True
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        # The spec's "last event ID buffer" survives dispatches, so it does here too.
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        return self._consume(self._decoder.decode(chunk))

    def flush(self) -> list[SSEMessage]:
        """End of stream: per the spec an event without its closing blank line is dropped."""
        messages = self._consume(self._decoder.decode(b"", final=True))
        self._text = ""
        self._data, self._event, self._retry = [], "", None
        return messages

    def _consume(self, text: str) -> list[SSEMessage]:
        if not text:
            return []
        if self._at_stream_start:
            self._at_stream_start = False
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._text + text
        messages: list[SSEMessage] = []
        if "\r" not in buffer:
            # The common case (every agent Switchboard ships, and most servers): LF only. One
            # split instead of a regex match per line; under load this parser sees every token.
            lines = buffer.split("\n")
            self._text = lines.pop()
            for line in lines:
                if not line:
                    message = self._dispatch()
                    if message is not None:
                        messages.append(message)
                elif line[0] != ":":
                    self._process_field(line)
            return messages
        position = 0
        for match in _LINE_BREAK.finditer(buffer):
            # A lone CR at the very end may be the first half of a CRLF split across chunks.
            # It ends the line now (no waiting), and a leading LF of the next chunk is skipped.
            if match.group() == "\r" and match.end() == len(buffer):
                self._skip_lf = True
            message = self._process_line(buffer[position : match.start()])
            if message is not None:
                messages.append(message)
            position = match.end()
        self._text = buffer[position:]
        return messages

    def _process_line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if not line.startswith(":"):
            self._process_field(line)
        return None

    def _process_field(self, line: str) -> None:
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)

    def _dispatch(self) -> SSEMessage | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return SSEMessage(event=event or None, data="\n".join(data), id=self._last_id, retry=retry)


def _single_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"An SSE {name} cannot contain a line break.")
    return value


def format_sse(data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> str:
    """One complete event; data with line breaks becomes several data: lines."""
    lines = []
    if event is not None:
        lines.append(f"event: {_single_line('event name', event)}")
    if id is not None:
        lines.append(f"id: {_single_line('id', id)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return "\n".join(lines) + "\n\n"


def format_comment(text: str = "") -> str:
    """A comment block (e.g. a heartbeat); clients ignore it but it keeps proxies awake."""
    return "\n".join(f": {line}" if line else ":" for line in _LINE_BREAK.split(text)) + "\n\n"
