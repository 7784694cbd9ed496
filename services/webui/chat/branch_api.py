"""The JSON API of conversation control: the current path, regenerate, retry, continue, edit,
switch siblings, branch into a new chat. Rules in chat/branching.py; routes on the chat API's
blueprint (chat/api.py imports this module)."""

from __future__ import annotations

from flask import jsonify, request, url_for
from flask_login import current_user

from ..errors import json_body
from ..ownership import owned_session
from . import branching
from .api import bp
from .streaming import reply_started

PREFIX = "/chat/sessions/<session_id>/messages/<message_id>"


def _optional_body() -> dict:
    """The JSON body of an action whose fields are all optional: none at all is fine."""
    return json_body() if request.content_length else {}


def accepted(started: branching.Started):
    return reply_started(started.session_id, started.reply_id, user_message_id=started.user_message_id)


@bp.get("/chat/sessions/<session_id>/path")
def current_path(session_id: str):
    return jsonify(branching.path_summary(owned_session(session_id, admin_may_read=True)))


@bp.post(PREFIX + "/regenerate")
def regenerate(session_id: str, message_id: str):
    session = owned_session(session_id)  # ownership before anything about the body
    return accepted(branching.regenerate(session, message_id, _optional_body().get("model_id")))


@bp.post(PREFIX + "/retry")
def retry(session_id: str, message_id: str):
    return accepted(branching.retry(owned_session(session_id), message_id))


@bp.post(PREFIX + "/continue")
def continue_reply(session_id: str, message_id: str):
    return accepted(branching.continue_reply(owned_session(session_id), message_id))


@bp.post(PREFIX + "/edit")
def edit(session_id: str, message_id: str):
    session = owned_session(session_id)
    body = json_body()
    return accepted(branching.edit(session, message_id, body.get("content"), body.get("model_id")))


@bp.post(PREFIX + "/switch")
def switch(session_id: str, message_id: str):
    session = owned_session(session_id)
    branching.switch(session, message_id)
    return jsonify(branching.path_summary(session))


@bp.post(PREFIX + "/branch")
def branch(session_id: str, message_id: str):
    session = owned_session(session_id)
    body = _optional_body()
    from_agent = session.agent_id
    new = branching.branch(session, message_id, current_user, body.get("agent_id"), body.get("model_id"))
    response = jsonify(
        session_id=new.id,
        agent_id=new.agent_id,
        handoff=new.agent_id != from_agent,
        url=url_for("chat.session_page", session_id=new.id),
    )
    response.status_code = 201
    response.headers["Location"] = response.json["url"]
    return response
