"""The sessions pages: the searchable list, the read-only review, and the actions on one session.

Actions are plain forms that work without JavaScript (POST, then 303 back to `next`); sent by htmx
(HX-Request) they answer with the fragment to swap instead: the re-rendered
`sessions/_session_actions.html`, plus an `HX-Trigger: sessions-changed` event so that lists and
sidebars can refresh themselves. A form field `after=reload` asks for a full reload instead
(`HX-Refresh`), for pages whose other parts depend on the session's state (the chat composer).
"""

from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from ..errors import RequestError
from ..ownership import owned_session
from ..redirects import safe_next
from ..rendering import render_message
from . import actions, exporting, importing
from .api import download, uploaded_bytes
from .queries import filter_choices, list_sessions, parse_filters
from .review import build_review

bp = Blueprint("sessions", __name__, url_prefix="/sessions")
RESULTS_ID = "sessions-results"


@bp.app_context_processor
def session_helpers():
    return {"session_render_text": render_message}


@bp.app_template_filter("session_iso")
def session_iso(value) -> str:
    return exporting.iso(value) or ""


@bp.app_template_filter("session_time")
def session_time(value, seconds: bool = False) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("session_cost")
def session_cost(value, estimated: bool = False) -> str:
    if value is None:
        return "—"
    if value >= 1:
        text = f"${value:,.2f}"
    elif value >= 0.01:
        text = f"${value:.4f}"
    else:  # fractions of a cent: up to six decimals, without trailing zeros
        text = "$" + (f"{value:.6f}".rstrip("0").rstrip(".") if value else "0")
    return ("≈ " if estimated else "") + text


@bp.app_template_filter("session_duration")
def session_duration(value) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{value.total_seconds():.1f} s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"


def _safe_next(default: str) -> str:
    return safe_next(request.form.get("next") or request.args.get("next"), default)


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


# ---- the list -----------------------------------------------------------------------------------


@bp.get("")
def index():
    partial = _is_htmx() and f"#{RESULTS_ID}" in request.headers.get("HX-Target", "")
    try:
        filters = parse_filters(request.args, current_user)
        page = list_sessions(filters, current_user)
        error, status = None, 200
    except RequestError as exc:
        if exc.status != 400:
            raise
        filters, page, error, status = parse_filters({}, current_user), None, exc.message, 400
    context = {"page": page, "filters": filters, "error": error, "results_id": RESULTS_ID}
    if partial:
        return render_template("sessions/_results.html", **context), status
    choices = filter_choices(current_user)
    args = request.args
    return render_template("sessions/index.html", choices=choices, args=args, **context), status


# ---- review -------------------------------------------------------------------------------------


@bp.get("/<session_id>")
def review(session_id: str):
    session = owned_session(session_id, admin_may_read=True)
    data = build_review(session)
    return render_template(
        "sessions/review.html", review=data, session=session, can_edit=session.user_id == current_user.id
    )


@bp.get("/<session_id>/export.<fmt>")
def export(session_id: str, fmt: str):
    return download(owned_session(session_id, admin_may_read=True), fmt)


# ---- actions ------------------------------------------------------------------------------------


def _answer(session, default_next: str):
    if not _is_htmx():
        return redirect(_safe_next(default_next), code=303)
    if request.form.get("after") == "reload":
        response = make_response("", 200)
        response.headers["HX-Refresh"] = "true"
        return response
    response = make_response(
        render_template(
            "sessions/_session_actions.html",
            session=session,
            compact=request.form.get("compact") == "1",
            next_url=safe_next(request.form.get("next"), None),
        )
    )
    response.headers["HX-Trigger"] = "sessions-changed"
    return response


@bp.post("/<session_id>/rename")
def rename(session_id: str):
    session = owned_session(session_id)
    actions.rename(session, request.form.get("title", ""))
    return _answer(session, url_for("sessions.review", session_id=session.id))


@bp.post("/<session_id>/archive")
def archive(session_id: str):
    session = actions.archive(owned_session(session_id))
    return _answer(session, url_for("sessions.review", session_id=session.id))


@bp.post("/<session_id>/unarchive")
def unarchive(session_id: str):
    session = actions.unarchive(owned_session(session_id))
    return _answer(session, url_for("sessions.review", session_id=session.id))


@bp.get("/<session_id>/delete")
def confirm_delete(session_id: str):
    session = owned_session(session_id)
    return render_template("sessions/delete.html", session=session, review=build_review(session))


@bp.post("/<session_id>/delete")
def delete(session_id: str):
    actions.delete_session(owned_session(session_id))
    target = _safe_next(url_for("sessions.index"))
    if target.startswith(url_for("sessions.review", session_id=session_id)):
        target = url_for("sessions.index")  # the page of what was just deleted would be a 404
    if _is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, code=303)


# ---- import -------------------------------------------------------------------------------------


@bp.get("/import")
def import_form():
    return render_template("sessions/import.html", error=None)


@bp.post("/import")
def import_upload():
    try:
        plan = importing.parse_import(uploaded_bytes())
    except RequestError as exc:
        return render_template("sessions/import.html", error=exc.message), exc.status
    session = importing.import_document(plan, current_user)
    target = url_for("sessions.review", session_id=session.id, imported=1)
    if _is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, code=303)
