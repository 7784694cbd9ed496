"""Attachment routes: upload, list, look at, remove an unsent one, and download.

POST   /api/attachments                    multipart: `file` (one), optional agent_id + model_id
GET    /api/attachments                    the caller's attachments and quota
GET    /api/attachments/{id}               one attachment's metadata
DELETE /api/attachments/{id}               an unsent upload (a sent one goes with its session)
GET    /api/attachments/{id}/content       the bytes, always as a download
GET    /attachments/{id}                   the same, for pages (links and thumbnails)

Downloads go only to the uploader (and admins reviewing a session that carries them), and are
never rendered as a page: Content-Disposition: attachment, nosniff, a sandbox CSP, and a type that
is text/plain, application/pdf, a raster image or application/octet-stream.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, current_app, jsonify, request, send_file, url_for
from flask_login import current_user

from ..errors import error_response
from ..extensions import talisman
from ..fleet import registry
from . import service, storage
from .validation import AttachmentError

bp = Blueprint("attachments_api", __name__)

# Multipart framing around the one file: the body limit of the upload route is the file limit plus this.
MULTIPART_ROOM = 64 * 1024
DOWNLOAD_CSP = "default-src 'none'; img-src 'self'; sandbox"
SERVED_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"}


def content_disposition(filename: str) -> str:
    """Always a download: an ASCII fallback name and the exact one (RFC 6266 / 5987)."""
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@bp.url_value_preprocessor
def upload_limit(endpoint, values) -> None:
    # Runs before every before_request hook (which reads the form): only this route takes 10 MB.
    if endpoint == "attachments_api.upload":
        request.max_content_length = current_app.config["ATTACHMENT_MAX_BYTES"] + MULTIPART_ROOM


@bp.errorhandler(413)
def too_large(exc):
    limit = service.megabytes(current_app.config["ATTACHMENT_MAX_BYTES"])
    return error_response(413, f"The file is larger than {limit}, the limit for one file.")


def summary(row) -> dict:
    return {
        "id": row.id,
        "filename": row.filename,
        "media_type": row.media_type,
        "kind": row.kind,
        "size": row.size,
        "text_chars": row.text_chars,
        "sha256": row.sha256,
        "created_at": row.created_at.isoformat() + "Z",
        "url": url_for("attachments_api.download", attachment_id=row.id),
    }


def _model_for_upload(form):
    """The model the composer has chosen, if it says: an image for a model without vision is
    refused at once rather than at send."""
    agent_id, model_id = form.get("agent_id"), form.get("model_id")
    agent = registry().get(agent_id) if agent_id else None
    if agent is None:
        return None
    return agent.model(model_id) if model_id else agent.models[0]


@bp.post("/api/attachments")
def upload():
    if request.mimetype != "multipart/form-data":
        raise AttachmentError(415, "Send the file as multipart/form-data, in the field named file.")
    files = request.files.getlist("file")
    if len(files) != 1:
        raise AttachmentError(400, "Send exactly one file, in the field named file.")
    row = service.upload(current_user, files[0], _model_for_upload(request.form))
    response = jsonify(summary(row))
    response.status_code = 201
    response.headers["Location"] = url_for("attachments_api.show", attachment_id=row.id)
    return response


@bp.get("/api/attachments")
def index():
    rows = service.mine(current_user)
    config = current_app.config
    return jsonify(
        attachments=[{**summary(row), "sent": sent} for row, sent in rows],
        quota={"used_bytes": service.quota_used(current_user.id), "limit_bytes": config["ATTACHMENT_QUOTA_BYTES"]},
        limits={"max_files": config["ATTACHMENT_MAX_FILES"], "max_bytes": config["ATTACHMENT_MAX_BYTES"]},
    )


@bp.get("/api/attachments/<attachment_id>")
def show(attachment_id: str):
    row = service.readable_attachment(current_user, attachment_id)
    return jsonify({**summary(row), "sent": service.is_linked(row.id)})


@bp.delete("/api/attachments/<attachment_id>")
def remove(attachment_id: str):
    row = service.owned_attachment(current_user, attachment_id)
    service.delete_unsent(row)
    return jsonify(id=attachment_id, deleted=True)


@bp.get("/api/attachments/<attachment_id>/content")
@bp.get("/attachments/<attachment_id>")
@talisman(content_security_policy=DOWNLOAD_CSP, frame_options="DENY")
def download(attachment_id: str):
    row = service.readable_attachment(current_user, attachment_id)
    if row.kind == "text":
        mimetype = "text/plain"  # werkzeug adds charset=utf-8
    else:
        mimetype = row.media_type if row.media_type in SERVED_TYPES else "application/octet-stream"
    try:
        path = storage.blob_path(row.sha256)
        response = send_file(
            path, mimetype=mimetype, as_attachment=True, download_name=row.filename, conditional=True, max_age=0
        )
    except FileNotFoundError:
        raise AttachmentError(404, "The file of this attachment is missing from the store.") from None
    response.headers["Content-Disposition"] = content_disposition(row.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-cache"
    return response
