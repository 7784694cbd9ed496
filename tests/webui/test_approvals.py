"""Approvals in process: the reducer, answering (page and API) against stored rows, the review
page and both exports, and the import that restores them. (A real agent: test_approvals_live.py.)"""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from services.webui.approvals import clean_request
from services.webui.extensions import db
from services.webui.models import Approval, ConversationSession, Message, Run, new_id, utcnow
from services.webui.runs.bus import snapshot_event
from services.webui.runs.events import ReplyState, StreamEvent

from .test_sessions import add_session
from .test_sessions_transfer import export, without_changing_parts

REQUEST = {"approval_id": "ap-1", "title": "drop the table", "detail": "**Really** drop `users`?"}


def test_the_reducer_keeps_requests_and_decisions_and_a_snapshot_carries_them():
    state = ReplyState()
    state.apply(StreamEvent(1, "status_update", {"status": "executing"}))
    assert state.open_approval_id is None and state.approvals_version == 0
    state.apply(StreamEvent(2, "status_update", {"status": "awaiting_approval", "approval": REQUEST}))
    assert state.status == "awaiting_approval" and state.open_approval_id == "ap-1"
    decision = {"approval_id": "ap-1", "decision": "reject", "comment": None, "decided_by": "alice"}
    state.apply(StreamEvent(3, "approval", decision))
    assert state.open_approval_id is None
    assert state.approvals["ap-1"]["title"] == "drop the table" and state.approvals["ap-1"]["decision"] == "reject"
    assert state.approvals_version == 2
    late = ReplyState()
    late.apply(snapshot_event(state))
    assert late.approvals == state.approvals


@pytest.mark.parametrize(
    "value",
    [None, "x", {"title": "t"}, {"approval_id": "has space", "title": "t"}, {"approval_id": "a", "title": " "}],
)
def test_requests_switchboard_cannot_show_are_ignored(value):
    assert clean_request(value) is None


def test_a_request_is_cleaned():
    cleaned = clean_request({"approval_id": "a:1", "title": "  two\nlines ", "detail": 5, "extra": 1})
    assert cleaned == {"approval_id": "a:1", "title": "two lines", "detail": ""}


def live_request(app, username: str, status: str = "awaiting_approval") -> tuple[str, str]:
    """A session whose reply waits on REQUEST, driven (as far as anyone can tell) elsewhere."""
    session_id = add_session(app, username, title="Waiting", messages=[{"role": "user", "content": "Drop it"}])
    with app.app_context():
        now = utcnow()
        reply_id = new_id()
        db.session.add(
            Message(
                id=reply_id,
                session_id=session_id,
                role="assistant",
                agent_id="architect",
                content="",
                status=status,
                created_at=now + timedelta(seconds=5),
            )
        )
        db.session.flush()
        db.session.add(
            Run(
                message_id=reply_id,
                session_id=session_id,
                agent_id="architect",
                model_id="ref-standard",
                owner="elsewhere:1",
                beat_at=now,
                created_at=now,
                last_seq=10_000,
            )
        )
        db.session.execute(
            update(ConversationSession).where(ConversationSession.id == session_id).values(active_run_id=reply_id)
        )
        db.session.execute(insert(Approval.__table__).values(message_id=reply_id, requested_at=now, **REQUEST))
        db.session.commit()
    return session_id, reply_id


def stored(app, reply_id):
    with app.app_context():
        return db.session.get(Approval, (reply_id, "ap-1"))


def test_the_page_shows_the_request_and_the_composer_says_it_waits(app, alice):
    session_id, _ = live_request(app, "alice")
    page = alice.get(f"/chat/{session_id}").text
    assert "drop the table" in page and "<strong>Really</strong>" in page
    assert 'value="approve"' in page and 'value="reject"' in page
    assert "Architect is waiting for your answer above." in page
    typed = alice.post("/chat/send", data={"session_id": session_id, "agent_id": "architect", "content": "yes"})
    assert typed.status_code == 409 and "waiting for your answer" in typed.text


