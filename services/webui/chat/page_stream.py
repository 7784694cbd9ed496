"""The page's HTML event streams: one reply as it is written, and a session watched from a
second tab.

A reply is rendered incrementally. In markdown only the last top-level block can still change,
so each finished block is rendered once and appended (`hx-swap-oob="beforeend"`), and only the
open tail block is re-rendered and swapped in place, at most every RENDER_INTERVAL (a code block
still open is shown unhighlighted; it is highlighted once finished). Bytes and markdown CPU are
linear in the reply's length. The first message after a (re)connect is the whole reply (so a
reconnect never duplicates or loses text), and the last one, at `done`, is the reply rendered
whole, exactly as a reload shows it (reusing the blocks already rendered where a parse of the
whole text confirms them: `streamed` in markdown.render_markdown). Messages carry no `event:`
field, so htmx's hx-sse extension swaps them (their parts out of band).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from flask import current_app, render_template
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from services.gateway.sse import format_comment, format_sse

from ..approvals import ApprovalView, approvals_for
from ..extensions import db
from ..markdown import GrowingText, RenderedBlocks
from ..models import Message
from ..rendering import render_message
from ..runs import run_manager
from ..runs.events import ReplyState
from .display import MessageView, session_cost
from .progress import TimelineSent

log = logging.getLogger("switchboard.chat")

# Re-render a streaming reply's tail at most this often; a pending render is due after it.
RENDER_INTERVAL = 0.15
WATCH_POLL_SECONDS = 1.0
# A tail block longer than this is re-sent only once it has grown by TAIL_GROWTH: a long code
# block re-sent whole every interval would make the stream quadratic again.
LONG_TAIL_CHARS = 2000
TAIL_GROWTH = 1.10
# The finished blocks' HTML kept per page stream for the final render, at most.
STREAMED_MAX_CHARS = 2_000_000


@dataclass
class IncrementalReply:
    """What the page holds of a streaming reply: `committed` characters sent as finished blocks.

    The blocks' HTML is kept too (`streamed`), for the final render to reuse: without it, every
    reply's end rendered the whole reply again, highlighting included, on the worker's only thread.
    """

    budget_seconds: float
    max_chars: int
    committed: int = 0
    tail_sent: int = 0  # length of the tail text the page shows
    status_sent: str = ""
    approvals_sent: int = 0  # ReplyState.approvals_version the page shows
    timeline: TimelineSent = field(default_factory=TimelineSent)
    streamed: list[RenderedBlocks] | None = field(default_factory=list)  # None: no longer kept
    streamed_chars: int = 0

    def split(self, text: str) -> tuple[GrowingText, Markup]:
        """The text not yet committed, parsed once, and the HTML of the blocks it finishes, which
        count as sent from now."""
        rest = GrowingText(text[self.committed :], self.budget_seconds, self.max_chars)
        blocks = rest.finished_blocks(self.committed)
        self.committed += rest.finished
        if blocks is None:
            return rest, Markup("")
        if self.streamed is not None:
            self.streamed_chars += len(blocks.html) + len(blocks.text)
            if self.streamed_chars <= STREAMED_MAX_CHARS:
                self.streamed.append(blocks)
            else:  # bounded: past it, the final render starts from scratch
                self.streamed = None
        return rest, blocks.html

    def tail_due(self, tail_chars: int) -> bool:
        if tail_chars <= LONG_TAIL_CHARS:
            return tail_chars != self.tail_sent or not tail_chars
        return tail_chars >= self.tail_sent * TAIL_GROWTH


def reply_stream(base: MessageView, message_id: str, after_seq: int, context_of, session_id: str | None = None):
    """SSE chunks for the page: the whole reply once, then deltas, then the final render.

    `context_of()` gives the gauge and the plan (chat/context.py) for the final render, which
    refreshes the gauge and the "no longer sees" marker.

    `after_seq` is the client's Last-Event-ID: the reply is rebuilt from the first event, and
    nothing is sent until the state is newer than what the client already shows. With
    `session_id`, the final render also carries the session's running cost.
    """
    app = current_app._get_current_object()
    heartbeat = app.config["HEARTBEAT_SECONDS"]
    budget_seconds, max_chars = app.config["MARKDOWN_BUDGET_MS"] / 1000, app.config["MARKDOWN_MAX_CHARS"]
    manager = run_manager(app)
    db.session.remove()  # no database connection is held by the long-lived part

    def view_of(state: ReplyState, html, asked=None) -> MessageView:
        if asked is None:
            asked = tuple(ApprovalView.from_event(message_id, data) for data in state.approvals.values())
        return replace(
            base,
            content=state.text,
            status=state.status,
            usage=state.usage,
            error=state.error,
            html=html,
            approvals=asked,
            steps=state.steps,
            last_output_at=state.last_output_at,
        )

    def whole(state: ReplyState, page: IncrementalReply) -> str:
        """The reply as blocks + tail (live), replacing whatever the page shows."""
        page.committed, page.streamed, page.streamed_chars = 0, [], 0
        parsed, finished_html = page.split(state.text)
        page.tail_sent, page.status_sent = len(parsed.text) - parsed.finished, state.status
        page.approvals_sent = state.approvals_version
        view = view_of(state, finished_html)
        html = render_template(
            "partials/message.html",
            m=view,
            tail=parsed.tail_html(highlight=False),
            oob=True,
            session_id=session_id,
            **page.timeline.whole(state),
        )
        if state.approvals:
            html += render_template(
                "partials/composer_waiting.html",
                oob=True,
                waiting=view.open_approval is not None,
                waiting_agent=view.agent_name,
            )
        return format_sse(html, id=str(state.seq))

    def delta(state: ReplyState, page: IncrementalReply) -> str | None:
        parsed, finished_html = page.split(state.text)
        tail_chars = len(parsed.text) - parsed.finished
        send_tail = bool(parsed.finished) or page.tail_due(tail_chars)
        status_changed = state.status != page.status_sent
        approvals_changed = state.approvals_version != page.approvals_sent
        progress = page.timeline.delta(state, base.created_at)
        if not parsed.finished and not send_tail and not status_changed and not approvals_changed and not progress:
            return None
        if send_tail:
            page.tail_sent = tail_chars
        page.status_sent, page.approvals_sent = state.status, state.approvals_version
        html = render_template(
            "partials/reply_delta.html",
            m=view_of(state, None),
            blocks=finished_html or None,
            tail=parsed.tail_html(highlight=False) if send_tail else None,
            status_changed=status_changed,
            approvals_changed=approvals_changed,
            session_id=session_id,
            **progress,
        )
        return format_sse(html, id=str(state.seq))

    def final(state: ReplyState, page: IncrementalReply | None) -> str:
        # Approvals as stored: a decision whose agent never went on is not among the events.
        # A request is published right after it is stored, so a run whose events carry none
        # has none stored either: no query for it.
        asked = ()
        if state.approvals:
            with app.app_context():
                asked = approvals_for([message_id]).get(message_id, ())
                db.session.remove()
        streamed = page.streamed if page is not None else None
        view = view_of(state, render_message(message_id, state.text, streamed=streamed), asked)
        cost = None
        if session_id is not None:
            # The other replies as stored, plus this one as its events say (its end may not be
            # stored yet): one indexed SUM, and the connection is given back at once. The reply's
            # end matters more than its price: a database that cannot answer leaves the total as is.
            try:
                cost = session_cost(session_id, without=message_id).plus(state.usage)
            except SQLAlchemyError:
                log.warning("the running cost of session %s could not be read", session_id)
            finally:
                db.session.remove()
        html = render_template("partials/reply_final.html", m=view, cost=cost, session_id=session_id, **context_of())
        return format_sse(html, id=str(state.seq))

    def chunks():
        yield format_comment("connected")
        state = ReplyState()
        page: IncrementalReply | None = None  # None until the whole reply has been sent once
        last_output = time.monotonic()
        # The first render goes out as soon as there is something to show (it is the reply's
        # first words on the page: holding it for an interval cost every reply 150 ms there);
        # later ones at most every RENDER_INTERVAL.
        last_render = float("-inf")
        dirty = False

        def wait() -> float:
            """Until the pending render is due, else until the next heartbeat."""
            since = time.monotonic() - (last_render if dirty else last_output)
            return max((RENDER_INTERVAL if dirty else heartbeat) - since, 0.001)

        for batch in manager.subscribe_batches(message_id, 0, wait):
            now = time.monotonic()
            if batch is not None:
                for event in batch:
                    state.apply(event)
                if state.done:
                    yield final(state, page)
                    return
                dirty = dirty or state.seq > after_seq
                if not dirty:
                    continue
                if now - last_render < RENDER_INTERVAL:
                    # Let the events gather until the render is due: one wake-up per render
                    # instead of one per token (with 500 streams, most of the worker's time).
                    time.sleep(RENDER_INTERVAL - (now - last_render))
                    continue
            elif not dirty:
                if now - last_output >= heartbeat:
                    yield format_comment("keep-alive")
                    last_output = now
                continue
            if page is None:
                page = IncrementalReply(budget_seconds, max_chars)
                chunk = whole(state, page)
            else:
                chunk = delta(state, page)
            dirty = False
            last_render = now
            if chunk is not None:
                yield chunk
                last_output = now
        # The run is gone without a `done` (its rows were deleted): show what the database has.
        with app.app_context():
            message = db.session.get(Message, message_id)
            if message is not None and not message.is_live:
                state.parts[:] = [message.content]
                state.status, state.error, state.usage = message.status, message.error, message.usage
                state.replace_steps(message.steps)
            db.session.remove()
        yield final(state, None)

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
