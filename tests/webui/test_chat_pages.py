"""The chat pages with Flask's test client: routes, fragments, the page's reply stream, errors.

No agent listens in these tests (health is faked where a test needs agents up); streams are fed
from rows in the database or from an in-process run the test drives itself.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.gateway.health import HealthResult
from services.gateway.sse import SSEParser
from services.webui.extensions import db
from services.webui.fleet import registry
from services.webui.models import ConversationSession, Message, Run, User, new_id, utcnow
from services.webui.runs import run_manager
from services.webui.runs.events import ReplyState, StreamEvent

HX = {"HX-Request": "true"}


@pytest.fixture
def agents_up(app, monkeypatch):
    """Fake health: agents in the returned set are up, the others down with the usual sentence."""
    up = {"architect", "dir-code"}
    checker = app.extensions["switchboard.health"]

    def check(agent):
        if agent.agent_id in up:
            return HealthResult("up", None, time.monotonic())
        return HealthResult(
            "down", f"Agent {agent.agent_id} is not answering on its port {agent.port}.", time.monotonic()
        )

    monkeypatch.setattr(checker, "check", check)
    return up


def make_session(
    app,
    username,
    *,
    agent_id="architect",
    title="Hello there",
    archived=False,
    turns=(("user", "hi", "complete"), ("assistant", "**bold** reply", "complete")),
    usage=None,
    updated_minutes_ago=0,
):
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        now = utcnow() - timedelta(minutes=updated_minutes_ago)
        session = ConversationSession(
            id=new_id(),
            user_id=user.id,
            agent_id=agent_id,
            agent_name=agent_id.title(),
            parent_role="",
            model_id="ref-standard",
            title=title,
            created_at=now,
            updated_at=now,
            archived_at=now if archived else None,
        )
        db.session.add(session)
        ids = []
        for index, (role, content, status) in enumerate(turns):
            message = Message(
                id=new_id(),
                session_id=session.id,
                role=role,
                agent_id=agent_id,
                content=content,
                status=status,
                created_at=now + timedelta(microseconds=index),
            )
            if role == "assistant" and usage:
                message.usage = usage
            db.session.add(message)
            ids.append(message.id)
        db.session.commit()
        return session.id, ids


def add_run(app, session_id, message_id, events, *, ended=True):
    """A run row for `message_id`; an ended run's reply is what its events [(type, data), ...] add up to."""
    state = ReplyState()
    for seq, (type_, data) in enumerate(events, start=1):
        state.apply(StreamEvent(seq, type_, data))
    with app.app_context():
        now = utcnow()
        db.session.add(
            Run(
                message_id=message_id,
                session_id=session_id,
                agent_id="architect",
                model_id="ref-standard",
                owner=run_manager(app).owner,
                beat_at=now,
                created_at=now,
                last_seq=len(events) if ended else 10_000,
                ended_at=now if ended else None,
            )
        )
        if ended and events:
            message = db.session.get(Message, message_id)
            message.content, message.status, message.usage = state.text, state.status, state.usage
        db.session.commit()


def sse_messages(response, limit=None, timeout=10.0):
    """Read an SSE response from the test client: [(id, data)], and the raw text."""
    parser = SSEParser()
    messages, raw = [], []
    deadline = time.monotonic() + timeout
    try:
        for chunk in response.response:
            chunk = chunk.encode() if isinstance(chunk, str) else chunk
            raw.append(chunk.decode())
            for message in parser.feed(chunk):
                messages.append(message)
            if limit is not None and len(messages) >= limit:
                break
            assert time.monotonic() < deadline, "stream took too long"
    finally:
        response.close()
    return messages, "".join(raw)


def text_of(html: str) -> str:
    body = re.search(
        r'<div class="turn-body md"[^>]*>(.*?)</div>\s*(?:<p class="turn-note|<footer|</article>)', html, re.S
    )
    return re.sub(r"<[^>]+>", "", body.group(1)) if body else ""


