"""Sessions: titles, rename, archive, the list (keyset pages, filters, search), review, delete,
admin read-only review, and 404 on every session-scoped URL for anyone but the owner."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import MetaData, Table, func, select, text

from services.webui import create_app
from services.webui.auth import create_user
from services.webui.chat.service import make_title
from services.webui.extensions import db
from services.webui.models import (
    ConversationSession,
    IdempotencyKey,
    Message,
    Run,
    User,
    new_id,
    usage_columns,
    utcnow,
)
from services.webui.sessions import search
from services.webui.sessions.queries import sidebar_sessions

from ..support import base_config

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


# ---- helpers (imported by the other test_sessions_* modules) ------------------------------------


def add_session(
    app,
    username: str,
    *,
    title: str = "A session",
    agent_id: str = "architect",
    model_id: str = "ref-standard",
    messages=(),
    created_at=None,
    updated_at=None,
    archived_at=None,
    active_run_id=None,
    old_schema=False,
) -> str:
    """A session straight into the database (`old_schema`: a database at an older revision, whose
    tables may lack columns the models have). messages: dicts with role, content and optionally
    status, usage, error, model_id, cancelled (a run whose cancel was requested)."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        start = created_at or utcnow()
        session_id = new_id()
        at = start
        message_rows, run_rows = [], []
        for spec in messages:
            at += timedelta(seconds=2)
            usage = spec.get("usage")
            message_rows.append(
                {
                    "id": new_id(),
                    "session_id": session_id,
                    "role": spec["role"],
                    "message_type": "chat",
                    "agent_id": agent_id,
                    "content": spec["content"],
                    "status": spec.get("status", "complete"),
                    "usage": json.dumps(usage, sort_keys=True) if usage is not None else None,
                    **usage_columns(usage),
                    "error": spec.get("error"),
                    "created_at": at,
                    "completed_at": at + timedelta(seconds=1),
                    # as a send records it: the model that wrote the reply
                    "model_id": spec.get("model_id", model_id if spec["role"] == "assistant" else None),
                }
            )
            if spec["role"] == "assistant":
                run_rows.append(
                    {
                        "message_id": message_rows[-1]["id"],
                        "session_id": session_id,
                        "agent_id": agent_id,
                        "model_id": model_id,
                        "owner": None,
                        "created_at": at,
                        "ended_at": at + timedelta(seconds=1),
                        "last_seq": 3,
                        "cancel_requested_at": at if spec.get("cancelled") else None,
                    }
                )
        session_row = {
            "id": session_id,
            "user_id": user.id,
            "agent_id": agent_id,
            "agent_name": agent_id.title(),
            "parent_role": "",
            "model_id": model_id,
            "title": title,
            "created_at": start,
            "updated_at": updated_at or start,
            "archived_at": archived_at,
            "active_run_id": active_run_id,
        }
        # Core inserts; on an older revision, of the columns that database has.
        _insert("conversation_sessions", [session_row], old_schema)
        _insert("messages", message_rows, old_schema)
        _insert("runs", run_rows, old_schema)
        db.session.commit()
        return session_id


def _insert(table_name: str, rows: list[dict], old_schema: bool) -> None:
    if not rows:
        return
    if old_schema:
        table = Table(table_name, MetaData(), autoload_with=db.session.connection())
    else:
        table = db.metadata.tables[table_name]
    db.session.execute(table.insert(), [{k: v for k, v in row.items() if k in table.c} for row in rows])


def conversation(question: str = "How do I migrate the database?", answer: str = "Run the migration.", **reply):
    usage = reply.pop("usage", {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30, "cost_usd": 0.0004})
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer, "usage": usage, **reply},
    ]


