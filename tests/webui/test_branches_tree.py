"""The message tree without live agents: the path walk, siblings and switching (chat/tree.py),
the 0012 back-fill of existing sessions, the page's actions and switcher, review, search, and
export/import of a tree. Replies here end in `error` (no agent listens), which is all a tree
needs."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from services.webui import create_app
from services.webui.auth import create_user
from services.webui.chat.tree import Node, Tree
from services.webui.extensions import db
from services.webui.models import ConversationSession, Message, utcnow
from services.webui.sessions import search

from ..support import base_config, csrf_from
from .test_sessions import add_session, conversation, fts_integrity, titles

T0 = datetime(2026, 1, 1)


def node(message_id, parent, role, second):
    return Node(message_id, parent, role, T0 + timedelta(seconds=second))


# u1 → a1 → u2 → a2          (first version)
#           ↘ u2b → a2b → u3 (an edit of u2, then one more turn)
#      a1b                   (a regenerated first reply)
NODES = [
    node("u1", None, "user", 1),
    node("a1", "u1", "assistant", 2),
    node("u2", "a1", "user", 3),
    node("a2", "u2", "assistant", 4),
    node("u2b", "a1", "user", 5),
    node("a2b", "u2b", "assistant", 6),
    node("u3", "a2b", "user", 7),
    node("a1b", "u1", "assistant", 8),
]


def test_the_path_runs_from_the_root_to_the_leaf():
    tree = Tree(NODES, "a2")
    assert tree.path() == ["u1", "a1", "u2", "a2"]
    assert tree.path("u3") == ["u1", "a1", "u2b", "a2b", "u3"]
    assert Tree(NODES, "a1b").path() == ["u1", "a1b"]


def test_siblings_share_parent_and_role_oldest_first():
    tree = Tree(NODES, "a2")
    place = tree.siblings("u2b")
    assert place.ids == ("u2", "u2b") and (place.position, place.count) == (2, 2)
    assert place.previous_id == "u2" and place.next_id is None
    first = tree.siblings("a1")
    assert first.ids == ("a1", "a1b") and first.previous_id is None and first.next_id == "a1b"
    assert tree.siblings("u1").count == 1
    assert tree.has_branches()


def test_switching_goes_to_the_newest_leaf_under_a_sibling():
    tree = Tree(NODES, "a2")
    assert tree.newest_leaf_under("u2b") == "u3"
    assert tree.newest_leaf_under("a1") == "u3"  # through a1's newest child, u2b
    assert tree.newest_leaf_under("a1b") == "a1b"


def test_a_session_without_a_leaf_is_one_path_in_time_order():
    flat = [node("m1", None, "user", 1), node("m3", None, "user", 3), node("m2", None, "assistant", 2)]
    tree = Tree(flat, None)
    assert tree.path() == ["m1", "m2", "m3"]
    assert tree.parents() == {"m1": None, "m2": "m1", "m3": "m2"}
    assert tree.siblings("m3").count == 1 and not tree.has_branches()


def test_a_cycle_from_a_bad_import_ends_the_walk():
    tree = Tree([node("x", "y", "user", 1), node("y", "x", "assistant", 2)], "y")
    assert tree.path() == ["x", "y"]


# ---- the migration ----------------------------------------------------------------------------


def test_0012_backfills_every_session_as_one_path_and_keeps_search(tmp_path, agents_file):
    app = create_app(base_config(tmp_path, tmp_path / "old.db", agents_file))
    with app.app_context():
        upgrade(revision="0005")
        create_user("alice", "pw-alice-123456")
        db.session.commit()
    first = add_session(
        app, "alice", title="Old one", messages=conversation("q1", "kestrel answer") * 2, old_schema=True
    )
    second = add_session(
        app, "alice", title="Old two", messages=conversation("q2", "ptarmigan answer"), old_schema=True
    )
    empty = add_session(app, "alice", title="Empty", old_schema=True)
    with app.app_context():
        upgrade()
        rows = db.session.execute(
            text("SELECT id, parent_id, session_id FROM messages ORDER BY session_id, created_at")
        ).all()
        leaves = dict(db.session.execute(text("SELECT id, current_leaf_id FROM conversation_sessions")).all())
    for session_id, size in ((first, 4), (second, 2)):
        chain = [r for r in rows if r.session_id == session_id]
        assert len(chain) == size
        assert [r.parent_id for r in chain] == [None] + [r.id for r in chain[:-1]]
        assert leaves[session_id] == chain[-1].id
    assert leaves[empty] is None
    with app.app_context():  # the search triggers on messages survived (no table rebuild)
        db.session.add(
            Message(
                session_id=second, role="user", content="a new bittern", status="complete", parent_id=leaves[second]
            )
        )
        db.session.commit()
        assert search.catch_up(db.engine) == 1  # queued by the trigger (0013), indexed now
        assert db.session.execute(text("SELECT count(*) FROM search_messages(:w)"), {"w": "bittern"}).scalar() == 1
    fts_integrity(app)
    with app.app_context():
        downgrade(revision="0005")
        columns = {c["name"] for c in inspect(db.engine).get_columns("messages")}
        assert "parent_id" not in columns
        assert db.session.execute(text("SELECT count(*) FROM search_messages(:w)"), {"w": "kestrel"}).scalar() == 2
        db.engine.dispose()


# ---- actions through the app (no agent answers: replies end as errors) --------------------------


def wait_ended(app, message_id, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            message = db.session.get(Message, message_id)
            if message is not None and not message.is_live:
                return message
        time.sleep(0.05)
    raise AssertionError("reply did not end")


def branched_session(app, alice) -> dict:
    """A chat of two turns whose second question was edited: 'first kestrel', then 'second
    ptarmigan' edited into 'edited bittern' (the current path)."""
    sent = alice.post("/api/chat/message", json={"agent_id": "architect", "content": "first kestrel"}).json
    wait_ended(app, sent["message_id"])
    sid = sent["session_id"]
    second = alice.post(
        "/api/chat/message", json={"agent_id": "architect", "content": "second ptarmigan", "session_id": sid}
    ).json
    wait_ended(app, second["message_id"])
    edited = alice.post(
        f"/api/chat/sessions/{sid}/messages/{second['user_message_id']}/edit", json={"content": "edited bittern"}
    )
    assert edited.status_code == 202, edited.text
    wait_ended(app, edited.json["message_id"])
    return {"sid": sid, "first": sent, "second": second, "edited": edited.json}


