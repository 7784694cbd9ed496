"""Attention: the sidebar's marks (running, waiting, ended unseen), seen_at, and the routes behind them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from services.webui.chat.attention import _marks_select, mark_state
from services.webui.extensions import db
from services.webui.models import ConversationSession, Message, User, new_id, utcnow

HX = {"HX-Request": "true"}


def add_session(app, username, *, status="complete", title="A chat", ended_ago=None, seen_ago=None, minutes_ago=0):
    """A session whose latest reply has `status`; it ended `ended_ago` and was seen `seen_ago` (timedeltas)."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        now = utcnow()
        at = now - timedelta(minutes=minutes_ago)
        session = ConversationSession(
            id=new_id(),
            user_id=user.id,
            agent_id="architect",
            agent_name="Architect",
            model_id="ref-standard",
            title=title,
            created_at=at,
            updated_at=at,
            seen_at=None if seen_ago is None else now - seen_ago,
        )
        db.session.add(session)
        for offset, (role, state) in enumerate((("user", "complete"), ("assistant", "complete"), ("user", "complete"))):
            db.session.add(
                Message(
                    session_id=session.id,
                    role=role,
                    content="earlier",
                    status=state,
                    created_at=at - timedelta(minutes=5) + timedelta(microseconds=offset),
                    completed_at=at - timedelta(minutes=5),
                )
            )
        reply = Message(
            id=new_id(),
            session_id=session.id,
            role="assistant",
            content="latest",
            status=status,
            created_at=at - timedelta(minutes=1),
            completed_at=None if ended_ago is None else now - ended_ago,
        )
        db.session.add(reply)
        db.session.commit()
        return session.id, reply.id


def seen_at(app, session_id):
    with app.app_context():
        return db.session.get(ConversationSession, session_id).seen_at


@pytest.fixture
def admin(make_user):
    return make_user("root", role="admin")


# ---- the rule --------------------------------------------------------------------------------------


def test_mark_state_rules():
    now = utcnow()
    earlier, later = now - timedelta(minutes=1), now + timedelta(minutes=1)
    for status in ("pending", "streaming", "planning", "executing"):
        assert mark_state(status, None, now) == "running"
    assert mark_state("awaiting_approval", None, now) == "waiting"
    for status in ("complete", "cancelled", "error", "interrupted"):
        assert mark_state(status, later, now) == "unseen"  # ended after the owner looked
        assert mark_state(status, earlier, now) is None  # ended before
        assert mark_state(status, later, None) is None  # never recorded: counts as seen
    assert mark_state(None, None, now) is None  # no reply yet


# ---- GET /api/chat/attention -----------------------------------------------------------------------


def test_attention_lists_running_waiting_and_unseen_chats_of_the_caller_only(app, alice, bob):
    running, running_reply = add_session(app, "alice", status="streaming", title="Running one", seen_ago=timedelta(0))
    waiting, _ = add_session(app, "alice", status="awaiting_approval", title="Waiting one", seen_ago=timedelta(0))
    unseen, unseen_reply = add_session(
        app, "alice", title="Ended unseen", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2)
    )
    add_session(app, "alice", title="Ended seen", ended_ago=timedelta(minutes=2), seen_ago=timedelta(minutes=1))
    add_session(app, "alice", title="From before", ended_ago=timedelta(minutes=2))  # seen_at NULL
    foreign, _ = add_session(app, "bob", title="Bob's", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2))

    body = alice.get("/api/chat/attention").json
    by_id = {s["id"]: s for s in body["sessions"]}
    assert set(by_id) == {running, waiting, unseen}
    assert by_id[running] == {
        "id": running,
        "title": "Running one",
        "state": "running",
        "label": "Running",
        "reply_id": running_reply,
        "url": f"/chat/{running}",
    }
    assert by_id[waiting]["state"] == "waiting" and by_id[waiting]["label"] == "Needs approval"
    assert by_id[unseen]["state"] == "unseen" and by_id[unseen]["reply_id"] == unseen_reply
    assert (body["running"], body["waiting"], body["unseen"], body["attention"]) == (1, 1, 1, 2)
    assert body["poll_seconds"] == app.config["ATTENTION_POLL_SECONDS"]

    assert [s["id"] for s in bob.get("/api/chat/attention").json["sessions"]] == [foreign]


def test_attention_needs_a_login_and_looks_only_at_the_recent_unarchived_chats(app, client, alice):
    assert client.get("/api/chat/attention").status_code == 401
    old, _ = add_session(app, "alice", status="streaming", minutes_ago=60)
    for index in range(30):  # the sidebar's 30 recent chats push the old one out
        add_session(app, "alice", title=f"Chat {index}", ended_ago=timedelta(hours=2), seen_ago=timedelta(hours=1))
    assert alice.get("/api/chat/attention").json["sessions"] == []
    archived, _ = add_session(app, "alice", status="streaming")
    with app.app_context():
        db.session.get(ConversationSession, archived).archived_at = utcnow()
        db.session.commit()
    assert old not in str(alice.get("/api/chat/attention").json)
    assert alice.get("/api/chat/attention").json["running"] == 0


