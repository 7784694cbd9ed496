"""Routes for what the agent receives: the plan as JSON, summarize, fresh context, edit or remove
a summary; the JSON API under /api/chat/sessions/{id}/… and the page's forms under /chat/{id}/….

The pages answer htmx with the chat area re-rendered (a summary's run then streams in it like a
reply), and a plain form post with a redirect to the session.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, make_response, redirect, render_template, request, url_for

from ..errors import json_body
from ..fleet import registry
from ..ownership import owned_session
from . import context_actions
from .context import plan_context, store_counts
from .service import ChatError
from .streaming import reply_started

bp = Blueprint("context", __name__)


def _model_of(session, model_id: str | None):
    agent = registry().get(session.agent_id)
    if agent is None:
        raise ChatError(409, f"Agent {session.agent_id} is no longer in the registry.")
    if model_id:
        model = agent.model(model_id)
        if model is None:
            raise ChatError(422, f"Agent {agent.agent_id} does not serve model {model_id!r}.")
        return model
    return agent.model(session.model_id) or agent.models[0]


# ---- JSON API -------------------------------------------------------------------------------------


@bp.get("/api/chat/sessions/<session_id>/context")
def context_json(session_id: str):
    """What the agent would receive with the next message (without it)."""
    session = owned_session(session_id)
    plan = plan_context(session.id, _model_of(session, request.args.get("model_id")))
    store_counts(plan)
    return jsonify(plan.to_dict())


@bp.post("/api/chat/sessions/<session_id>/summarize")
def summarize_json(session_id: str):
    session = owned_session(session_id)
    return reply_started(session.id, context_actions.start_summary(session))


@bp.post("/api/chat/sessions/<session_id>/context-reset")
def context_reset_json(session_id: str):
    session = owned_session(session_id)
    message_id = context_actions.reset_context(session)
    return jsonify(session_id=session.id, message_id=message_id), 201


@bp.put("/api/chat/sessions/<session_id>/messages/<message_id>")
def edit_message_json(session_id: str, message_id: str):
    session = owned_session(session_id)
    body = json_body()
    message = context_actions.edit_summary(session, message_id, body.get("content"))
    return jsonify(id=message.id, message_type=message.message_type, content=message.content)


@bp.delete("/api/chat/sessions/<session_id>/messages/<message_id>")
def remove_message_json(session_id: str, message_id: str):
    session = owned_session(session_id)
    context_actions.remove_context_message(session, message_id)
    return jsonify(id=message_id, deleted=True)


# ---- the page's forms -----------------------------------------------------------------------------


def _chat_area(session_id: str):
    from .pages import chat_context

    url = url_for("chat.session_page", session_id=session_id)
    if not request.headers.get("HX-Request"):
        return redirect(url, 303)
    session = owned_session(session_id)
    response = make_response(render_template("partials/chat_main.html", **chat_context(session), as_fragment=True))
    response.headers["HX-Push-Url"] = url
    return response


@bp.post("/chat/<session_id>/summarize")
def summarize_page(session_id: str):
    context_actions.start_summary(owned_session(session_id))
    return _chat_area(session_id)


@bp.post("/chat/<session_id>/context-reset")
def context_reset_page(session_id: str):
    context_actions.reset_context(owned_session(session_id))
    return _chat_area(session_id)


@bp.post("/chat/<session_id>/messages/<message_id>/edit-summary")
def edit_message_page(session_id: str, message_id: str):
    context_actions.edit_summary(owned_session(session_id), message_id, request.form.get("content"))
    return _chat_area(session_id)


@bp.post("/chat/<session_id>/messages/<message_id>/remove-context")
def remove_message_page(session_id: str, message_id: str):
    context_actions.remove_context_message(owned_session(session_id), message_id)
    return _chat_area(session_id)
