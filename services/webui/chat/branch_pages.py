"""The page's forms for conversation control (chat/branching.py): one route per message action.

Without htmx each answers with a redirect to the session (or the new chat); with htmx the
conversation is re-rendered as its current path (partials/branch_update.html), and a branch
sends the browser to the new chat (HX-Redirect).
"""

from __future__ import annotations

from flask import abort, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from ..ownership import owned_session
from . import branching, display, page_stream
from .pages import bp

ACTIONS = ("regenerate", "retry", "continue", "edit", "switch", "branch")


@bp.post("/chat/<session_id>/messages/<message_id>/<action>")
def message_action(session_id: str, message_id: str, action: str):
    if action not in ACTIONS:
        abort(404, "There is no such action.")
    session = owned_session(session_id)
    form = request.form
    if action == "branch":
        new = branching.branch(
            session, message_id, current_user, form.get("agent_id") or None, form.get("model_id") or None
        )
        url = url_for("chat.session_page", session_id=new.id)
        if not request.headers.get("HX-Request"):
            return redirect(url, 303)
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url
        return response
    if action == "regenerate":
        branching.regenerate(session, message_id, form.get("model_id") or None)
    elif action == "retry":
        branching.retry(session, message_id)
    elif action == "continue":
        branching.continue_reply(session, message_id)
    elif action == "edit":
        branching.edit(session, message_id, form.get("content"))
    else:
        branching.switch(session, message_id)
    if not request.headers.get("HX-Request"):
        return redirect(url_for("chat.session_page", session_id=session.id), 303)
    messages = display.session_messages(session)
    live = next((m for m in reversed(messages) if m.role == "assistant" and m.is_live), None)
    return render_template(
        "partials/branch_update.html",
        session=session,
        messages=messages,
        live=live,
        watch_after=page_stream.latest_message_id(session.id) or "",
    )