def test_the_query_walks_indexes_only(app):
    """One user's recent sessions by index, each latest reply by a seek: cheap with thousands of sessions."""
    session = ConversationSession
    query = (
        _marks_select()
        .where(session.user_id == 1, session.archived_at.is_(None))
        .order_by(session.updated_at.desc())
        .limit(30)
    )
    with app.app_context():
        compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
        plan = " | ".join(row[-1] for row in db.session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_sessions_user_updated_id" in plan and "ix_messages_session_role_created" in plan
    assert "SCAN conversation_sessions" not in plan and "SCAN messages" not in plan
    assert "TEMP B-TREE" not in plan  # no sort of the user's sessions


# ---- seen_at ----------------------------------------------------------------------------------------


def test_seen_clears_the_mark_and_only_the_owner_can_say_so(app, alice, bob, admin):
    sid, _ = add_session(app, "alice", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2))
    before = seen_at(app, sid)

    # Neither another user nor an admin reading it marks it seen for her.
    assert bob.post(f"/api/chat/sessions/{sid}/seen").status_code == 404
    assert admin.get(f"/sessions/{sid}").status_code == 200  # the admin's review page
    assert admin.get(f"/api/chat/sessions/{sid}").status_code == 200
    assert admin.post(f"/api/chat/sessions/{sid}/seen").status_code == 404
    assert admin.get(f"/chat/{sid}").status_code == 404
    assert seen_at(app, sid) == before
    assert alice.get("/api/chat/attention").json["unseen"] == 1
    assert admin.get("/api/chat/attention").json["sessions"] == []  # her chats are not the admin's

    # Opening the page is a read: the page itself reports that the owner looked.
    assert alice.get(f"/chat/{sid}").status_code == 200
    assert seen_at(app, sid) == before

    response = alice.post(f"/api/chat/sessions/{sid}/seen")
    assert response.status_code == 200 and response.json["id"] == sid
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", response.json["seen_at"])
    assert seen_at(app, sid) > before
    assert alice.get("/api/chat/attention").json["sessions"] == []


def test_seen_needs_the_csrf_token_and_a_real_session(app, alice):
    sid, _ = add_session(app, "alice", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2))
    assert alice.post(f"/api/chat/sessions/{sid}/seen", headers={"X-CSRFToken": "bogus"}).status_code == 400
    assert alice.post(f"/api/chat/sessions/{new_id()}/seen").status_code == 404
    assert alice.get("/api/chat/attention").json["unseen"] == 1


def test_a_new_session_starts_seen(app, alice):
    # The column's default: sessions made by sending (or importing) are seen when they are made.
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "alice"))
        db.session.execute(
            ConversationSession.__table__.insert(),
            {"id": "s-1", "user_id": user.id, "agent_id": "a", "agent_name": "A", "model_id": "m"},
        )
        db.session.commit()
    assert seen_at(app, "s-1") is not None


# ---- the sidebar as rendered --------------------------------------------------------------------------


def test_the_sidebar_renders_marks_with_words_and_not_the_open_chats_own_new_reply(app, alice):
    running, _ = add_session(app, "alice", status="executing", title="Running one", seen_ago=timedelta(0))
    unseen, _ = add_session(
        app, "alice", title="Ended unseen", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2)
    )
    other, _ = add_session(app, "alice", title="Quiet", ended_ago=timedelta(minutes=3), seen_ago=timedelta(minutes=2))

    def mark_of(html, sid):
        item = re.search(rf'<li data-session-id="{sid}">(.*?)</li>', html, re.S).group(1)
        found = re.search(
            r'<span class="attention-mark" data-state="(\w+)">.*?<span class="attention-label">(.*?)</span>', item
        )
        return found.groups() if found else None

    html = alice.get("/").text
    assert 'data-attention-url="/api/chat/attention"' in html and "js/attention.js" in html
    assert mark_of(html, running) == ("running", "Running")
    assert mark_of(html, unseen) == ("unseen", "New reply")
    assert mark_of(html, other) is None
    assert 'class="attention-icon" aria-hidden="true"' in html

    html = alice.get(f"/chat/{unseen}").text  # the open chat: its page reports it seen, no mark
    assert mark_of(html, unseen) is None and mark_of(html, running) == ("running", "Running")


def test_composer_keeps_send_and_adds_stop_beside_it_while_a_reply_is_live(app, alice):
    live, _ = add_session(app, "alice", status="streaming", seen_ago=timedelta(0))
    idle, _ = add_session(app, "alice", ended_ago=timedelta(minutes=1), seen_ago=timedelta(0))
    html = alice.get(f"/chat/{live}").text
    actions = re.search(r'<div class="composer-actions" id="composer-actions">(.*?)</div>', html, re.S).group(1)
    stop, send = re.findall(r"<button [^>]*>", actions)
    assert 'id="composer-stop"' in stop and 'data-action="stop"' in stop
    assert 'id="composer-button"' in send and 'type="submit"' in send and 'aria-disabled="true"' in send
    html = alice.get(f"/chat/{idle}").text
    actions = re.search(r'<div class="composer-actions" id="composer-actions">(.*?)</div>', html, re.S).group(1)
    assert re.findall(r'id="composer-\w+"', actions) == ['id="composer-button"'] and "aria-disabled" not in actions


def test_the_sidebar_fragment_is_the_callers_and_marks_the_current_chat(app, client, alice, bob):
    mine, _ = add_session(app, "alice", status="streaming", title="Mine", seen_ago=timedelta(0))
    theirs, _ = add_session(app, "bob", status="streaming", title="Theirs", seen_ago=timedelta(0))
    assert client.get("/chat/sidebar").status_code in (302, 401)  # a login first
    html = alice.get(f"/chat/sidebar?current={mine}").text
    assert html.lstrip().startswith('<nav class="session-list" id="session-list"') and "hx-swap-oob" not in html
    assert f'<li data-session-id="{mine}"><a href="/chat/{mine}" aria-current="page">' in html
    assert 'data-state="running"' in html and theirs not in html and "Theirs" not in html
    assert "aria-current" not in alice.get(f"/chat/sidebar?current={theirs}").text
