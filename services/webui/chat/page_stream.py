"""The page's HTML event streams: one reply as it is written, and a session watched from a
second tab.

A reply is re-rendered whole (markdown → sanitized HTML) from the raw text the run has produced
so far, at most every RENDER_INTERVAL seconds and once more at `done`, and sent as one SSE
message without an `event:` field, so that htmx's hx-sse extension swaps it (as an out-of-band
morph of the message element). Because every message carries the whole reply, a replayed or
repeated message can never duplicate text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from flask import current_app, render_template
from sqlalchemy import select

from services.gateway.sse import format_comment, format_sse

from ..extensions import db
from ..models import FINAL_STATUSES, Message
from . import replay
from .display import UPDATE_STATUSES, Gauge, MessageView, used_tokens

# Re-render a streaming reply at most this often; the quiet tick renders what is left.
RENDER_INTERVAL = 0.15
STREAM_TICK = 0.15
WATCH_POLL_SECONDS = 1.0

@dataclass
class ReplyState:
    """The reply as the run's events build it: raw text, status, usage, error, last seq."""

    text: list[str] = field(default_factory=list)
    status: str = "pending"
    usage: dict | None = None
    error: str | None = None
    seq: int = 0
    done: bool = False

    def apply(self, event) -> None:
        self.seq = event.seq
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "token":
            self.text.append(str(data.get("text", "")))
            if self.status == "pending":
                self.status = "streaming"
        elif event.type == "status_update":
            if data.get("status") in UPDATE_STATUSES and self.status not in FINAL_STATUSES:
                self.status = data["status"]
        elif event.type == "usage":
            self.usage = data
        elif event.type == "done":
            final = data.get("status")
            self.status = final if final in FINAL_STATUSES else "error"
            self.error = data.get("error")
            self.done = True


def reply_stream(base: MessageView, message_id: str, after_seq: int, gauge_window: int):
    """SSE chunks for the page: the whole reply re-rendered, throttled; heartbeats as comments.

    `after_seq` is the client's Last-Event-ID: the text is always rebuilt from the first event,
    but nothing is sent until the state is newer than what the client already shows.
    """
    app = current_app._get_current_object()
    heartbeat = app.config["HEARTBEAT_SECONDS"]
    db.session.remove()  # no database connection is held by the long-lived part

    def render(state: ReplyState, final: bool) -> str:
        view = replace(
            base, content="".join(state.text), status=state.status, usage=state.usage,
            error=state.error,
        ).rendered()
        gauge = Gauge(used_tokens(state.usage), gauge_window) if state.usage else None
        html = render_template("partials/reply_update.html", m=view, final=final, gauge=gauge)
        return format_sse(html, id=str(state.seq))

    def chunks():
        yield format_comment("connected")
        state = ReplyState()
        connected = time.monotonic()
        last_render = connected  # first render once replay is over: after an interval or a quiet tick
        last_output = connected
        dirty = False
        for event in replay.subscribe(app, message_id, 0, STREAM_TICK):
            now = time.monotonic()
            if event is not None:
                state.apply(event)
                if state.done:
                    yield render(state, final=True)
                    return
                dirty = state.seq > after_seq
                if dirty and now - last_render >= RENDER_INTERVAL:
                    yield render(state, final=False)
                    last_render = last_output = now
                    dirty = False
            elif dirty:
                yield render(state, final=False)
                last_render = last_output = now
                dirty = False
            elif now - last_output >= heartbeat:
                yield format_comment("keep-alive")
                last_output = now
        # The run is gone without a `done` (its rows were deleted): show what the database has.
        with app.app_context():
            message = db.session.get(Message, message_id)
            if message is not None and not message.is_live:
                state.text, state.status, state.error = [message.content], message.status, message.error
                state.usage = message.usage
            db.session.remove()
        yield render(state, final=True)

    return chunks()


def latest_message_id(session_id: str) -> str | None:
    return db.session.scalar(
        select(Message.id).where(Message.session_id == session_id).order_by(Message.created_at.desc()).limit(1)
    )


def session_watch(session_id: str, known: str | None, render):
    """SSE chunks that re-send the conversation (`render()`) whenever a newer message appears.

    A cheap poll of the newest message id; the page morphs what it receives, so a re-send is
    harmless. Ends when the session is gone; heartbeats as comments.
    """
    app = current_app._get_current_object()
    heartbeat = app.config["HEARTBEAT_SECONDS"]
    db.session.remove()

    def chunks():
        nonlocal known
        yield format_comment("watching")
        last_output = time.monotonic()
        while True:
            time.sleep(min(WATCH_POLL_SECONDS, heartbeat))
            latest = latest_message_id(session_id)
            payload = render() if latest is not None and latest != known else None
            db.session.remove()  # nothing held across the yield
            if latest is None:
                return
            now = time.monotonic()
            if payload is not None:
                known = latest
                yield format_sse(payload, id=latest)
                last_output = now
            elif now - last_output >= heartbeat:
                yield format_comment("keep-alive")
                last_output = now

    return chunks()


def wait_until_final(message_id: str, timeout: float = 3.0) -> Message | None:
    """After a cancel: give the run a moment to record its end, so the page shows it at once."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        message = db.session.get(Message, message_id)
        if message is None or not message.is_live or time.monotonic() >= deadline:
            return message
        db.session.rollback()  # end the read transaction before sleeping
        time.sleep(0.05)
