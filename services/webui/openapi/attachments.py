"""Attachments (attachments/): upload, list, download and delete files."""

from __future__ import annotations

from .helpers import ID_MAX, errors, obj, ok, ref


def schemas() -> dict:
    return {
        "Attachment": obj(
            {
                "id": {"type": "string"},
                "filename": {"type": "string", "description": "Sanitized: no folders, no control characters."},
                "media_type": {"type": "string", "description": "Decided by the server from the content."},
                "kind": {"enum": ["text", "pdf", "image"]},
                "size": {"type": "integer", "minimum": 0},
                "text_chars": {"type": "integer", "minimum": 0, "description": "Characters of (extracted) text."},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "created_at": {"type": "string", "format": "date-time"},
                "url": {"type": "string", "description": "The download URL."},
                "sent": {"type": "boolean", "description": "A message carries it."},
            },
            required=["id", "filename", "media_type", "kind", "size", "text_chars", "sha256", "created_at", "url"],
        ),
    }


def exported_attachments() -> dict:
    """The `attachments` of a message in an export and in the session API."""
    return {
        "type": "array",
        "description": "A user message's files (absent when it has none). Exports carry each file's "
        "bytes as content_base64 (null when the export would outgrow the import limit; an import "
        "skips those); the session API lists them without bytes.",
        "items": obj(
            {
                "id": {"type": "string"},
                "filename": {"type": "string"},
                "media_type": {"type": "string"},
                "kind": {"enum": ["text", "pdf", "image"]},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "content_base64": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            required=["filename"],
        ),
    }


def paths() -> dict:
    aid = [
        {
            "name": "attachment_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
        }
    ]
    download = {
        "description": "The bytes, as a download (Content-Disposition: attachment, nosniff, a sandbox CSP).",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    return {
        "/api/attachments": {
            "post": {
                "summary": "Upload one file; send its id in attachment_ids of POST /api/chat/message.",
                "description": "Text (UTF-8: code, logs, Markdown, CSV, JSON), PDF (its text is extracted) and "
                "PNG/JPEG/GIF/WebP images (only for models with vision). HTML, SVG and binaries are refused. "
                "At most ATTACHMENT_MAX_BYTES a file and ATTACHMENT_QUOTA_BYTES a user (each distinct "
                "content counted once). With agent_id (and model_id), an image for a model without vision "
                "is refused at once.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": obj(
                                {
                                    "file": {"type": "string", "format": "binary"},
                                    "agent_id": {"type": "string"},
                                    "model_id": {"type": "string"},
                                },
                                required=["file"],
                            )
                        }
                    },
                },
                "responses": {
                    "201": {**ok("Stored (or the same file already was).", ref("Attachment"))},
                    **errors(400, 401, 413, 415, 422),
                },
            },
            "get": {
                "summary": "The caller's attachments (newest first), the quota and the limits.",
                "responses": {
                    "200": ok(
                        "Attachments.",
                        obj(
                            {
                                "attachments": {"type": "array", "items": ref("Attachment")},
                                "quota": obj({"used_bytes": {"type": "integer"}, "limit_bytes": {"type": "integer"}}),
                                "limits": obj({"max_files": {"type": "integer"}, "max_bytes": {"type": "integer"}}),
                            }
                        ),
                    ),
                    **errors(400, 401),
                },
            },
        },
        "/api/attachments/{attachment_id}": {
            "get": {
                "summary": "One attachment's metadata (the uploader's; admins: one a message carries).",
                "parameters": aid,
                "responses": {"200": ok("The attachment.", ref("Attachment")), **errors(400, 401, 404)},
            },
            "delete": {
                "summary": "Delete an unsent upload (a sent one goes with the last session that carries it).",
                "parameters": aid,
                "responses": {
                    "200": ok("Deleted.", obj({"id": {"type": "string"}, "deleted": {"const": True}})),
                    **errors(400, 401, 404, 409),
                },
            },
        },
        "/api/attachments/{attachment_id}/content": {
            "get": {
                "summary": "Download the file (also at /attachments/{attachment_id} for pages).",
                "parameters": aid,
                "responses": {"200": download, **errors(400, 401, 404)},
            }
        },
    }
