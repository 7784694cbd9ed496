"""The sessions JSON API under /api/chat/sessions.

GET    /api/chat/sessions?q=&agent_id=&model_id=&status=&archived=&cursor=   (also from, to, sort,
       user (admins), limit): newest activity first, with `next_cursor`
GET    /api/chat/sessions/<id>                  the session with its messages and totals
PATCH  /api/chat/sessions/<id>                  {"title": "..."}
DELETE /api/chat/sessions/<id>
POST   /api/chat/sessions/<id>/archive | /unarchive
GET    /api/chat/sessions/<id>/export?format=json|md
POST   /api/chat/sessions/import                a JSON export, as the body or as the file field `file`
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for
from flask_login import current_user

from ..errors import json_body
from ..ownership import owned_session
from . import actions, exporting, importing
from .queries import SessionRow, SessionsError, list_sessions, parse_filters
from .review import build_review

bp = Blueprint("sessions_api", __name__, url_prefix="/api/chat/sessions")


def summary(row: SessionRow) -> dict:
    session = row.session
    return {
        "id": session.id,
        "title": session.title,
        "agent_id": session.agent_id,
        "agent_name": session.agent_name,
        "model_id": session.model_id,
        "owner": row.owner,
        "created_at": exporting.iso(session.created_at),
        "updated_at": exporting.iso(session.updated_at),
        "archived_at": exporting.iso(session.archived_at),
        "archived": session.archived_at is not None,
        "live": session.active_run_id is not None,
        "last_status": row.last_status,
        "message_count": row.message_count,
        # HTML: escaped text with <mark> around the matched words; null when not searching.
        "title_html": str(row.title_html) if row.title_html is not None else None,
        "snippet_html": str(row.snippet_html) if row.snippet_html is not None else None,
        "url": url_for("sessions.review", session_id=session.id),
    }


def detail(session) -> dict:
    review = build_review(session)
    document = exporting.session_document(review, current_user.username)
    for item, view in zip(document["messages"], review.messages):
        item["cost_usd"] = view.cost_usd
        item["cost_estimated"] = view.cost_estimated
        item["outcome"] = view.outcome
    totals = review.totals
    return {
        "session": {
            **document["session"],
            "owner": review.owner,
            "archived": session.archived_at is not None,
            "live": session.active_run_id is not None,
        },
        "messages": document["messages"],
        "totals": {
            "messages": totals.messages,
            "replies": totals.replies,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "total_tokens": totals.total_tokens,
            "cost_usd": totals.cost_usd,
            "cost_estimated": totals.cost_estimated,
            "duration_seconds": totals.duration.total_seconds() if totals.duration else None,
            "outcomes": dict(totals.outcomes),
        },
    }


@bp.get("")
def index():
    filters = parse_filters(request.args, current_user)
    page = list_sessions(filters, current_user)
    return jsonify(sessions=[summary(row) for row in page.rows], next_cursor=page.next_cursor)


@bp.get("/<session_id>")
def show(session_id: str):
    return jsonify(detail(owned_session(session_id, admin_may_read=True)))


@bp.patch("/<session_id>")
def update(session_id: str):
    session = owned_session(session_id)
    body = json_body()
    if "title" not in body:
        raise SessionsError(422, 'Send the new title as {"title": "..."}.')
    actions.rename(session, body["title"])
    return jsonify(id=session.id, title=session.title)


@bp.delete("/<session_id>")
def destroy(session_id: str):
    actions.delete_session(owned_session(session_id))
    return jsonify(id=session_id, deleted=True)


@bp.post("/<session_id>/archive")
def archive(session_id: str):
    session = actions.archive(owned_session(session_id))
    return jsonify(id=session.id, archived=True, archived_at=exporting.iso(session.archived_at))


@bp.post("/<session_id>/unarchive")
def unarchive(session_id: str):
    session = actions.unarchive(owned_session(session_id))
    return jsonify(id=session.id, archived=False, archived_at=None)


def download(session, fmt: str) -> Response:
    if fmt == "json":
        body, mimetype = exporting.export_json(session, current_user.username), "application/json"
    elif fmt == "md":
        body, mimetype = exporting.export_markdown(session), "text/markdown"
    else:
        raise SessionsError(400, f"format must be json or md, not {fmt[:20]!r}.")
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{exporting.export_filename(session, fmt)}"'
    return response


@bp.get("/<session_id>/export")
def export(session_id: str):
    session = owned_session(session_id, admin_may_read=True)
    return download(session, (request.args.get("format") or "json").strip().lower())


def uploaded_bytes() -> bytes:
    """The export from a multipart field `file` or from the raw body (application/json)."""
    upload = request.files.get("file")
    if upload is not None:
        data = upload.stream.read(importing.import_limit() + 1)
        if not data and not upload.filename:
            raise SessionsError(400, "Choose a JSON file exported from Switchboard.")
        return data
    if request.mimetype == "application/json":
        return request.get_data(cache=False)
    raise SessionsError(400, "Send the export as a JSON body or as the file field 'file'.")


@bp.post("/import")
def import_session():
    plan = importing.parse_import(uploaded_bytes())
    session = importing.import_document(plan, current_user)
    response = jsonify(
        session_id=session.id,
        title=session.title,
        messages=len(plan["messages"]),
        url=url_for("sessions.review", session_id=session.id),
    )
    response.status_code = 201
    response.headers["Location"] = url_for("sessions_api.show", session_id=session.id)
    return response