def test_answering_from_the_page_records_once_and_only_for_the_owner(app, alice, bob, make_user):
    session_id, reply_id = live_request(app, "alice")
    admin = make_user("root", role="admin")
    url = f"/chat/{session_id}/approvals/ap-1"
    for other in (bob, admin):
        assert other.post(url, data={"decision": "approve"}, headers={"HX-Request": "true"}).status_code == 404
    assert alice.client.post(url, data={"decision": "approve"}).status_code in (400, 403)  # no CSRF token
    assert stored(app, reply_id).decision is None
    response = alice.post(url, data={"decision": "approve", "comment": " fine "}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "Approved by alice" in response.text and 'id="composer-waiting"' in response.text
    # Nothing listens on the agent's port: the decision stands, and the page says the agent missed it.
    assert "the agent did not take it" in response.text and "not answering" in response.text
    row = stored(app, reply_id)
    assert (row.decision, row.comment, row.decider) == ("approve", "fine", "alice") and row.decided_at
    again = alice.post(url, data={"decision": "reject"}, headers={"HX-Request": "true"})
    assert again.status_code == 409 and "already answered: Approved by alice" in again.text
    assert stored(app, reply_id).decision == "approve"


def test_the_api_refuses_bad_bodies_unknown_requests_and_ended_runs(app, alice):
    session_id, reply_id = live_request(app, "alice")
    url = f"/api/chat/sessions/{session_id}/approvals/ap-1"
    assert alice.post(url, json={"decision": "maybe"}).status_code == 422
    assert alice.post(url, json={"decision": "approve", "comment": "x" * 2001}).status_code == 422
    assert alice.post(url, json={"decision": "approve", "comment": 5}).status_code == 422
    assert (
        alice.post(f"/api/chat/sessions/{session_id}/approvals/ap-2", json={"decision": "approve"}).status_code == 404
    )
    with app.app_context():
        db.session.execute(update(Run).where(Run.message_id == reply_id).values(ended_at=utcnow()))
        db.session.commit()
    ended = alice.post(url, json={"decision": "approve"})
    assert ended.status_code == 409 and "can no longer be answered" in ended.json["message"]
    assert stored(app, reply_id).decision is None


def decided_session(app) -> str:
    session_id = add_session(
        app,
        "alice",
        title="Approved",
        messages=[{"role": "user", "content": "Drop it"}, {"role": "assistant", "content": "Done."}],
    )
    with app.app_context():
        reply_id = db.session.scalar(
            select(Message.id).where(Message.session_id == session_id, Message.role == "assistant")
        )
        now = utcnow()
        db.session.execute(
            insert(Approval.__table__).values(
                message_id=reply_id,
                requested_at=now,
                decision="approve",
                comment="<b>ok</b> then",
                decider="alice",
                decided_at=now + timedelta(seconds=3),
                **REQUEST,
            )
        )
        db.session.commit()
    return session_id


def test_review_page_and_both_exports_show_the_request_and_the_decision(app, alice):
    session_id = decided_session(app)
    review = alice.get(f"/sessions/{session_id}").text
    assert "drop the table" in review and "Approved by alice" in review and "&lt;b&gt;ok&lt;/b&gt; then" in review
    document = export(alice, session_id).json
    (approval,) = document["messages"][1]["approvals"]
    assert approval["decision"] == "approve" and approval["decided_by"] == "alice"
    assert approval["title"] == "drop the table" and approval["detail"] == REQUEST["detail"]
    assert approval["decided_at"].endswith("Z") and approval["comment"] == "<b>ok</b> then"
    assert "approvals" not in document["messages"][0]
    markdown = export(alice, session_id, "md").text
    assert "**Approval requested** · " in markdown and ": drop the table" in markdown
    assert "**Approved by alice · " in markdown and "&lt;b&gt;ok&lt;/b&gt; then" in markdown
    assert "**Really** drop `users`?" in markdown  # the detail, fenced


def test_import_restores_what_the_export_wrote(app, alice, bob):
    session_id = decided_session(app)
    first = export(alice, session_id).json
    response = bob.post("/api/chat/sessions/import", json=first)
    assert response.status_code == 201, response.text
    second = export(bob, response.json["session_id"]).json
    assert without_changing_parts(second)["messages"] == without_changing_parts(first)["messages"]
    assert "Approved by alice" in bob.get(f"/sessions/{response.json['session_id']}").text


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m[1]["approvals"][0].update(decision="maybe"), "decision must be approve, reject or null"),
        (lambda m: m[1]["approvals"][0].update(approval_id="bad id"), "approval_id must be a unique id"),
        (lambda m: m[1]["approvals"][0].update(title=""), "title must be text"),
        (lambda m: m[1]["approvals"][0].update(decided_at=None), "decided_at must be a timestamp"),
        (lambda m: m[1]["approvals"].append(dict(m[1]["approvals"][0])), "must be a unique id"),
        (lambda m: m[0].update(approvals=m[1]["approvals"]), "only replies (role assistant) ask"),
        (lambda m: m[1].update(approvals="yes"), "must be a list"),
    ],
)
def test_an_import_with_bad_approvals_is_refused(app, alice, change, fragment):
    document = copy.deepcopy(export(alice, decided_session(app)).json)
    change(document["messages"])
    response = alice.post("/api/chat/sessions/import", json=document)
    assert response.status_code == 422 and fragment in response.json["message"], response.json


@pytest.mark.parametrize(
    "seconds, words", [(3600, "1 h"), (5400, "1.5 h"), (90, "1.5 min"), (2, "2 s"), (0.5, "0.5 s")]
)
def test_the_approval_timeout_sentence_names_the_wait(seconds, words):
    from services.gateway.transport import approval_too_long

    assert approval_too_long(seconds) == f"Nobody answered the approval request within {words}; the agent was stopped."
