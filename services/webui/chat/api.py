"""The chat JSON API: agents and models, sending a message, the reply stream, and stop."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask_login import current_user

from ..errors import json_body
from ..fleet import health, registry
from ..ownership import owned_session
from . import approvals
from .service import ChatError, cancel_latest, send_message
from .streaming import json_event_stream, last_event_id, latest_run_id, reply_started

bp = Blueprint("chat_api", __name__, url_prefix="/api")


def agent_summary(agent, checker) -> dict:
    status = checker.status(agent)
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "parent_role": agent.parent_role,
        "protocol": agent.protocol,
        "models": [model.model_id for model in agent.models],
        "status": status,
        "reason": None if status == "up" else checker.reason(agent),
    }


def model_summary(agent, model) -> dict:
    return {
        "agent_id": agent.agent_id,
        "model_id": model.model_id,
        "name": model.name,
        "context_window": model.context_window,
        "cost_per_1m_input": model.cost_per_1m_input,
        "cost_per_1m_output": model.cost_per_1m_output,
        "vision": model.vision,
    }


@bp.get("/agents")
def list_agents():
    checker = health()
    return jsonify(agents=[agent_summary(agent, checker) for agent in registry().agents])


@bp.get("/models")
def list_models():
    agent_id = request.args.get("agent_id")
    fleet = registry()
    if agent_id:
        agent = fleet.get(agent_id)
        if agent is None:
            raise ChatError(404, f"There is no agent {agent_id!r}.")
        agents = [agent]
    else:
        agents = fleet.agents
    return jsonify(models=[model_summary(agent, model) for agent in agents for model in agent.models])


@bp.get("/me")
def me():
    from flask_wtf.csrf import generate_csrf

    return jsonify(username=current_user.username, role=current_user.role, csrf_token=generate_csrf())


@bp.post("/chat/message")
def post_message():
    body = json_body()
    # Streaming straight from the POST saves a round trip; the 202 path is the default.
    streams = request.accept_mimetypes.best == "text/event-stream"
    sent = send_message(
        current_user,
        agent_id=body.get("agent_id"),
        model_id=body.get("model_id"),
        content=body.get("content"),
        session_id=body.get("session_id"),
        attachment_ids=body.get("attachment_ids"),
        # A client that retries a send (a timeout, a dropped connection) gets the first answer.
        idempotency_key=request.headers.get("Idempotency-Key") or body.get("idempotency_key"),
        launch_later=streams,
    )
    if streams:
        response = json_event_stream(sent.reply_id, 0, launch=sent.launch)
        response.headers.update({"X-Session-Id": sent.session_id, "X-Message-Id": sent.reply_id})
    else:
        response = reply_started(sent.session_id, sent.reply_id, user_message_id=sent.user_message_id)
    if sent.repeated:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/chat/stream/<session_id>")
def stream(session_id: str):
    session = owned_session(session_id, admin_may_read=True)
    return json_event_stream(latest_run_id(session.id), last_event_id())


@bp.post("/chat/sessions/<session_id>/cancel")
def cancel(session_id: str):
    session = owned_session(session_id)
    status, body = cancel_latest(session)
    return jsonify(body), status


@bp.post("/chat/sessions/<session_id>/approvals/<approval_id>")
def answer_approval(session_id: str, approval_id: str):
    """The owner's decision on the agent's approval request: once only, while the reply is live."""
    session = owned_session(session_id)
    body = json_body()
    result = approvals.answer(session, approval_id, body.get("decision"), body.get("comment"), current_user)
    view = result.view
    return jsonify(
        message_id=view.message_id,
        approval_id=view.approval_id,
        decision=view.decision,
        comment=view.comment,
        decided_by=view.decider,
        decided_at=view.decided_at.isoformat(timespec="seconds") + "Z",
        delivered=result.delivered,
        message=result.problem,
    )


from . import branch_api  # noqa: E402, F401  (conversation control's routes, on this blueprint)