# ---- pages ----------------------------------------------------------------------------------------


def test_home_is_a_new_chat_with_the_agent_hierarchy_and_models(alice, agents_up):
    page = alice.get("/")
    assert page.status_code == 200
    html = page.text
    assert '<optgroup label="Architect’s team">' in html
    assert re.search(r'<option value="architect" selected>Architect · root</option>', html)
    assert re.search(r'<option value="dir-code">\s*(\xa0){3}↳ Dir-Code · reports to Architect</option>', html)
    # only the chosen agent's models, with context window and price
    models = re.findall(r'<option value="(ref-[a-z]+)"[^>]*>([^<]+)</option>', html)
    assert [m for m, _ in models] == ["ref-standard", "ref-fast"]
    assert "32k context · $1 in / $2 out per 1M" in models[0][1]
    assert 'id="composer-form"' in html and 'hx-target="#main"' in html
    assert 'id="context-meter"' in html and 'max="32768"' in html
    assert "hx-sse:connect" not in html  # nothing to stream on a new chat


def test_down_agents_are_disabled_with_the_reason(alice, agents_up):
    agents_up.discard("dir-code")
    html = alice.get("/").text
    option = re.search(r'<option value="dir-code"([^>]*)>([^<]*)</option>', html)
    assert "disabled" in option.group(1)
    assert "down: Agent dir-code is not answering on its port" in option.group(2)


def test_agent_id_preselects_and_a_down_choice_says_so(alice, agents_up):
    html = alice.get("/?agent_id=dir-code").text
    assert re.search(r'<option value="dir-code" selected>', html)
    agents_up.discard("dir-code")
    html = alice.get("/?agent_id=dir-code").text
    assert re.search(r'<option value="architect" selected>', html)
    assert "Dir-Code is not available: Agent dir-code is not answering" in html and "Pick another agent." in html


def test_no_agent_up_tells_what_to_do(alice):
    html = alice.get("/").text  # nothing listens on the test ports
    assert "No agent is answering right now. Check that the agents are running, then reload." in html


def test_model_picker_fragment_for_another_agent(app, alice, agents_up, agents_file):
    response = alice.get("/chat/models?agent_id=dir-code", headers=HX)
    assert response.status_code == 200
    assert response.headers["HX-Replace-Url"] == "/?agent_id=dir-code"
    html = response.text
    assert html.lstrip().startswith('<div class="picker model-picker" id="model-picker">')
    assert 'id="context-gauge" hx-swap-oob="true"' in html and 'id="agent-badges" hx-swap-oob="true"' in html
    assert "<html" not in html
    # without htmx it is simply the new chat for that agent
    assert alice.get("/chat/models?agent_id=dir-code").headers["Location"] == "/?agent_id=dir-code"


def test_gauge_fragment_follows_the_model(alice, agents_up):
    html = alice.get("/chat/gauge?agent_id=architect&model_id=ref-fast", headers=HX).text
    assert 'max="8192"' in html and "0</span> / 8,192 tokens" in html


