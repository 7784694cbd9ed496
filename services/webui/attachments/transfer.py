"""Attachments in session exports and imports (sessions/exporting.py and sessions/importing.py call these).

A JSON export lists each message's attachments (metadata) and carries their bytes as base64, as
long as the whole file stays within SESSIONS_IMPORT_MAX_BYTES (so that it can be imported again);
beyond that a file is listed with `content_base64: null` and an import skips it. An import stores
the files for the importing user (deduplicated by hash, counted against their quota) and checks
each one exactly as an upload is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io

from flask import current_app

from ..errors import RequestError
from ..models import Attachment
from . import service, storage
from .validation import clean_filename

MAX_PER_MESSAGE = 100


def listed(message_ids) -> dict[str, list[dict]]:
    """Each message's attachments as the export lists them (no bytes)."""
    return {
        message_id: [
            {
                "id": a.id,
                "filename": a.filename,
                "media_type": a.media_type,
                "kind": a.kind,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in rows
        ]
        for message_id, rows in service.by_message(message_ids).items()
    }


def add_contents(document: dict) -> None:
    """Put each listed file's bytes in the document, while the export stays importable."""
    budget = current_app.config["SESSIONS_IMPORT_MAX_BYTES"] - len(str(document).encode()) - 4096
    for message in document["messages"]:
        for item in message.get("attachments", []):
            encoded_size = (item["size"] + 2) // 3 * 4
            if encoded_size > budget or not storage.exists(item["sha256"]):
                item["content_base64"] = None
                continue
            item["content_base64"] = base64.b64encode(storage.read_bytes(item["sha256"])).decode("ascii")
            budget -= encoded_size


def markdown_line(items: list[dict]) -> str:
    from .. import attachments

    return "Attachments: " + ", ".join(f"{item['filename']} ({attachments.filesize(item['size'])})" for item in items)


def parse(value, where: str, refuse) -> list[dict]:
    """An imported message's `attachments`: checked, decoded; files without content are skipped."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PER_MESSAGE:
        refuse(422, f"{where}.attachments must be a list of at most {MAX_PER_MESSAGE} files.")
    files = []
    for index, item in enumerate(value):
        here = f"{where}.attachments[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            refuse(422, f"{here} must be an object with a filename.")
        content = item.get("content_base64")
        if content is None:
            continue
        if not isinstance(content, str):
            refuse(422, f"{here}.content_base64 must be base64 text or null.")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            refuse(422, f"{here}.content_base64 is not valid base64.")
        sha256 = item.get("sha256")
        if sha256 is not None and sha256 != hashlib.sha256(data).hexdigest():
            refuse(422, f"{here}: the content does not match its sha256.")
        files.append({"filename": clean_filename(item["filename"]), "data": data})
    return files


class _Upload:
    """What service.upload reads from a werkzeug FileStorage."""

    def __init__(self, filename: str, data: bytes):
        self.filename = filename
        self.stream = io.BytesIO(data)


def restore(user, files: list[dict]) -> list[Attachment]:
    """Store an imported message's files for `user`: each checked as an upload is; a refusal
    names the file (the caller rolls the whole import back)."""
    stored = []
    for item in files:
        try:
            stored.append(service.upload(user, _Upload(item["filename"], item["data"]), commit=False))
        except RequestError as exc:
            raise RequestError(exc.status, f"The import's attachment {exc.message}") from None
    return stored