def test_the_page_shows_the_current_path_with_its_switcher_and_actions(app, alice):
    chat = branched_session(app, alice)
    html = alice.get(f"/chat/{chat['sid']}").text
    assert "edited bittern" in html and "second ptarmigan" not in html
    assert '<span class="sibling-count" aria-live="polite">2 / 2</span>' in html
    assert 'data-action="retry"' in html and 'data-action="regenerate"' in html and 'data-action="edit"' in html
    assert html.count('data-action="branch"') == 4
    # Switching by the page's form (no htmx): a redirect, and the other version is shown.
    target = f"/chat/{chat['sid']}/messages/{chat['second']['user_message_id']}/switch"
    response = alice.post(target, data={"csrf_token": csrf_from(html)})
    assert response.status_code == 303
    html = alice.get(f"/chat/{chat['sid']}").text
    assert "second ptarmigan" in html and "edited bittern" not in html
    assert '<span class="sibling-count" aria-live="polite">1 / 2</span>' in html
    # With htmx: the conversation comes back to be morphed in, with Send and the watcher.
    fragment = alice.post(
        f"/chat/{chat['sid']}/messages/{chat['edited']['user_message_id']}/switch",
        data={"csrf_token": csrf_from(html)},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200
    assert 'id="messages"' in fragment.text and "edited bittern" in fragment.text
    assert 'id="session-watch"' in fragment.text and 'data-action="send"' in fragment.text


def test_page_actions_are_owned_and_unknown_actions_are_404(app, alice, bob):
    chat = branched_session(app, alice)
    html = bob.get("/").text
    url = f"/chat/{chat['sid']}/messages/{chat['edited']['message_id']}/retry"
    assert bob.post(url, data={"csrf_token": csrf_from(html)}).status_code == 404
    mine = alice.get(f"/chat/{chat['sid']}").text
    unknown = f"/chat/{chat['sid']}/messages/{chat['edited']['message_id']}/explode"
    assert alice.post(unknown, data={"csrf_token": csrf_from(mine)}).status_code == 404
    empty = f"/chat/{chat['sid']}/messages/{chat['edited']['user_message_id']}/edit"
    refused = alice.post(empty, data={"csrf_token": csrf_from(mine), "content": "  "}, headers={"HX-Request": "true"})
    assert refused.status_code == 422 and "Write a message" in refused.text


def test_review_markdown_and_search_understand_branches(app, alice):
    chat = branched_session(app, alice)
    review = alice.get(f"/sessions/{chat['sid']}").text
    assert "edited bittern" in review and "second ptarmigan" not in review
    assert "other versions of some messages" in review
    markdown = alice.get(f"/api/chat/sessions/{chat['sid']}/export", query_string={"format": "md"}).text
    assert "edited bittern" in markdown and "second ptarmigan" not in markdown and "- Branches:" in markdown
    # Search indexes every message, whichever branch it is on.
    assert titles(alice, q="ptarmigan") == ["first kestrel"] and titles(alice, q="bittern") == ["first kestrel"]
    fts_integrity(app)


def test_export_carries_the_whole_tree_and_import_restores_it(app, alice):
    chat = branched_session(app, alice)
    document = alice.get(f"/api/chat/sessions/{chat['sid']}/export").json
    assert len(document["messages"]) == 6
    assert document["session"]["current_leaf_id"] == chat["edited"]["message_id"]
    by_id = {m["id"]: m for m in document["messages"]}
    assert by_id[chat["edited"]["user_message_id"]]["parent_id"] == chat["first"]["message_id"]
    imported = alice.post("/api/chat/sessions/import", json=document)
    assert imported.status_code == 201, imported.text
    path = alice.get(f"/api/chat/sessions/{imported.json['session_id']}/path").json["messages"]
    assert [m["content"] for m in path if m["role"] == "user"] == ["first kestrel", "edited bittern"]
    assert (path[2]["position"], path[2]["count"]) == (2, 2)

    # An export from before the tree (no parent ids, no leaf) imports as one path.
    for message in document["messages"]:
        message.pop("parent_id")
    document["session"].pop("current_leaf_id")
    old = alice.post("/api/chat/sessions/import", json=document)
    assert old.status_code == 201, old.text
    path = alice.get(f"/api/chat/sessions/{old.json['session_id']}/path").json["messages"]
    assert len(path) == 6 and all(m["count"] == 1 for m in path)
    assert [m["parent_id"] for m in path[1:]] == [m["id"] for m in path[:-1]]

    # A parent that names no earlier message is refused with a sentence.
    broken = json.loads(json.dumps(alice.get(f"/api/chat/sessions/{chat['sid']}/export").json))
    broken["messages"][1]["parent_id"] = "nowhere"
    refused = alice.post("/api/chat/sessions/import", json=broken)
    assert refused.status_code == 422 and "names no earlier message" in refused.json["message"]


def test_sessions_written_without_parents_are_adopted_before_they_branch(app, alice):
    earlier = utcnow() - timedelta(minutes=1)  # siblings are ordered by time: the seeded reply is older
    sid = add_session(
        app, "alice", title="Seeded", messages=conversation("old kestrel", "old answer"), created_at=earlier
    )
    with app.app_context():
        reply = db.session.execute(
            text("SELECT id FROM messages WHERE session_id = :s AND role = 'assistant'"), {"s": sid}
        ).scalar()
    response = alice.post(f"/api/chat/sessions/{sid}/messages/{reply}/regenerate")
    assert response.status_code == 202, response.text
    wait_ended(app, response.json["message_id"])
    path = alice.get(f"/api/chat/sessions/{sid}/path").json
    assert [m["role"] for m in path["messages"]] == ["user", "assistant"]
    assert path["messages"][1]["id"] == response.json["message_id"]
    assert (path["messages"][1]["position"], path["messages"][1]["count"]) == (2, 2)
    with app.app_context():
        assert db.session.get(ConversationSession, sid).current_leaf_id == response.json["message_id"]


def test_a_branched_session_can_be_deleted_whole(app, alice):
    chat = branched_session(app, alice)
    assert alice.delete(f"/api/chat/sessions/{chat['sid']}").status_code == 200
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM messages")).scalar() == 0
    fts_integrity(app)
