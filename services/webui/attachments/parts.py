"""A message as the agent receives it: plain text, or content parts when it carries attachments.

Native protocol (docs/agent-protocol.md): `content` stays a string for a message without
attachments, so existing agents keep working; with attachments it is a list of parts:
    {"type": "text", "text": …}
    {"type": "file", "name": …, "media_type": …, "text": extracted text}
    {"type": "image", "name": …, "media_type": …, "data": base64}
Their cost, for the context budget, is in characters (~4 a token): text by its length, an image
by a fixed estimate.
"""

from __future__ import annotations

import base64
import math

from ..models import Attachment
from . import storage
from .service import by_message

IMAGE_COST_CHARS = 4 * 1000  # an image counts as ~1,000 tokens, whatever its size


MISSING = "(this file is missing from Switchboard's store)"


def file_text(attachment: Attachment) -> str:
    if attachment.kind == "pdf":
        return attachment.extracted_text or ""
    try:
        return storage.read_bytes(attachment.sha256).decode("utf-8-sig", errors="replace")
    except FileNotFoundError:  # removed by hand, or a lost race with a deletion: say so, do not fail
        return MISSING


def cost_chars(text: str, attachments: list[Attachment]) -> int:
    """What a message costs the context budget, without reading any file."""
    return len(text) + sum(IMAGE_COST_CHARS if a.kind == "image" else a.text_chars for a in attachments)


def extra_tokens(attachments: list[Attachment]) -> int:
    """Tokens a message's files add to its text, for the context plan (chat/context.py)."""
    return math.ceil(cost_chars("", attachments) / 4)


def extra_tokens_of_messages(message_ids: list[str]) -> dict[str, int]:
    """The context plan's hook: each message's file tokens, in one query."""
    return {message_id: extra_tokens(files) for message_id, files in by_message(message_ids).items()}


def part(attachment: Attachment) -> dict:
    if attachment.kind == "image":
        try:
            data = base64.b64encode(storage.read_bytes(attachment.sha256)).decode("ascii")
        except FileNotFoundError:
            return {"type": "file", "name": attachment.filename, "media_type": attachment.media_type, "text": MISSING}
        return {"type": "image", "name": attachment.filename, "media_type": attachment.media_type, "data": data}
    return {
        "type": "file",
        "name": attachment.filename,
        "media_type": attachment.media_type,
        "text": file_text(attachment),
    }


def agent_content(text: str, attachments: list[Attachment]) -> tuple[str | list[dict], int]:
    """The `content` to send for a message, and its cost in characters."""
    if not attachments:
        return text, len(text)
    parts = [{"type": "text", "text": text}] if text else []
    parts += [part(a) for a in attachments]
    return parts, cost_chars(text, attachments)