def get_session(app, session_id: str):
    with app.app_context():
        session = db.session.get(ConversationSession, session_id)
        if session is not None:
            db.session.expunge(session)
        return session


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def fts_integrity(app) -> None:
    """FTS5's own check that the index matches its content; raises when they drifted apart."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("INSERT INTO search_messages (search_messages, rank) VALUES ('integrity-check', 1)"))
        conn.execute(text("INSERT INTO search_titles (search_titles, rank) VALUES ('integrity-check', 1)"))
        docs = conn.execute(text("SELECT count(*) FROM search_message_docs")).scalar()
        messages = conn.execute(text("SELECT count(*) FROM messages")).scalar()
        assert docs == messages
        titles = conn.execute(text("SELECT count(*) FROM search_session_docs")).scalar()
        assert titles == conn.execute(text("SELECT count(*) FROM conversation_sessions")).scalar()


def listing(client, **params) -> dict:
    response = client.get("/api/chat/sessions", query_string=params)
    assert response.status_code == 200, response.text
    return response.json


def results(html: str) -> str:
    """The results region of a sessions page (the layout's sidebar lists recent chats too)."""
    match = re.search(r'<div id="sessions-results".*?(?=</section>)', html, re.S)
    assert match, "no results region"
    return match.group(0)


def titles(client, **params) -> list[str]:
    return [item["title"] for item in listing(client, **params)["sessions"]]


# ---- 1. titles and rename ----------------------------------------------------------------------


def test_a_new_session_is_titled_from_its_first_message(app, alice):
    content = "  Please   summarise the quarterly revenue report and list the three biggest risks " + "x" * 100
    response = alice.post("/api/chat/message", json={"agent_id": "architect", "content": content})
    assert response.status_code == 202, response.text
    session_id = response.json["session_id"]
    deadline = time.monotonic() + 10
    while get_session(app, session_id).active_run_id and time.monotonic() < deadline:
        time.sleep(0.05)  # the run fails fast (nothing listens on the agent's port); let it finish
    title = get_session(app, session_id).title
    assert title == make_title(content)
    assert title.startswith("Please summarise the quarterly revenue report") and len(title) <= 80
    assert alice.get(f"/api/chat/sessions/{session_id}").json["session"]["title"] == title


def test_rename_through_the_api_validates_and_updates_search(app, alice):
    session_id = add_session(app, "alice", title="Old name", messages=conversation())
    response = alice.patch(f"/api/chat/sessions/{session_id}", json={"title": "  Budget   planning 2027 "})
    assert response.status_code == 200 and response.json["title"] == "Budget planning 2027"
    assert get_session(app, session_id).title == "Budget planning 2027"
    assert titles(alice, q="budget") == ["Budget planning 2027"]
    assert titles(alice, q="old name") == []
    for body, status in (({"title": "   "}, 422), ({"title": "x" * 201}, 422), ({"title": 5}, 422), ({}, 422)):
        response = alice.patch(f"/api/chat/sessions/{session_id}", json=body)
        assert response.status_code == status and response.json["message"], body
    assert alice.patch(f"/api/chat/sessions/{session_id}", data="title=x").status_code == 415
    assert get_session(app, session_id).title == "Budget planning 2027"
    fts_integrity(app)


def test_inline_rename_answers_htmx_with_the_actions_fragment(app, alice):
    session_id = add_session(app, "alice", title="Before")
    response = alice.post(
        f"/sessions/{session_id}/rename",
        data={"title": "After <b>bold</b>", "next": "/"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.headers["HX-Trigger"] == "sessions-changed"
    assert f'id="session-actions-{session_id}"' in response.text and "<html" not in response.text
    assert 'value="After &lt;b&gt;bold&lt;/b&gt;"' in response.text  # escaped, never markup
    plain = alice.post(f"/sessions/{session_id}/rename", data={"title": "Plain form", "next": "/sessions"})
    assert plain.status_code == 303 and plain.headers["Location"].endswith("/sessions")
    assert get_session(app, session_id).title == "Plain form"
    offsite = alice.post(f"/sessions/{session_id}/rename", data={"title": "x", "next": "//evil.example"})
    assert offsite.headers["Location"].endswith(f"/sessions/{session_id}")
    bad = alice.post(f"/sessions/{session_id}/rename", data={"title": " "}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "cannot be empty" in bad.text


def test_the_actions_fragment_has_rename_archive_export_and_a_confirmed_delete(app, alice):
    session_id = add_session(app, "alice", title="Fragment")
    page = alice.get(f"/sessions/{session_id}").text
    assert f'action="/sessions/{session_id}/rename"' in page and 'name="title"' in page
    assert f'hx-post="/sessions/{session_id}/archive"' in page
    assert f"/sessions/{session_id}/export.json" in page and f"/sessions/{session_id}/export.md" in page
    # Delete sits behind a <details> disclosure: two deliberate clicks, no JavaScript needed.
    assert re.search(r"<details class=\"session-delete\">.*?Delete permanently", page, re.S)
    assert 'hx-status:4xx="target:#session-actions-' in page


# ---- 2. archive ---------------------------------------------------------------------------------


def test_archive_and_unarchive_through_the_api_and_the_sidebar(app, alice):
    kept = add_session(app, "alice", title="Still active chat")
    gone = add_session(app, "alice", title="Soon archived chat")
    response = alice.post(f"/api/chat/sessions/{gone}/archive")
    assert response.status_code == 200 and response.json["archived"] is True
    assert get_session(app, gone).archived_at is not None
    with app.app_context():
        assert [s.id for s in sidebar_sessions(get_session(app, kept).user_id)] == [kept]
    home = alice.get("/").text
    assert "Still active chat" in home and "Soon archived chat" not in home  # the chat sidebar
    assert alice.post(f"/api/chat/sessions/{gone}/archive").status_code == 200  # idempotent
    assert alice.post(f"/api/chat/sessions/{gone}/unarchive").json["archived"] is False
    assert get_session(app, gone).archived_at is None
    assert "Soon archived chat" in alice.get("/").text


def test_archive_from_the_page_answers_htmx_with_a_fragment_or_a_reload(app, alice):
    session_id = add_session(app, "alice")
    fragment = alice.post(f"/sessions/{session_id}/archive", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and ">Unarchive<" in fragment.text
    assert fragment.headers["HX-Trigger"] == "sessions-changed"
    reload = alice.post(f"/sessions/{session_id}/unarchive", data={"after": "reload"}, headers={"HX-Request": "true"})
    assert reload.headers["HX-Refresh"] == "true"
    assert get_session(app, session_id).archived_at is None
    plain = alice.post(f"/sessions/{session_id}/archive")
    assert plain.status_code == 303 and plain.headers["Location"].endswith(f"/sessions/{session_id}")


def test_an_archived_session_rejects_new_messages(app, alice):
    session_id = add_session(app, "alice", messages=conversation(), archived_at=utcnow())
    response = alice.post(
        "/api/chat/message", json={"agent_id": "architect", "content": "one more", "session_id": session_id}
    )
    assert response.status_code == 409 and "Unarchive" in response.json["message"]
    assert count(app, Message) == 2
    page = alice.get(f"/sessions/{session_id}").text
    assert "archived and read-only" in page and "Unarchive to continue" in page


def test_a_session_with_a_live_reply_cannot_be_archived_or_deleted(app, alice):
    session_id = add_session(app, "alice", active_run_id=new_id())
    assert alice.post(f"/api/chat/sessions/{session_id}/archive").status_code == 409
    assert alice.delete(f"/api/chat/sessions/{session_id}").status_code == 409
    assert get_session(app, session_id) is not None and get_session(app, session_id).archived_at is None


# ---- 3. the list: keyset pages, filters, sorting -------------------------------------------------


def test_keyset_pages_cover_everything_once_newest_activity_first(app, alice):
    base = utcnow() - timedelta(days=3)
    ids = [
        add_session(
            app,
            "alice",
            title=f"Session {n:02d}",
            created_at=base + timedelta(minutes=n),
            updated_at=base + timedelta(minutes=n, seconds=30 if n % 3 else 0),
        )
        for n in range(23)
    ]
    # Two sessions with the very same last-activity time: the id breaks the tie, none is lost.
    twin_time = base + timedelta(hours=5)
    ids += [add_session(app, "alice", title=f"Twin {n}", created_at=twin_time, updated_at=twin_time) for n in range(2)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = listing(alice, **params)
        seen += [item["id"] for item in body["sessions"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 4 and len(seen) == len(set(seen)) == 25 and set(seen) == set(ids)
    with app.app_context():
        expected = db.session.scalars(
            select(ConversationSession.id).order_by(
                ConversationSession.updated_at.desc(), ConversationSession.id.desc()
            )
        ).all()
    assert seen == expected


def test_sort_by_creation_and_the_previous_page_link(app, alice):
    base = utcnow() - timedelta(days=1)
    for n in range(6):  # created in order 0..5, but last activity in reverse order
        add_session(
            app,
            "alice",
            title=f"Session {n}",
            created_at=base + timedelta(minutes=n),
            updated_at=base + timedelta(hours=2, minutes=-n),
        )
    assert titles(alice) == [f"Session {n}" for n in range(6)]
    assert titles(alice, sort="created") == [f"Session {n}" for n in range(5, -1, -1)]
    first = alice.get("/sessions", query_string={"sort": "created", "limit": 2})
    older = re.search(r'href="([^"]+)"[^>]*rel="next"', first.text).group(1).replace("&amp;", "&")
    second = results(alice.get(older).text)
    assert "Session 3" in second and "Session 5" not in second
    newer = re.search(r'href="([^"]+)"[^>]*rel="prev"', second).group(1).replace("&amp;", "&")
    back = results(alice.get(newer).text)
    assert "Session 5" in back and "Session 4" in back and "Session 3" not in back


def test_filters_agent_model_status_state_and_dates(app, alice):
    now = utcnow()
    add_session(
        app,
        "alice",
        title="Code review",
        agent_id="dir-code",
        model_id="ref-fast",
        messages=conversation(status="cancelled", cancelled=True),
        created_at=now - timedelta(days=10),
    )
    add_session(
        app,
        "alice",
        title="Architecture",
        messages=conversation(status="error", error="boom"),
        created_at=now - timedelta(days=2),
    )
    add_session(
        app,
        "alice",
        title="Old archived",
        messages=conversation(),
        created_at=now - timedelta(days=40),
        archived_at=now - timedelta(days=35),
    )
    assert titles(alice, agent_id="dir-code") == ["Code review"]
    assert titles(alice, model_id="ref-fast") == ["Code review"]
    assert titles(alice, status="cancelled") == ["Code review"]
    assert titles(alice, status="error") == ["Architecture"]
    assert titles(alice, archived="true") == ["Old archived"]
    assert set(titles(alice, archived="false")) == {"Code review", "Architecture"}
    assert len(titles(alice, archived="all")) == 3
    day = lambda delta: (now - timedelta(days=delta)).date().isoformat()  # noqa: E731
    assert titles(alice, **{"from": day(11), "to": day(9)}) == ["Code review"]
    assert titles(alice, **{"from": day(3)}) == ["Architecture"]
    assert titles(alice, **{"to": day(30)}) == ["Old archived"]
    row = listing(alice, agent_id="dir-code")["sessions"][0]
    assert row["last_status"] == "cancelled" and row["message_count"] == 2 and row["owner"] == "alice"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"status": "bogus"}, "status must be one of"),
        ({"archived": "maybe"}, "archived must be"),
        ({"sort": "title"}, "sort must be"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "abc"}, "limit must be"),
        ({"from": "yesterday"}, "from must be a date"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from must be before to"),
        ({"agent_id": "a b<c>"}, "not a valid identifier"),
        ({"q": "x" * 201}, "limit is 200"),
        ({"cursor": "not-a-cursor"}, "cursor is not valid"),
    ],
)
def test_malformed_filters_are_400_with_a_message(alice, params, fragment):
    response = alice.get("/api/chat/sessions", query_string=params)
    assert response.status_code == 400 and fragment in response.json["message"]
    page = alice.get("/sessions", query_string=params)
    assert page.status_code == 400 and fragment in page.text


def test_a_tampered_cursor_or_one_of_another_sort_is_400(app, alice):
    for n in range(3):
        add_session(app, "alice", title=f"S{n}", created_at=utcnow() - timedelta(minutes=n))
    cursor = listing(alice, limit=1)["next_cursor"]
    assert listing(alice, limit=1, cursor=cursor)["sessions"]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    assert alice.get("/api/chat/sessions", query_string={"cursor": tampered}).status_code == 400
    other = alice.get("/api/chat/sessions", query_string={"cursor": cursor, "sort": "created"})
    assert other.status_code == 400 and "different sort" in other.json["message"]


# ---- 3b. full-text search -------------------------------------------------------------------------


@pytest.fixture(params=["hits", "probe"])
def plan(request, monkeypatch):
    """Run a search test under both plans: collect every hit, or probe the sessions one by one."""
    monkeypatch.setattr(search, "COMMON_HITS", 10**9 if request.param == "hits" else 0)
    return request.param


def test_search_finds_a_word_that_appears_only_inside_a_reply(app, alice, plan):
    session_id = add_session(app, "alice", title="Weekly sync", messages=conversation("what next?", "Nothing."))
    add_session(app, "alice", title="Unrelated", messages=conversation())
    with app.app_context():
        db.session.add(
            Message(
                id=new_id(),
                session_id=session_id,
                role="assistant",
                content="The ptarmigan migration is done.",
                status="complete",
                created_at=utcnow(),
            )
        )
        db.session.commit()
    body = listing(alice, q="ptarmigan")
    assert [item["id"] for item in body["sessions"]] == [session_id]
    assert "<mark>ptarmigan</mark>" in body["sessions"][0]["snippet_html"]
    assert [item["id"] for item in listing(alice, q="ptarm")["sessions"]] == [session_id]  # as you type
    assert listing(alice, q="ptarmigans")["sessions"] == []
    fts_integrity(app)


def test_search_covers_titles_and_is_case_and_accent_insensitive(app, alice, plan):
    add_session(app, "alice", title="Café opening hours", messages=conversation("hi", "hello"))
    add_session(app, "alice", title="Other", messages=conversation("hi", "hello"))
    body = listing(alice, q="CAFE")
    assert [item["title"] for item in body["sessions"]] == ["Café opening hours"]
    assert body["sessions"][0]["title_html"] == "<mark>Café</mark> opening hours"
    assert titles(alice, q="opening hours") == ["Café opening hours"]
    assert titles(alice, q="hours opening") == ["Café opening hours"]  # all words, any order
    assert titles(alice, q="opening zebra") == []


def test_search_snippets_are_escaped_before_they_are_marked(app, alice, plan):
    add_session(
        app,
        "alice",
        title="Escapes",
        messages=conversation("show me", '<script>alert("quokka")</script> & <img src=x onerror=quokka()>'),
    )
    snippet = listing(alice, q="quokka")["sessions"][0]["snippet_html"]
    assert "<script" not in snippet and "<img" not in snippet
    assert "&lt;script&gt;" in snippet and "<mark>quokka</mark>" in snippet
    page = results(alice.get("/sessions", query_string={"q": "quokka"}).text)
    assert (
        "&lt;script&gt;alert(&#34;<mark>quokka</mark>" in page
        or "&lt;script&gt;alert(&quot;<mark>quokka</mark>" in page
    )


def test_search_text_is_never_query_syntax(app, alice, plan):
    add_session(app, "alice", title="Plain", messages=conversation("hello there", "general kenobi"))
    for query in ('"', "NEAR(", "a OR b", "title:x", "kenobi*)", "-kenobi", "^", "'; DROP TABLE messages; --"):
        response = alice.get("/api/chat/sessions", query_string={"q": query})
        assert response.status_code == 200, query
    assert titles(alice, q='"kenobi"') == ["Plain"]
    assert count(app, Message) == 2


def test_search_follows_edits_and_deletions(app, alice, plan):
    session_id = add_session(app, "alice", title="Edits", messages=conversation("start", "first wording"))
    with app.app_context():
        reply = db.session.scalar(select(Message).where(Message.role == "assistant"))
        reply.content = "second phrasing"  # what a streaming run does while it flushes
        db.session.commit()
    assert titles(alice, q="wording") == []
    assert titles(alice, q="phrasing") == ["Edits"]
    fts_integrity(app)
    assert alice.delete(f"/api/chat/sessions/{session_id}").status_code == 200
    assert titles(alice, q="phrasing") == [] and titles(alice, q="edits") == []
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM search_message_docs")).scalar() == 0
        assert db.session.execute(text("SELECT count(*) FROM search_session_docs")).scalar() == 0
    fts_integrity(app)


def test_a_streaming_reply_is_indexed_when_it_ends_not_at_every_flush(app, alice, plan):
    session_id = add_session(
        app,
        "alice",
        title="Live",
        messages=conversation("tell me about birds", "Partial text on the", status="streaming"),
    )
    with app.app_context():
        reply = db.session.scalar(select(Message).where(Message.session_id == session_id, Message.role == "assistant"))
        reply.content = "Partial text on the ptarmigan"  # a run's flush
        db.session.commit()
        queued = db.session.execute(text("SELECT kind FROM search_backlog ORDER BY kind")).scalars().all()
        assert queued == ["message", "title"]  # the user's message and the title, not the live reply
        assert search.catch_up(db.engine) == 2
        indexed = db.session.execute(text("SELECT count(*) FROM search_messages")).scalar()
    assert indexed == 1  # the user's message only
    assert titles(alice, q="ptarmigan") == []
    fts_integrity(app)
    with app.app_context():
        reply = db.session.get(Message, reply.id)
        reply.content, reply.status = "Partial text on the ptarmigan, done.", "complete"  # the last flush
        db.session.commit()
    assert titles(alice, q="ptarmigan") == ["Live"]
    fts_integrity(app)
    with app.app_context():  # an ended reply edited later is re-indexed
        reply = db.session.get(Message, reply.id)
        reply.content = "Rewritten about the kestrel."
        db.session.commit()
    assert titles(alice, q="ptarmigan") == [] and titles(alice, q="kestrel") == ["Live"]
    fts_integrity(app)
    assert alice.delete(f"/api/chat/sessions/{session_id}").status_code == 200
    fts_integrity(app)


def test_documents_changed_or_deleted_while_queued_are_indexed_as_they_are_then(app, alice, plan):
    """The triggers only queue a document (0013); an edit, a rename or a delete that comes before
    it is indexed must leave FTS5 exact: nothing taken out that was never put in."""
    kept = add_session(app, "alice", title="Heron draft", messages=conversation("about the heron", "first wording"))
    gone = add_session(app, "alice", title="Bittern", messages=conversation("about the bittern", "soon deleted"))
    with app.app_context():
        reply = db.session.scalar(select(Message).where(Message.session_id == kept, Message.role == "assistant"))
        reply.content = "second wording"  # still queued: FTS5 has nothing of it to take out
        db.session.get(ConversationSession, kept).title = "Egret notes"
        db.session.commit()
        assert db.session.execute(text("SELECT count(*) FROM search_messages")).scalar() == 0
    fts_integrity(app)  # the index and its content view agree while the queue is full
    assert alice.delete(f"/api/chat/sessions/{gone}").status_code == 200
    with app.app_context():
        # the deleted session's title and messages left the queue with it
        assert db.session.execute(text("SELECT count(*) FROM search_backlog")).scalar() == 3
    assert titles(alice, q="wording") == ["Egret notes"]  # a search indexes the queue first
    assert titles(alice, q="first") == [] and titles(alice, q="heron") == ["Egret notes"]  # the question
    assert titles(alice, q="bittern") == [] and titles(alice, q="egret") == ["Egret notes"]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM search_backlog")).scalar() == 0
        reply = db.session.get(Message, reply.id)
        reply.content = "third wording, rewritten"  # indexed: taken out now, queued again
        db.session.commit()
        assert db.session.execute(text("SELECT count(*) FROM search_messages('second')")).scalar() == 0
    fts_integrity(app)
    assert titles(alice, q="rewritten") == ["Egret notes"] and titles(alice, q="second") == []
    fts_integrity(app)


def test_upgrading_from_0002_takes_live_replies_out_of_the_index(tmp_path, agents_file):
    from flask_migrate import downgrade, upgrade

    app = create_app(base_config(tmp_path, tmp_path / "old.db", agents_file))
    with app.app_context():
        upgrade(revision="0002")
    with app.app_context():
        create_user("alice", "pw-alice-123456")
        db.session.commit()
    # Rows as revision 0002 stored them: plain SQL, since the models describe today's columns.
    with app.app_context():
        for title, reply, status in (("Old", "half a ptarmigan", "streaming"), ("Done", "a whole kestrel", "complete")):
            session_id, now = new_id(), utcnow()
            db.session.execute(
                text(
                    "INSERT INTO conversation_sessions (id, user_id, agent_id, agent_name, parent_role, model_id,"
                    " title, created_at, updated_at) SELECT :id, id, 'architect', 'Architect', '', 'ref-standard',"
                    " :title, :now, :now FROM users WHERE username = 'alice'"
                ),
                {"id": session_id, "title": title, "now": now},
            )
            for role, content, state in (("user", "q", "complete"), ("assistant", reply, status)):
                db.session.execute(
                    text(
                        "INSERT INTO messages (id, session_id, role, message_type, agent_id, content, status,"
                        " created_at) VALUES (:id, :sid, :role, 'chat', 'architect', :content, :status, :now)"
                    ),
                    {"id": new_id(), "sid": session_id, "role": role, "content": content, "status": state, "now": now},
                )
        db.session.commit()

    def searchable(word: str) -> int:
        with app.app_context():
            return db.session.execute(text("SELECT count(*) FROM search_messages(:w)"), {"w": word}).scalar()

    assert searchable("ptarmigan") == 1  # 0002 indexed the reply while it streamed
    with app.app_context():
        upgrade()
    assert searchable("ptarmigan") == 0 and searchable("kestrel") == 1
    fts_integrity(app)
    with app.app_context():
        downgrade(revision="0002")
    assert searchable("ptarmigan") == 1 and searchable("kestrel") == 1
    fts_integrity(app)
    with app.app_context():
        db.engine.dispose()


def test_search_combines_with_filters_and_pages(app, alice, plan):
    for n in range(5):
        add_session(
            app,
            "alice",
            title=f"Kestrel {n}",
            archived_at=utcnow() if n % 2 else None,
            created_at=utcnow() - timedelta(minutes=n),
        )
    assert titles(alice, q="kestrel", archived="true") == ["Kestrel 1", "Kestrel 3"]
    first = listing(alice, q="kestrel", limit=2)
    second = listing(alice, q="kestrel", limit=2, cursor=first["next_cursor"])
    assert [s["title"] for s in first["sessions"] + second["sessions"]] == [f"Kestrel {n}" for n in range(4)]


def test_the_sessions_page_searches_as_you_type_and_is_bookmarkable(app, alice):
    add_session(app, "alice", title="Halcyon days", messages=conversation())
    add_session(app, "alice", title="Something else", messages=conversation())
    page = alice.get("/sessions").text
    form = re.search(r"<form id=\"sessions-filters\"[^>]*>", page).group(0)
    assert 'hx-trigger="submit, input changed delay:300ms from:#session-q, change"' in form
    assert 'hx-push-url="true"' in form and 'method="get"' in form and 'hx-target="#sessions-results"' in form
    bookmarked = alice.get("/sessions?q=halcyon")
    assert "Halcyon" in results(bookmarked.text) and "Something else" not in results(bookmarked.text)
    assert 'value="halcyon"' in bookmarked.text and "<html" in bookmarked.text
    partial = alice.get("/sessions?q=halcyon", headers={"HX-Request": "true", "HX-Target": "div#sessions-results"})
    assert partial.status_code == 200 and "<html" not in partial.text
    assert partial.text.lstrip().startswith('<div id="sessions-results"') and "<mark>Halcyon</mark>" in partial.text
    bad = alice.get("/sessions?status=nope", headers={"HX-Request": "true", "HX-Target": "div#sessions-results"})
    assert bad.status_code == 400 and "status must be one of" in bad.text and "<html" not in bad.text


# ---- 4. review ------------------------------------------------------------------------------------


def test_review_shows_the_transcript_with_usage_cost_and_totals(app, alice):
    session_id = add_session(
        app,
        "alice",
        title="Reviewed",
        messages=[
            {"role": "user", "content": "Explain **this** <b>please</b>"},
            {
                "role": "assistant",
                "content": "Here is `code` and **bold**.",
                "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500, "cost_usd": 0.0081},
            },
            {"role": "user", "content": "And stop."},
            {
                "role": "assistant",
                "content": "Partial",
                "status": "cancelled",
                "cancelled": True,
                "usage": {"prompt_tokens": 1600, "completion_tokens": 10, "total_tokens": 1610},
            },
            {"role": "user", "content": "Retry"},
            {
                "role": "assistant",
                "content": "",
                "status": "error",
                "error": "The agent could not be reached.",
                "usage": None,
            },
        ],
    )
    page = alice.get(f"/sessions/{session_id}")
    assert page.status_code == 200
    html = page.text
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html  # replies: rendered markdown
    assert "Explain **this** &lt;b&gt;please&lt;/b&gt;" in html  # people's text: as typed, escaped
    assert 'class="transcript-body md" hx-ignore' in html
    assert "1,200 in · 300 out" in html and "$0.0081" in html
    assert "≈ $0.00162" in html  # cancelled reply: no reported cost, estimated from prices ($1/$2 per M)
    assert "Stopped by the user" in html and "Failed: The agent could not be reached." in html
    assert "3,110" in html and "(2,800 in, 310 out)" in html  # session tokens
    assert "≈ $0.00972" in html  # session cost, partly estimated
    assert re.search(r"<dt>Duration</dt><dd>\d", html)
    for status in ("complete 1", "cancelled 1", "error 1"):
        assert status in html
    assert re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT[\d:.]+Z\">", html)
    api = alice.get(f"/api/chat/sessions/{session_id}").json
    assert api["totals"]["total_tokens"] == 3110 and api["totals"]["outcomes"] == {
        "complete": 1,
        "cancelled": 1,
        "error": 1,
    }
    assert [m["status"] for m in api["messages"]] == [
        "complete",
        "complete",
        "complete",
        "cancelled",
        "complete",
        "error",
    ]
    assert api["messages"][3]["outcome"] == "Stopped by the user" and api["messages"][3]["cost_estimated"] is True
    assert api["session"]["owner"] == "alice" and api["totals"]["duration_seconds"] > 0


# ---- 6. delete --------------------------------------------------------------------------------------


def test_delete_removes_messages_runs_send_keys_and_search_entries(app, alice):
    session_id = add_session(app, "alice", title="Doomed marzipan", messages=conversation("q", "marzipan answer"))
    survivor = add_session(app, "alice", title="Survivor", messages=conversation("q", "marzipan too"))
    with app.app_context():
        run_id = db.session.scalar(select(Run.message_id).where(Run.session_id == session_id))
        user_id = db.session.scalar(select(User.id).where(User.username == "alice"))
        db.session.add(
            IdempotencyKey(
                user_id=user_id,
                key="k",
                session_id=session_id,
                user_message_id="u",
                reply_id=run_id,
                created_at=utcnow(),
            )
        )
        db.session.commit()
    confirm = alice.get(f"/sessions/{session_id}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    response = alice.post(f"/sessions/{session_id}/delete", data={"next": f"/sessions/{session_id}"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/sessions")
    assert get_session(app, session_id) is None
    assert count(app, Message) == 2 and count(app, Run) == 1 and count(app, IdempotencyKey) == 0
    assert titles(alice, q="marzipan") == ["Survivor"]
    assert alice.get(f"/sessions/{session_id}").status_code == 404
    htmx = alice.post(f"/sessions/{survivor}/delete", headers={"HX-Request": "true"})
    assert htmx.status_code == 200 and htmx.headers["HX-Redirect"] == "/sessions"
    assert count(app, ConversationSession) == 0
    fts_integrity(app)


def test_delete_through_the_api(app, alice):
    session_id = add_session(app, "alice", messages=conversation())
    response = alice.delete(f"/api/chat/sessions/{session_id}")
    assert response.status_code == 200 and response.json == {"id": session_id, "deleted": True}
    assert alice.delete(f"/api/chat/sessions/{session_id}").status_code == 404
    assert count(app, Message) == 0


# ---- 8. admin review, and 404 for everyone else ---------------------------------------------------


def session_scoped_requests(app, session_id: str):
    """Every (method, url) of every rule in the URL map that takes a session_id."""
    for rule in app.url_map.iter_rules():
        if "session_id" not in rule.arguments:
            continue
        values = {arg: "json" if arg == "fmt" else "x" for arg in rule.arguments}
        values["session_id"] = session_id
        url = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method, url


def open_as(user_client, method: str, url: str):
    kwargs = (
        {"json": {"title": "hijacked", "content": "hi", "agent_id": "architect"}} if method in ("PATCH", "PUT") else {}
    )
    if method == "POST":
        kwargs = {"data": {"title": "hijacked", "content": "hi", "agent_id": "architect"}}
    return user_client.open(url, method=method, headers={"X-CSRFToken": user_client.csrf}, **kwargs)


def test_another_user_gets_404_on_every_session_scoped_url(app, alice, bob):
    session_id = add_session(app, "alice", title="Alice's secret", messages=conversation())
    checked = set()
    for rule, method, url in session_scoped_requests(app, session_id):
        response = open_as(bob, method, url)
        assert response.status_code == 404, f"{method} {url} -> {response.status_code}"
        assert "secret" not in response.text
        checked.add((rule.endpoint, method))
    assert {
        ("sessions_api.show", "GET"),
        ("sessions_api.update", "PATCH"),
        ("sessions_api.destroy", "DELETE"),
        ("sessions_api.archive", "POST"),
        ("sessions_api.unarchive", "POST"),
        ("sessions_api.export", "GET"),
        ("sessions.review", "GET"),
        ("sessions.rename", "POST"),
        ("sessions.archive", "POST"),
        ("sessions.unarchive", "POST"),
        ("sessions.delete", "POST"),
        ("sessions.confirm_delete", "GET"),
        ("sessions.export", "GET"),
        ("chat_api.cancel", "POST"),
        ("chat_api.stream", "GET"),
    } <= checked
    alice_session = get_session(app, session_id)
    assert alice_session.title == "Alice's secret" and alice_session.archived_at is None
    assert count(app, Message) == 2
    # An id that does not exist at all looks exactly the same.
    for _rule, method, url in session_scoped_requests(app, UNKNOWN_ID):
        assert open_as(alice, method, url).status_code == 404, f"{method} {url}"
    assert titles(bob) == [] and "Alice" not in bob.get("/sessions").text
    assert bob.get("/api/chat/sessions", query_string={"user": "alice"}).status_code == 403


def test_an_admin_reviews_every_users_sessions_but_cannot_change_them(app, alice, make_user):
    admin = make_user("root", role="admin")
    session_id = add_session(app, "alice", title="Alice's audit trail", messages=conversation())
    own = add_session(app, "root", title="Admin's own")
    assert titles(admin) == ["Admin's own"]
    everyone = listing(admin, user="all")["sessions"]
    assert {(s["title"], s["owner"]) for s in everyone} == {("Alice's audit trail", "alice"), ("Admin's own", "root")}
    assert titles(admin, user="alice") == ["Alice's audit trail"]
    assert admin.get("/api/chat/sessions", query_string={"user": "nobody"}).status_code == 400
    page = admin.get("/sessions?user=all").text
    assert "Alice&#39;s audit trail" in page and "alice" in page
    review = admin.get(f"/sessions/{session_id}")
    assert review.status_code == 200 and "Read-only: alice" in review.text
    assert f"/sessions/{session_id}/rename" not in review.text and "Delete permanently" not in review.text
    assert admin.get(f"/api/chat/sessions/{session_id}").json["session"]["owner"] == "alice"
    assert admin.get(f"/api/chat/sessions/{session_id}/export?format=md").status_code == 200
    assert admin.get(f"/sessions/{session_id}/export.json").status_code == 200
    writes = [(rule, method, url) for rule, method, url in session_scoped_requests(app, session_id) if method != "GET"]
    assert len(writes) >= 9
    for _rule, method, url in writes:
        assert open_as(admin, method, url).status_code == 404, f"{method} {url}"
    after = get_session(app, session_id)
    assert after.title == "Alice's audit trail" and after.archived_at is None and count(app, Message) == 2
    assert admin.post(f"/api/chat/sessions/{own}/archive").status_code == 200  # their own, yes


def test_logged_out_requests_are_refused(app, alice):
    session_id = add_session(app, "alice")
    anonymous = app.test_client()
    assert anonymous.get("/api/chat/sessions").status_code == 401
    assert anonymous.get(f"/sessions/{session_id}").status_code == 302


def test_list_json_shape(app, alice):
    session_id = add_session(app, "alice", title="Shape", messages=conversation())
    body = listing(alice)
    assert set(body) == {"sessions", "next_cursor"} and body["next_cursor"] is None
    item = body["sessions"][0]
    assert item["id"] == session_id and item["url"] == f"/sessions/{session_id}"
    assert {
        "title",
        "agent_id",
        "agent_name",
        "model_id",
        "created_at",
        "updated_at",
        "archived_at",
        "archived",
        "last_status",
        "message_count",
        "snippet_html",
        "title_html",
        "live",
    } <= set(item)
    assert item["snippet_html"] is None and item["created_at"].endswith("Z")
    json.dumps(body)


# ---- search: plans, prefixes, owners, the probe budget, and the query plans ------------------------


def test_prefixes_of_every_length_match_as_you_type(app, alice, plan):
    add_session(app, "alice", title="Notes", messages=conversation("q", "We configured the kubernetes cluster."))
    add_session(app, "alice", title="Other", messages=conversation("q", "Nothing to see."))
    for typed in ("ku", "kub", "kube", "kuber", "kubernetes", "configured kube", "the clus"):
        expected = [] if typed == "ku" else ["Notes"]  # two letters are a whole word, not a prefix
        assert titles(alice, q=typed) == expected, typed
    assert titles(alice, q="kubernetesx") == []


def test_search_sees_only_the_owners_sessions_and_admins_see_all(app, alice, bob, make_user, plan):
    add_session(app, "bob", title="Bob's", messages=conversation("q", "the gossamer thread"))
    mine = add_session(app, "alice", title="Alice's", messages=conversation("q", "a gossamer wing"))
    assert [s["id"] for s in listing(alice, q="gossamer")["sessions"]] == [mine]
    assert titles(bob, q="gossamer") == ["Bob's"]
    admin = make_user("root", role="admin")
    assert sorted(titles(admin, q="gossamer", user="all")) == ["Alice's", "Bob's"]
    assert titles(admin, q="gossamer", user="bob") == ["Bob's"]
    assert titles(admin, q="gossamer") == []


def test_a_capped_probe_walk_continues_on_the_next_page(app, alice, monkeypatch):
    monkeypatch.setattr(search, "COMMON_HITS", 0)  # always probe
    monkeypatch.setattr(search, "PROBE_BUDGET", 4)  # look at 4 sessions a page
    base = utcnow() - timedelta(days=1)
    expected = []
    for n in range(11):
        word = "nectarine" if n in (1, 2, 8) else "plain"
        add_session(
            app,
            "alice",
            title=f"S{n}",
            messages=conversation("q", f"a {word} answer"),
            created_at=base + timedelta(minutes=n),
        )
        if word == "nectarine":
            expected.insert(0, f"S{n}")
    found, cursor, pages = [], None, 0
    while True:
        body = listing(alice, q="nectarine", **({"cursor": cursor} if cursor else {}))
        assert len(body["sessions"]) <= 4
        found += [s["title"] for s in body["sessions"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert found == expected and pages == 3  # 11 sessions walked 4 at a time


def test_the_list_queries_use_their_indexes(app, alice):
    """EXPLAIN QUERY PLAN: the list, the sidebar and the latest-reply status never scan a table."""
    session_id = add_session(app, "alice", messages=conversation())
    from sqlalchemy import event

    statements = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", remember)
    try:
        for params in (
            {},
            {"status": "complete", "archived": "false", "agent_id": "architect"},
            {"sort": "created"},
            {"q": "migrate"},
            {"q": "datab"},
        ):
            listing(alice, **params)
        alice.get(f"/sessions/{session_id}")
        with app.app_context():
            sidebar_sessions(1)
    finally:
        with app.app_context():
            event.remove(db.engine, "before_cursor_execute", remember)
    plans = []
    with app.app_context(), db.engine.connect() as conn:
        for statement, parameters in statements:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            plans.append((statement, [row[3] for row in rows]))
    details = [detail for _, lines in plans for detail in lines]
    for table in ("conversation_sessions", "messages", "search_message_docs", "search_session_docs"):
        assert not [d for d in details if re.fullmatch(rf"SCAN {table}( AS \w+)?", d)], table
    assert any("ix_sessions_user_updated_id" in d for d in details)
    assert any("ix_sessions_user_created_id" in d for d in details)
    assert any("COVERING INDEX ix_messages_session_role_created" in d for d in details)
    # Without a search the page comes straight off the index in order: no sort of the user's sessions.
    lists = [
        lines
        for statement, lines in plans
        if "FROM conversation_sessions JOIN users" in statement and "MATCH" not in statement
    ]
    assert len(lists) >= 3 and not [d for lines in lists for d in lines if "TEMP B-TREE FOR ORDER BY" in d]
