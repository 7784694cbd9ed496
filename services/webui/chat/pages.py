"""The chat pages (HTML): a new chat, a session's page, sending, the reply stream, and stop.

Thin views over chat/service.py (the same rules as the JSON API) and chat/display.py (what the
templates show). One URL answers with the whole page, or with the fragment htmx asked for when
the request carries HX-Request.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from ..approvals import approvals_for
from ..errors import error_response
from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, Message, Run
from ..ownership import owned_session
from . import approvals, branch_view, display, page_stream, progress
from .service import ChatError, cancel_latest, send_message
from .streaming import last_event_id, latest_run_id, sse_response

bp = Blueprint("chat", __name__)


@bp.app_context_processor
def chat_helpers():
    # Functions, not values: the sidebar's query runs only when a template renders the sidebar.
    return {
        "recent_sessions": lambda: display.recent_sessions(current_user) if current_user.is_authenticated else [],
        "relative_time": display.relative_time,
        "model_label": display.model_label,
        "reply_steps": progress.step_views,
        "reply_progress": progress.progress_view,
    }


@bp.errorhandler(ChatError)
def chat_error(exc: ChatError):
    if request.headers.get("HX-Request"):
        # The composer shows it (its hx-status:4xx sends 4xx answers there).
        return render_template("partials/composer_error.html", message=exc.message), exc.status
    return error_response(exc.status, exc.message)


def wants_fragment() -> bool:
    """htmx asked for part of a page (not a history restore, which needs the whole page)."""
    return bool(
        request.headers.get("HX-Request")
        and not request.headers.get("HX-History-Restore-Request")
        and not request.headers.get("HX-Boosted")
    )


def chat_context(session=None, agent_id: str | None = None, model_id: str | None = None) -> dict:
    """Everything chat_main.html needs, for a new chat (session None) or a session's page."""
    groups = display.agent_groups()
    notice = None
    if session is not None:
        selected = display.find_option(groups, session.agent_id)
        if selected is None:
            notice = (
                f"Agent {session.agent_id} is no longer in the registry, so this chat cannot continue. "
                "Start a new chat with another agent."
            )
        elif not selected.is_up:
            notice = (
                f"{selected.agent.name} is not available: {selected.reason} "
                "Messages will fail until it is back; wait a moment or start a new chat with another agent."
            )
    else:
        selected = display.find_option(groups, agent_id)
        if selected is not None and not selected.is_up:
            notice = f"{selected.agent.name} is not available: {selected.reason} Pick another agent."
            selected = None
        if selected is None:
            selected = display.first_up(groups)
            if selected is not None and not selected.is_up:
                notice = "No agent is answering right now. Check that the agents are running, then reload."
    agent = selected.agent if selected else None
    model = None
    if agent is not None:
        wanted = model_id or (session.model_id if session is not None else None)
        model = (agent.model(wanted) if wanted else None) or agent.models[0]
    messages = display.session_messages(session) if session is not None else []
    plan = display.session_plan(session, model) if model else None
    live = next((m for m in reversed(messages) if m.role == "assistant" and m.is_live), None)
    return {
        "session": session,
        "groups": groups,
        "selected": selected,
        "agent": agent,
        "model": model,
        "messages": messages,
        "live": live,
        "gauge": display.plan_gauge(plan) if plan else None,
        "plan": plan if session is not None else None,
        "cost": display.session_cost(session.id) if session is not None else None,
        "read_only": session is not None and (session.is_archived or selected is None),
        "notice": notice,
        "max_chars": current_app.config["MAX_MESSAGE_CHARS"],
        "current_session_id": session.id if session is not None else None,
    }


def render_chat(context: dict):
    if wants_fragment():
        response = make_response(render_template("partials/chat_main.html", **context, as_fragment=True))
    else:
        response = make_response(render_template("chat.html", **context))
    response.headers["Vary"] = "HX-Request"
    return response


@bp.get("/")
def home():
    """A new chat; ?agent_id= (and ?model_id=) preselect."""
    return render_chat(chat_context(agent_id=request.args.get("agent_id"), model_id=request.args.get("model_id")))


@bp.get("/chat/<session_id>")
def session_page(session_id: str):
    return render_chat(chat_context(owned_session(session_id)))


@bp.post("/chat/send")
def send():
    form = request.form
    existing = form.get("session_id") or None
    sent = send_message(
        current_user,
        agent_id=form.get("agent_id"),
        model_id=form.get("model_id"),
        content=form.get("content"),
        session_id=existing,
        attachment_ids=form.getlist("attachment_ids"),
    )
    session_url = url_for(".session_page", session_id=sent.session_id)
    if not request.headers.get("HX-Request"):
        return redirect(session_url, 303)
    if existing is None:
        # A new session: the whole chat area becomes the session's page, at the session's URL.
        response = make_response(
            render_template("partials/chat_main.html", **chat_context(sent.session), as_fragment=True)
        )
        response.headers["HX-Push-Url"] = session_url
        return response
    agent = registry().get(sent.session.agent_id)
    model = agent.model(sent.session.model_id) if agent else None
    plan = display.session_plan(sent.session, model) if model else None
    place = branch_view.placer(sent.session)
    return render_template(
        "partials/sent.html",
        plan=plan,
        gauge=display.plan_gauge(plan) if plan else None,
        session=sent.session,
        user_message=display.message_view(
            sent.user_message, sent.session.agent_name, model, place=place(sent.user_message_id)
        ),
        reply=display.message_view(sent.reply, sent.session.agent_name, model),
    )