def test_session_page_shows_the_conversation(app, alice, agents_up):
    sid, (user_id, reply_id) = make_session(
        app, "alice", usage={"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234, "cost_usd": 0.0042}
    )
    page = alice.get(f"/chat/{sid}")
    assert page.status_code == 200
    html = page.text
    assert f'id="msg-{user_id}"' in html and f'id="msg-{reply_id}"' in html
    assert "<strong>bold</strong> reply" in html
    assert re.search(r'class="turn-body md" hx-ignore aria-live="polite"', html)
    assert re.search(
        r'<span class="chip chip-complete" id="msg-[0-9a-f-]+-chip" data-status="complete">Complete</span>', html
    )
    assert "1,200 tokens in · 34 out · $0.0042" in html
    # The gauge counts what the next message would send (chat/context.py), here estimated.
    used = alice.get(f"/api/chat/sessions/{sid}/context").json["used"]
    assert used > 0 and f'value="{used}"' in html and f"~{used:,}</span> / 32,768 tokens" in html
    assert "(estimate)" in html and "8,192 kept for the reply" in html
    assert f'name="session_id" value="{sid}"' in html and 'hx-target="#messages"' in html
    assert 'hx-push-url="true"' in html  # another agent opens a new chat
    assert f"/chat/{sid}/watch" in html
    assert 'aria-current="page"' in html  # the sidebar marks this session


def test_session_page_is_a_fragment_for_htmx_and_a_page_otherwise(app, alice, agents_up):
    sid, _ = make_session(app, "alice")
    fragment = alice.get(f"/chat/{sid}", headers=HX)
    assert "<html" not in fragment.text and fragment.text.lstrip().startswith(
        "<title>Hello there · Switchboard</title>"
    )
    assert re.search(r'<nav [^>]*id="session-list"[^>]*hx-swap-oob="true"', fragment.text)
    restore = alice.get(f"/chat/{sid}", headers={**HX, "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text
    assert "HX-Request" in fragment.headers["Vary"]


def test_foreign_and_unknown_sessions_are_404(app, alice, bob):
    sid, _ = make_session(app, "bob")
    for url in (f"/chat/{sid}", f"/chat/{sid}/stream", f"/chat/{sid}/watch", "/chat/not-a-session"):
        response = alice.get(url)
        assert response.status_code == 404, url
        assert "Traceback" not in response.text
    assert alice.post(f"/chat/{sid}/stop", headers=HX).status_code == 404


def test_archived_session_is_read_only(app, alice, agents_up):
    sid, _ = make_session(app, "alice", archived=True)
    html = alice.get(f"/chat/{sid}").text
    assert "This chat is archived." in html and "Unarchive to continue." in html
    assert 'id="composer-form"' not in html


def test_sidebar_lists_recent_unarchived_sessions_of_the_user(app, alice, bob, agents_up):
    make_session(app, "alice", title="Older chat", updated_minutes_ago=90)
    make_session(app, "alice", title="Newest chat", agent_id="dir-code")
    make_session(app, "alice", title="Archived chat", archived=True)
    make_session(app, "bob", title="Bob's chat")
    html = alice.get("/").text
    sidebar = html[html.index('id="session-list"') :]
    assert sidebar.index("Newest chat") < sidebar.index("Older chat")
    assert "Archived chat" not in sidebar and "Bob's chat" not in sidebar
    assert "Dir-Code · <time" in sidebar and "1 h ago" in sidebar and "New chat" in sidebar


# ---- sending ---------------------------------------------------------------------------------------


@pytest.fixture
def runs_held(app, monkeypatch):
    """Runs that never start (no agent listens here), so a reply stays live while we look at it."""
    manager = run_manager(app)
    monkeypatch.setattr(manager, "launch", lambda live, history: None)
    yield
    for live in manager.live_runs():
        manager.abandon(live)


def test_sending_on_a_new_chat_creates_the_session_and_pushes_its_url(app, alice, agents_up, runs_held):
    response = alice.post(
        "/chat/send", data={"agent_id": "dir-code", "model_id": "ref-fast", "content": "Plan it"}, headers=HX
    )
    assert response.status_code == 200
    with app.app_context():
        session = db.session.scalar(select(ConversationSession))
        assert (session.agent_id, session.model_id, session.title) == ("dir-code", "ref-fast", "Plan it")
        reply = db.session.scalar(select(Message).where(Message.role == "assistant"))
    assert response.headers["HX-Push-Url"] == f"/chat/{session.id}"
    html = response.text
    assert f'hx-sse:connect="/chat/{session.id}/stream?message_id={reply.id}"' in html
    assert 'data-action="stop"' in html  # Stop beside Send
    assert re.search(r'<nav [^>]*id="session-list"[^>]*hx-swap-oob="true"', html) and "Plan it" in html


def test_sending_without_htmx_redirects_to_the_session(app, alice, agents_up):
    response = alice.post("/chat/send", data={"agent_id": "architect", "content": "Hi"})
    assert response.status_code == 303 and response.headers["Location"].startswith("/chat/")


def test_sending_in_a_session_appends_both_turns_and_the_stream(app, alice, agents_up, runs_held):
    sid, _ = make_session(app, "alice")
    response = alice.post(
        "/chat/send",
        data={"session_id": sid, "agent_id": "architect", "model_id": "ref-standard", "content": "Next"},
        headers=HX,
    )
    assert response.status_code == 200
    html = response.text
    assert html.count("<article ") == 2 and ">Next</div>" in html
    assert re.search(
        r'<span class="chip chip-pending" id="msg-[0-9a-f-]+-chip" data-status="pending">Waiting</span>', html
    )
    assert re.search(rf'hx-sse:connect="/chat/{sid}/stream\?message_id=[0-9a-f-]+"', html)
    assert 'id="composer-actions" hx-swap-oob="true"' in html and 'data-action="stop"' in html
    assert 'id="session-watch" class="session-watch" hidden hx-swap-oob="true"' in html


@pytest.mark.parametrize(
    "content, status, sentence",
    [
        ("", 422, "Write a message before sending."),
        ("   \n ", 422, "Write a message before sending."),
        ("x" * 40, 422, "The message is 40 characters long; the limit is 30."),
    ],
)
def test_bad_messages_get_a_sentence_for_the_composer(app, alice, agents_up, content, status, sentence):
    app.config["MAX_MESSAGE_CHARS"] = 30
    response = alice.post("/chat/send", data={"agent_id": "architect", "content": content}, headers=HX)
    assert response.status_code == status
    assert response.text.strip() == f'<p class="form-error">{sentence}</p>'


def test_another_agent_in_a_session_is_refused_with_a_sentence(app, alice, agents_up):
    sid, _ = make_session(app, "alice")
    response = alice.post("/chat/send", data={"session_id": sid, "agent_id": "dir-code", "content": "x"}, headers=HX)
    assert response.status_code == 409 and "start a new chat to talk to dir-code" in response.text


def test_lost_csrf_token_says_reload(app, alice, agents_up):
    response = alice.client.post("/chat/send", data={"agent_id": "architect", "content": "x"}, headers=HX)
    assert response.status_code == 400
    assert "Your form expired or lost its security token. Reload the page and try again." in response.text


def test_expired_login_redirects_htmx_to_the_login_page(app, alice):
    sid, _ = make_session(app, "alice")
    anonymous = app.test_client()
    for url in (f"/chat/{sid}", f"/chat/{sid}/stream", "/chat/models?agent_id=architect"):
        response = anonymous.get(url, headers=HX)
        assert response.status_code == 401 and response.headers["HX-Redirect"] == "/login"
        assert "Log in again" in response.text
    back = anonymous.get("/chat/models", headers={**HX, "HX-Current-URL": f"http://localhost/chat/{sid}?x=1"})
    assert back.headers["HX-Redirect"] == f"/login?next=/chat/{sid}?x%3D1"
    elsewhere = anonymous.get("/chat/models", headers={**HX, "HX-Current-URL": "https://evil.example//x"})
    assert elsewhere.headers["HX-Redirect"] == "/login"  # not a same-site path: no next at all
    assert anonymous.get("/").headers["Location"].startswith("/login")


def test_a_down_agent_on_a_session_page_says_what_to_do(app, alice, agents_up):
    sid, _ = make_session(app, "alice", agent_id="dir-code")
    agents_up.discard("dir-code")
    html = alice.get(f"/chat/{sid}").text
    assert "Dir-Code is not available: Agent dir-code is not answering on its port" in html
    assert "wait a moment or start a new chat with another agent" in html


def test_error_and_interrupted_replies_say_what_to_do(app, alice, agents_up):
    sid, _ = make_session(
        app,
        "alice",
        turns=(
            ("user", "a", "complete"),
            ("assistant", "partial", "interrupted"),
            ("user", "b", "complete"),
            ("assistant", "", "error"),
        ),
    )
    with app.app_context():
        db.session.execute(
            Message.__table__.update()
            .where(Message.status == "error")
            .values(error="Agent architect is not answering on its port 1.")
        )
        db.session.commit()
    html = alice.get(f"/chat/{sid}").text
    assert "The reply stream broke off. The text so far is kept; retry or continue it below." in html
    assert (
        "Agent architect is not answering on its port 1. Retry in a moment, or branch into a chat with another agent."
        in html
    )


# ---- the page's reply stream ----------------------------------------------------------------------


def test_stream_of_a_finished_reply_is_one_final_render(app, alice, agents_up):
    sid, (_, reply_id) = make_session(app, "alice", turns=(("user", "hi", "complete"), ("assistant", "", "complete")))
    add_run(
        app,
        sid,
        reply_id,
        [
            ("status_update", {"status": "planning"}),
            ("token", {"text": "Hello "}),
            ("token", {"text": "**world**"}),
            ("usage", {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost_usd": 0.001}),
            ("done", {"status": "complete", "message_id": reply_id}),
        ],
    )
    response = alice.get(f"/chat/{sid}/stream?message_id={reply_id}", headers=HX, buffered=False)
    assert response.mimetype == "text/event-stream" and response.headers["Cache-Control"] == "no-cache"
    messages, raw = sse_messages(response)
    assert "\nevent:" not in raw and not raw.startswith("event:")  # unnamed: hx-sse swaps them
    assert len(messages) == 1 and messages[0].id == "5"
    html = messages[0].data
    assert f'<article id="msg-{reply_id}"' in html and 'hx-swap-oob="outerMorph"' in html
    assert "Hello <strong>world</strong>" in html and "Complete" in html
    assert "10 tokens in · 2 out · $0.0010" in html
    assert f'<div id="stream-{reply_id}" hx-swap-oob="delete"></div>' in html
    assert 'id="composer-actions" hx-swap-oob="true"' in html and 'data-action="send"' in html
    assert 'id="context-gauge" hx-swap-oob="true"' in html


def test_stream_defaults_to_the_latest_reply_and_rejects_other_sessions(app, alice, agents_up):
    sid, (_, reply_id) = make_session(app, "alice")
    other, (_, other_reply) = make_session(app, "alice")
    add_run(app, sid, reply_id, [("token", {"text": "x"}), ("usage", {}), ("done", {"status": "complete"})])
    messages, _ = sse_messages(alice.get(f"/chat/{sid}/stream", buffered=False))
    assert f"msg-{reply_id}" in messages[-1].data
    assert alice.get(f"/chat/{other}/stream?message_id={reply_id}").status_code == 404
    assert alice.get(f"/chat/{other}/stream").status_code == 404  # nothing ran there


class FakeRun:
    """An in-process run the test feeds through the bus: tokens every `delay` s, then usage, done."""

    def __init__(self, app, session_id, message_id, words, delay=0.03):
        with app.app_context():
            agent = registry().get("architect")
        self.manager = run_manager(app)
        self.live = self.manager.prepare(agent, message_id, session_id, "ref-standard")
        add_run(app, session_id, message_id, [], ended=False)
        self.words, self.delay, self.seq = words, delay, 0
        self.thread = threading.Thread(target=self._feed, daemon=True)

    def _publish(self, type_, data):
        self.seq += 1
        self.manager.bus.publish(self.live.run_id, StreamEvent(self.seq, type_, data))

    def _feed(self):
        time.sleep(0.05)
        for word in self.words:
            self._publish("token", {"text": word})
            time.sleep(self.delay)
        self._publish(
            "usage", {"prompt_tokens": 5, "completion_tokens": len(self.words), "total_tokens": 5 + len(self.words)}
        )
        self._publish("done", {"status": "complete", "message_id": self.live.run_id})

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.thread.join(5)
        self.manager.abandon(self.live)


class PageReply:
    """What a browser shows of a streaming reply, applying the page stream's messages as htmx would."""

    def __init__(self, message_id):
        self.id, self.blocks, self.tail, self.appended = message_id, "", "", []

    def apply(self, html):
        whole = re.search(
            rf'<div class="md-blocks" id="msg-{self.id}-blocks">(.*?)</div><div class="md-tail" id="msg-{self.id}-tail">(.*?)</div></div>',
            html,
            re.S,
        )
        if whole:
            self.blocks, self.tail = whole.group(1), whole.group(2)
            return "whole"
        appended = re.search(rf'<div id="msg-{self.id}-blocks" hx-swap-oob="beforeend">(.*?)</div>', html, re.S)
        if appended:
            self.blocks += appended.group(1)
            self.appended.append(appended.group(1))
        tail = re.search(rf'<div id="msg-{self.id}-tail" hx-swap-oob="innerHTML">(.*?)</div>', html, re.S)
        if tail:
            self.tail = tail.group(1)
        return "delta"

    @property
    def text(self):
        return re.sub(r"<[^>]+>", "", self.blocks + self.tail)


def words_of(text):
    return text.split()


def test_live_stream_appends_finished_blocks_and_resumes_without_duplicating_text(app, alice, agents_up):
    sid, (_, reply_id) = make_session(app, "alice", turns=(("user", "hi", "complete"), ("assistant", "", "pending")))
    words = [f"w{i}" + ("\n\n" if i % 5 == 4 else " ") for i in range(40)]
    fake = FakeRun(app, sid, reply_id, words, delay=0.03).start()
    page = PageReply(reply_id)
    try:
        first, _ = sse_messages(alice.get(f"/chat/{sid}/stream?message_id={reply_id}", buffered=False), limit=4)
        kinds, shown = [], []
        for message in first:
            kinds.append(page.apply(message.data))
            shown.append(words_of(page.text))
        assert kinds == ["whole", "delta", "delta", "delta"]
        assert all(len(a) <= len(b) and b[: len(a)] == a for a, b in zip(shown, shown[1:]))  # only grows
        assert page.appended, "finished paragraphs are appended once, not re-sent"
        seen = int(first[-1].id)
        # The connection drops; the browser comes back with Last-Event-ID.
        rest, _ = sse_messages(
            alice.get(f"/chat/{sid}/stream?message_id={reply_id}", headers={"Last-Event-ID": str(seen)}, buffered=False)
        )
    finally:
        fake.close()
    assert all(int(m.id) > seen for m in rest)
    assert page.apply(rest[0].data) == "whole" or 'hx-swap-oob="delete"' in rest[0].data  # the reply once, whole
    expected = words_of("".join(words))
    for message in rest[1:-1]:
        page.apply(message.data)
        assert expected[: len(words_of(page.text))] == words_of(page.text)  # never a word twice
    final = rest[-1].data
    assert words_of(text_of(final)) == expected  # every word exactly once, as a reload renders it
    assert 'hx-swap-oob="delete"' in final and "Complete" in final and 'hx-swap-oob="outerMorph"' in final
    # 40 tokens over ~1.2 s: a handful of updates, not one per token
    assert len(first) + len(rest) <= 16


def test_heartbeats_are_comments(app, alice, agents_up):
    sid, (_, reply_id) = make_session(app, "alice", turns=(("user", "hi", "complete"), ("assistant", "", "pending")))
    fake = FakeRun(app, sid, reply_id, ["a "], delay=0.0)
    fake.thread = threading.Thread(target=lambda: (time.sleep(1.4), fake._feed()), daemon=True)
    fake.start()
    try:
        _, raw = sse_messages(alice.get(f"/chat/{sid}/stream?message_id={reply_id}", buffered=False))
    finally:
        fake.close()
    assert ": keep-alive" in raw  # HEARTBEAT_SECONDS is 0.5 in tests


def test_watch_resends_the_conversation_when_a_reply_starts_elsewhere(app, alice, agents_up):
    sid, (first_id, _) = make_session(
        app, "alice", turns=(("user", "hi", "complete"), ("assistant", "live", "streaming"))
    )
    messages, _ = sse_messages(alice.get(f"/chat/{sid}/watch?after={first_id}", buffered=False), limit=1)
    html = messages[0].data
    assert html.lstrip().startswith(
        '<section id="messages" class="messages" aria-label="Conversation" hx-swap-oob="outerMorph">'
    )
    assert html.count("<article ") == 2 and "hx-sse:connect" in html
    assert 'id="composer-actions" hx-swap-oob="true"' in html and 'data-action="stop"' in html


# ---- stop -----------------------------------------------------------------------------------------


def test_stop_with_nothing_running_says_so(app, alice, agents_up):
    sid, _ = make_session(app, "alice", turns=(("user", "hi", "complete"),))
    response = alice.post(f"/chat/{sid}/stop", headers=HX)
    assert response.status_code == 409 and "Nothing has run in this session yet." in response.text


def test_stop_of_a_finished_reply_gives_send_back_and_the_final_state(app, alice, agents_up):
    sid, (_, reply_id) = make_session(app, "alice")
    add_run(app, sid, reply_id, [("token", {"text": "x"}), ("usage", {}), ("done", {"status": "complete"})])
    response = alice.post(f"/chat/{sid}/stop", headers=HX)
    assert response.status_code == 200
    html = response.text
    assert html.lstrip().startswith('<div class="composer-actions" id="composer-actions">')
    assert 'data-action="send"' in html and f'id="msg-{reply_id}"' in html
    assert f'<div id="stream-{reply_id}" hx-swap-oob="delete"></div>' in html
    assert alice.post(f"/chat/{sid}/stop").status_code == 303  # without htmx: back to the page


def test_htmx_and_its_sse_extension_load_before_the_page_is_processed(alice):
    # Deferred, htmx may initialize before hx-sse registers, and a reloaded page's live reply
    # would never connect to its stream.
    html = alice.get("/").text
    for name in ("htmx.min.js", "hx-sse.min.js"):
        tag = re.search(rf'<script src="[^"]*{re.escape(name)}"[^>]*>', html).group(0)
        assert "defer" not in tag and "async" not in tag
    assert html.index("htmx.min.js") < html.index("hx-sse.min.js")


def test_gauge_colour_thresholds_and_status_chips():
    from services.webui.chat.display import Gauge, MessageView

    assert [Gauge(used, 1000).level for used in (0, 599, 600, 849, 850, 5000)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "full",
        "full",
    ]
    assert Gauge(5000, 1000).percent == 100 and Gauge(123, 1000).percent == 12
    state = ReplyState()
    labels = []
    for seq, (type_, data) in enumerate(
        [
            ("status_update", {"status": "planning"}),
            ("status_update", {"status": "executing"}),
            ("status_update", {"status": "awaiting_approval"}),
            ("token", {"text": "x"}),
            ("done", {"status": "complete"}),
        ],
        start=1,
    ):
        state.apply(StreamEvent(seq, type_, data))
        labels.append(MessageView(id="m", role="assistant", content="", status=state.status).status_label)
    assert labels == ["Planning", "Executing", "Awaiting approval", "Awaiting approval", "Complete"]
    assert [
        MessageView(id="m", role="assistant", content="", status=s).status_label
        for s in ("cancelled", "error", "interrupted", "pending", "streaming")
    ] == ["Cancelled", "Error", "Interrupted", "Waiting", "Writing"]