@bp.get("/chat/<session_id>/stream")
def stream(session_id: str):
    """The page's stream of one reply (default: the session's latest): HTML, for hx-sse."""
    session = owned_session(session_id)
    message_id = request.args.get("message_id") or latest_run_id(session.id)
    run = db.session.get(Run, message_id) if message_id else None
    message = db.session.get(Message, message_id) if run is not None else None
    if run is None or message is None or run.session_id != session.id:
        abort(404, "There is no such reply in this session.")
    agent = registry().get(session.agent_id)
    model = agent.model(run.model_id) if agent else None
    base = display.MessageView(
        id=message.id,
        role="assistant",
        content="",
        status="pending",
        agent_name=session.agent_name,
        message_type=message.message_type,
        session_id=session.id,
        created_at=message.created_at,
        model=model,
        model_id=message.model_id or run.model_id,
        place=branch_view.placer(session)(message.id, run.model_id),  # the final render's action row
    )
    return sse_response(
        page_stream.reply_stream(base, message.id, last_event_id(), context_after(session.id, model), session.id)
    )


def context_after(session_id: str, model):
    """For the end of a reply stream: the gauge and the plan as they are then (own app context,
    nothing held across the stream's yields)."""
    app = current_app._get_current_object()

    def context_of() -> dict:
        if model is None:
            return {}
        with app.app_context():
            try:
                plan = display.session_plan(db.session.get(ConversationSession, session_id), model)
                return {"gauge": display.plan_gauge(plan), "plan": plan}
            finally:
                db.session.remove()

    return context_of


@bp.get("/chat/<session_id>/watch")
def watch(session_id: str):
    """The page's watch of a session: re-sends the conversation when a reply starts elsewhere."""
    session = owned_session(session_id)
    sid = session.id
    known = request.headers.get("Last-Event-ID") or request.args.get("after") or page_stream.latest_message_id(sid)

    def render() -> str:
        current = db.session.get(ConversationSession, sid)
        messages = display.session_messages(current)
        live = next((m for m in reversed(messages) if m.role == "assistant" and m.is_live), None)
        agent = registry().get(current.agent_id)
        model = (agent.model(current.model_id) or agent.models[0]) if agent else None
        plan = display.session_plan(current, model) if model else None
        return render_template("partials/watch_update.html", session=current, messages=messages, live=live, plan=plan)

    return sse_response(page_stream.session_watch(sid, known, render))


@bp.post("/chat/<session_id>/stop")
def stop(session_id: str):
    session = owned_session(session_id)
    _, body = cancel_latest(session)
    session_id, agent_id, agent_name = session.id, session.agent_id, session.agent_name
    message = page_stream.wait_until_final(body["message_id"])
    if not request.headers.get("HX-Request"):
        return redirect(url_for(".session_page", session_id=session_id), 303)
    agent = registry().get(agent_id)
    run = db.session.get(Run, body["message_id"])
    model = agent.model(run.model_id) if agent and run else None
    asked = approvals_for([message.id]).get(message.id, ()) if message is not None else ()
    place = branch_view.placer(session)(message.id, run.model_id if run else None) if message is not None else None
    view = display.message_view(message, agent_name, model, asked, place=place) if message is not None else None
    gauge = plan = None
    if model is not None:
        plan = display.session_plan(db.session.get(ConversationSession, session_id), model)
        gauge = display.plan_gauge(plan)
    return render_template(
        "partials/stopped.html",
        m=view,
        session_id=session_id,
        gauge=gauge,
        plan=plan,
        cost=display.session_cost(session_id),
    )


@bp.post("/chat/<session_id>/approvals/<approval_id>")
def answer_approval(session_id: str, approval_id: str):
    """Approve or Reject from the reply's card: answers with the card as it now stands."""
    session = owned_session(session_id)
    form = request.form
    result = approvals.answer(session, approval_id, form.get("decision"), form.get("comment"), current_user)
    if not request.headers.get("HX-Request"):
        return redirect(url_for(".session_page", session_id=session.id), 303)
    return render_template(
        "partials/approval_answered.html", approval=result.view, problem=result.problem, session=session
    )


@bp.get("/chat/models")
def models():
    """The model picker for the chosen agent (a new chat's agent picker asks for it)."""
    agent_id = request.args.get("agent_id")
    if not wants_fragment():
        return redirect(url_for(".home", agent_id=agent_id))
    context = chat_context(agent_id=agent_id)
    response = make_response(render_template("partials/models_changed.html", **context))
    if context["agent"] is not None:
        response.headers["HX-Replace-Url"] = url_for(".home", agent_id=context["agent"].agent_id)
    return response


@bp.get("/chat/gauge")
def gauge():
    """The context gauge and the "no longer sees" marker against the chosen model (the model
    picker asks for it)."""
    session_id = request.args.get("session_id")
    session = owned_session(session_id) if session_id else None
    agent = registry().get(session.agent_id if session else request.args.get("agent_id") or "")
    if agent is None:
        abort(404, "There is no such agent.")
    model = agent.model(request.args.get("model_id") or "") or agent.models[0]
    plan = display.session_plan(session, model)
    # Another window moves the cut too: the marker follows the gauge (out of band).
    return render_template(
        "partials/gauge_changed.html", gauge=display.plan_gauge(plan), plan=plan if session else None
    )


from . import branch_pages  # noqa: E402, F401  (conversation control's forms, on this blueprint)
