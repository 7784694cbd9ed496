"""What the agent receives (chat/context.py): the cut where the budget cuts, the marker there,
summaries and fresh contexts in place of what they cover, the 422 for a message that cannot fit,
and tokenizers that never download. No agent listens: runs are held and what would be sent to
the agent is captured (the end-to-end check with the reference agent is tests/browser/test_context.py).
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.gateway.health import HealthResult
from services.webui.chat import tokens
from services.webui.chat.context import HISTORY_BOUND, SUMMARY_INSTRUCTION, SUMMARY_PREFIX
from services.webui.extensions import db
from services.webui.models import ConversationSession, Message, User, new_id, utcnow
from services.webui.runs import run_manager

from ..support import free_port, write_registry

HX = {"HX-Request": "true"}
# A 400-token window keeps 100 for the reply (CONTEXT_REPLY_RESERVE 0.25): 300 for the history.
# A 200-character message is estimated at 50 + 4 (framing) = 54 tokens, so five fit, not six.
TINY = 400
TEXT = 200


@pytest.fixture
def agents_file(tmp_path):
    models = [
        ("tiny", TINY),
        ("exact", TINY, "cl100k_base"),
        ("odd", TINY, "no_such_encoding"),
        ("ref-standard", 32768),
    ]
    return write_registry(
        tmp_path / "agents.toml",
        [{"agent_id": "architect", "port": free_port(), "models": models}],
    )


@pytest.fixture
def agents_up(app, monkeypatch):
    checker = app.extensions["switchboard.health"]
    monkeypatch.setattr(checker, "check", lambda agent: HealthResult("up", None, time.monotonic()))


@pytest.fixture
def sent_to_agent(app, monkeypatch):
    """Runs that never start; each launch's messages (what the agent would receive) are recorded."""
    manager = run_manager(app)
    captured: list[list[dict]] = []
    monkeypatch.setattr(manager, "launch", lambda live, messages: captured.append(messages))
    yield captured
    for live in manager.live_runs():
        manager.abandon(live)


def text(label: str) -> str:
    """A message of exactly TEXT characters that starts with its label."""
    return (label + " " + "x" * TEXT)[:TEXT]


def make_session(app, username="alice", *, model_id="tiny", turns=8, extra=()):
    """A session of `turns` alternating messages m0, m1, … (oldest first), then `extra` rows
    [(role, message_type, content, status)]; returns (session id, message ids in order)."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        now = utcnow() - timedelta(minutes=5)
        session = ConversationSession(
            id=new_id(),
            user_id=user.id,
            agent_id="architect",
            agent_name="Architect",
            parent_role="",
            model_id=model_id,
            title="Long chat",
            created_at=now,
            updated_at=now,
        )
        db.session.add(session)
        rows = [("user" if i % 2 == 0 else "assistant", "chat", text(f"m{i}"), "complete") for i in range(turns)]
        ids = []
        for index, (role, message_type, content, status) in enumerate([*rows, *extra]):
            message = Message(
                id=new_id(),
                session_id=session.id,
                role=role,
                message_type=message_type,
                agent_id="architect",
                content=content,
                status=status,
                created_at=now + timedelta(milliseconds=index),
            )
            db.session.add(message)
            ids.append(message.id)
        db.session.commit()
        return session.id, ids


def labels(messages: list[dict]) -> list[str]:
    return [m["content"].split()[0] if m["role"] != "system" else "summary" for m in messages]


# ---- tokenizers -------------------------------------------------------------------------------------


def test_cl100k_loads_from_the_installed_package_without_any_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tokenizer tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    encoding = tokens.load_bundled("cl100k_base")
    assert encoding is not None
    assert encoding.encode_ordinary("hello world") == [15339, 1917]  # the published cl100k ids
    counter = tokens.Tokenizers().counter("cl100k_base")
    assert counter.exact and counter.name == "cl100k_base"
    assert counter.count("The quick brown fox jumps over the lazy dog.") == 10


def test_unknown_or_missing_tokenizers_fall_back_to_the_labelled_estimate():
    table = tokens.Tokenizers()
    for name in (None, "", "no_such_encoding"):
        counter = table.counter(name)
        assert counter.name == "estimate" and not counter.exact
        assert counter.count("x" * 9) == 3  # ceil(9 / 4)
    assert tokens.load_bundled("o200k_base") is None  # not shipped by any installed package


def test_a_worker_preloads_the_registrys_tokenizers_once(app, monkeypatch):
    from services.webui.chat.tokens import preload_registry, tokenizers

    preload_registry(app)  # the registry of this module names cl100k_base and an unknown encoding
    monkeypatch.setattr(tokens, "load_bundled", lambda name: pytest.fail(f"{name} loaded again"))
    with app.app_context():
        assert tokenizers().counter("cl100k_base").exact
        assert not tokenizers().counter("no_such_encoding").exact


def test_a_tampered_encoding_file_is_not_used(monkeypatch):
    monkeypatch.setitem(tokens.BUNDLED, "cl100k_base", {**tokens.BUNDLED["cl100k_base"], "sha256": "0" * 64})
    assert tokens.load_bundled("cl100k_base") is None


# ---- the plan and the marker ------------------------------------------------------------------------


def test_the_cut_falls_exactly_where_the_budget_runs_out(app, alice, agents_up):
    sid, ids = make_session(app)
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert (plan["window"], plan["reserve"], plan["budget"]) == (TINY, 100, 300)
    assert plan["tokenizer"] == "estimate" and plan["exact"] is False
    sent = [m["sent"] for m in plan["messages"]]
    assert sent == [False, False, False, True, True, True, True, True]  # 5 × 54 = 270 ≤ 300 < 6 × 54
    assert all(m["tokens"] == 54 for m in plan["messages"][3:])
    assert plan["used"] == 270
    assert plan["cut"] == {"reason": "budget", "before_message_id": ids[3], "hidden_messages": 3, "older_unread": False}

    html = alice.get(f"/chat/{sid}").text
    marker = html.index('id="context-marker"')
    assert html.rindex(f'id="msg-{ids[2]}"', 0, marker) and html.index(f'id="msg-{ids[3]}"') > marker
    assert html.count('id="context-marker"') == 1
    assert "The agent no longer sees the 3 messages above." in re.sub(r"\s+", " ", html)
    assert 'value="270"' in html and "(estimate)" in html  # the gauge counts what is sent
    with app.app_context():  # counted once, then read back
        stored = db.session.execute(
            select(Message.token_count, Message.token_counter).where(Message.id == ids[7])
        ).one()
    assert tuple(stored) == (54, "estimate")


def test_choosing_another_model_moves_the_marker_with_the_gauge(app, alice, agents_up):
    sid, ids = make_session(app)
    roomy = alice.get(f"/chat/gauge?session_id={sid}&model_id=ref-standard", headers=HX).text
    assert 'id="context-gauge"' in roomy and 'hx-swap-oob="delete:#context-marker"' in roomy
    assert 'id="context-marker"' not in roomy  # everything fits the larger window
    tight = alice.get(f"/chat/gauge?session_id={sid}&model_id=tiny", headers=HX).text
    assert f'hx-swap-oob="beforebegin:#msg-{ids[3]}"' in tight and 'id="context-marker"' in tight


def test_no_marker_while_everything_fits(app, alice, agents_up):
    sid, _ = make_session(app, turns=4)
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert all(m["sent"] for m in plan["messages"]) and plan["cut"]["before_message_id"] is None
    assert 'id="context-marker"' not in alice.get(f"/chat/{sid}").text


def test_a_real_tokenizer_counts_when_the_registry_names_one(app, alice, agents_up):
    sid, _ = make_session(app, model_id="exact", turns=2)
    plan = alice.get(f"/api/chat/sessions/{sid}/context?model_id=exact").json
    assert plan["tokenizer"] == "cl100k_base" and plan["exact"] is True
    counter = tokens.Tokenizers().counter("cl100k_base")
    assert plan["messages"][0]["tokens"] == counter.count(text("m0")) + tokens.MESSAGE_OVERHEAD_TOKENS
    odd = alice.get(f"/api/chat/sessions/{sid}/context?model_id=odd").json
    assert odd["tokenizer"] == "estimate" and odd["exact"] is False
    assert alice.get(f"/api/chat/sessions/{sid}/context?model_id=nope").status_code == 422


def test_the_agent_receives_exactly_the_plan_with_the_new_message(app, alice, agents_up, sent_to_agent):
    sid, _ = make_session(app)
    response = alice.post(
        "/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": text("new")}
    )
    assert response.status_code == 202
    # The new message takes 54 of the 300: four earlier ones still fit (4 × 54 = 216 ≤ 246).
    assert labels(sent_to_agent[0]) == ["m4", "m5", "m6", "m7", "new"]
    assert [m["role"] for m in sent_to_agent[0]] == ["user", "assistant", "user", "assistant", "user"]


def test_a_message_that_cannot_fit_is_refused_before_anything_is_saved(app, alice, agents_up, sent_to_agent):
    sid, _ = make_session(app)
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(Message))
    response = alice.post("/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": "y" * 1200})
    assert response.status_code == 422
    assert "at most 300" in response.json["message"] and "about 304 tokens" in response.json["message"]
    new_chat = alice.post(
        "/api/chat/message", json={"agent_id": "architect", "model_id": "tiny", "content": "y" * 1200}
    )
    assert new_chat.status_code == 422
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == before
        assert db.session.scalar(select(func.count()).select_from(ConversationSession)) == 1
        assert db.session.get(ConversationSession, sid).active_run_id is None
    assert sent_to_agent == []
    page = alice.post(
        "/chat/send", data={"agent_id": "architect", "session_id": sid, "content": "y" * 1200}, headers=HX
    )
    assert page.status_code == 422 and "Shorten it" in page.text


# ---- summaries ----------------------------------------------------------------------------------------


def test_a_summary_replaces_the_turns_it_covers(app, alice, agents_up, sent_to_agent):
    summary = ("assistant", "summary", "Briefing: we chose plan B.", "complete")
    later = [("user", "chat", text("m8"), "complete"), ("assistant", "chat", text("m9"), "complete")]
    sid, ids = make_session(app, turns=4, extra=[summary, *later])
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert [m["sent"] for m in plan["messages"]] == [False] * 4 + [True, True, True]
    assert plan["cut"]["reason"] == "summary" and plan["cut"]["before_message_id"] == ids[4]
    assert plan["cut"]["hidden_messages"] == 4

    alice.post("/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": "next"})
    received = sent_to_agent[0]
    assert received[0] == {"role": "system", "content": SUMMARY_PREFIX + "Briefing: we chose plan B."}
    assert labels(received) == ["summary", "m8", "m9", "next"]
    html = re.sub(r"\s+", " ", alice.get(f"/chat/{sid}").text)
    assert "The agent no longer sees the 4 messages above. The summary below stands in for them." in html
    assert "Summary of earlier messages" in html and "Edit summary" in html


def test_summarize_runs_the_agent_on_what_it_sees_and_holds_the_session(app, alice, bob, agents_up, sent_to_agent):
    sid, _ = make_session(app)
    assert bob.post(f"/api/chat/sessions/{sid}/summarize").status_code == 404
    assert alice.client.post(f"/api/chat/sessions/{sid}/summarize").status_code == 400  # no CSRF token
    response = alice.post(f"/api/chat/sessions/{sid}/summarize")
    assert response.status_code == 202
    summary_id = response.json["message_id"]
    assert response.json["stream_url"] == f"/api/chat/stream/{sid}"
    # The instruction counts against the budget too: four of the earlier messages fit beside it.
    assert sent_to_agent[0][-1] == {"role": "user", "content": SUMMARY_INSTRUCTION}
    assert labels(sent_to_agent[0][:-1]) == ["m4", "m5", "m6", "m7"]
    with app.app_context():
        message = db.session.get(Message, summary_id)
        assert (message.message_type, message.role, message.status) == ("summary", "assistant", "pending")
        assert db.session.get(ConversationSession, sid).active_run_id == summary_id
    # One run at a time, whichever kind.
    assert alice.post(f"/api/chat/sessions/{sid}/summarize").status_code == 409
    assert alice.post(f"/api/chat/sessions/{sid}/context-reset").status_code == 409
    busy = alice.post("/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": "hi"})
    assert busy.status_code == 409


def test_a_summary_is_editable_and_removable(app, alice, bob, agents_up, sent_to_agent):
    sid, ids = make_session(app, turns=2, extra=[("assistant", "summary", "Old briefing.", "complete")])
    summary_id, chat_id = ids[2], ids[0]
    url = f"/api/chat/sessions/{sid}/messages/{summary_id}"
    assert bob.put(url, json={"content": "mine"}).status_code == 404
    assert alice.put(url, json={"content": "  "}).status_code == 422
    assert alice.put(f"/api/chat/sessions/{sid}/messages/{chat_id}", json={"content": "x"}).status_code == 422
    assert alice.put(f"/api/chat/sessions/{sid}/messages/nope", json={"content": "x"}).status_code == 404
    edited = alice.put(url, json={"content": "New briefing."})
    assert edited.status_code == 200 and edited.json["content"] == "New briefing."
    alice.post("/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": "go"})
    assert sent_to_agent[-1][0]["content"] == SUMMARY_PREFIX + "New briefing."
    for live in run_manager(app).live_runs():
        run_manager(app).abandon(live)
    with app.app_context():
        db.session.get(ConversationSession, sid).active_run_id = None
        db.session.commit()
    assert alice.delete(f"/api/chat/sessions/{sid}/messages/{chat_id}").status_code == 422
    assert alice.delete(url).status_code == 200
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert plan["cut"]["reason"] is None and all(m["message_type"] == "chat" for m in plan["messages"])


# ---- fresh context ----------------------------------------------------------------------------------


def test_a_fresh_context_cuts_everything_before_it_and_can_be_undone(app, alice, bob, agents_up, sent_to_agent):
    sid, _ = make_session(app, turns=2)
    assert bob.post(f"/api/chat/sessions/{sid}/context-reset").status_code == 404
    created = alice.post(f"/api/chat/sessions/{sid}/context-reset")
    assert created.status_code == 201
    marker_id = created.json["message_id"]
    alice.post("/api/chat/message", json={"agent_id": "architect", "session_id": sid, "content": "fresh start"})
    assert sent_to_agent[0] == [{"role": "user", "content": "fresh start"}]
    html = alice.get(f"/chat/{sid}").text
    assert f'id="msg-{marker_id}" class="context-reset"' in html and "nothing above this line" in html
    assert 'id="context-marker"' not in html  # the divider is the marker
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert plan["cut"]["reason"] == "context_reset" and plan["cut"]["hidden_messages"] == 2

    for live in run_manager(app).live_runs():
        run_manager(app).abandon(live)
    with app.app_context():
        db.session.get(ConversationSession, sid).active_run_id = None
        db.session.commit()
    assert alice.delete(f"/api/chat/sessions/{sid}/messages/{marker_id}").status_code == 200
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert plan["cut"]["reason"] is None and all(m["sent"] for m in plan["messages"])


def test_the_page_forms_reset_and_summarize_and_answer_with_the_chat_area(app, alice, agents_up, sent_to_agent):
    sid, _ = make_session(app, turns=2)
    page = alice.get(f"/chat/{sid}").text
    assert "Summarize earlier messages" in page and "Start fresh context here" in page
    reset = alice.post(f"/chat/{sid}/context-reset", headers=HX)
    assert reset.status_code == 200 and 'class="context-reset"' in reset.text and 'id="chat"' in reset.text
    assert alice.post(f"/chat/{sid}/context-reset").status_code == 303  # without htmx: back to the page
    # Nothing sent since the fresh context: nothing to summarize, said in the tools' error box.
    refused = alice.post(f"/chat/{sid}/summarize", headers=HX)
    assert refused.status_code == 409 and "nothing new to summarize" in refused.text


# ---- bounds, export and import ------------------------------------------------------------------------


def test_only_the_newest_messages_are_read_and_the_marker_says_older_ones_exist(app, alice, agents_up):
    sid, ids = make_session(app, model_id="ref-standard", turns=HISTORY_BOUND + 3)
    plan = alice.get(f"/api/chat/sessions/{sid}/context").json
    assert len(plan["messages"]) == HISTORY_BOUND and plan["cut"]["older_unread"] is True
    assert plan["cut"]["before_message_id"] == ids[3] and plan["cut"]["hidden_messages"] == 0
    html = re.sub(r"\s+", " ", alice.get(f"/chat/{sid}").text)
    assert f"The agent no longer sees the messages above: only the newest {HISTORY_BOUND} are ever sent." in html


def test_summaries_and_fresh_contexts_survive_export_and_import(app, alice, agents_up):
    extra = [("assistant", "summary", "Briefing.", "complete"), ("system", "context_reset", "", "complete")]
    sid, _ = make_session(app, turns=2, extra=extra)
    exported = alice.get(f"/api/chat/sessions/{sid}/export").json
    assert [m["message_type"] for m in exported["messages"]] == ["chat", "chat", "summary", "context_reset"]
    imported = alice.post("/api/chat/sessions/import", json=exported)
    assert imported.status_code == 201, imported.json
    new_sid = imported.json["session_id"]
    plan = alice.get(f"/api/chat/sessions/{new_sid}/context").json
    assert [m["message_type"] for m in plan["messages"]] == ["chat", "chat", "summary", "context_reset"]
    assert plan["cut"]["reason"] == "context_reset"
    review = alice.get(f"/sessions/{new_sid}").text
    assert "Summary of earlier messages" in review and "Fresh context" in review
    assert json.dumps(exported)  # the export is plain JSON


# ---- automatic summary ---------------------------------------------------------------------------------


def test_an_automatic_summary_starts_past_the_threshold_and_only_then(app, alice, agents_up, sent_to_agent):
    from services.webui.chat.context_actions import auto_summarize_after
    from services.webui.runs.driver import LiveRun

    sid, ids = make_session(app, turns=4)  # 4 × 54 = 216 of 300 tokens: 72 %
    with app.app_context():
        agent = app.extensions["switchboard.registry"].current().get("architect")
    ended = LiveRun(ids[-1], sid, agent, "tiny")
    assert auto_summarize_after(app, ended) is None  # off by default
    app.config["CONTEXT_AUTO_SUMMARY"] = 0.8
    assert auto_summarize_after(app, ended) is None  # 72 % < 80 %
    app.config["CONTEXT_AUTO_SUMMARY"] = 0.7
    summary_id = auto_summarize_after(app, ended)
    assert summary_id is not None and sent_to_agent[-1][-1]["content"] == SUMMARY_INSTRUCTION
    with app.app_context():
        assert db.session.get(Message, summary_id).message_type == "summary"
    # Never after a summary's own run (no loop), and not while a run holds the session.
    assert auto_summarize_after(app, LiveRun(summary_id, sid, agent, "tiny")) is None
    assert auto_summarize_after(app, ended) is None


def test_the_run_manager_calls_its_end_hooks_after_a_run(app, monkeypatch):
    from services.webui.runs.driver import LiveRun

    manager = run_manager(app)
    seen = []
    monkeypatch.setattr(manager.driver, "drive", lambda run: None)
    monkeypatch.setattr(manager, "on_end", [seen.append, lambda run: 1 / 0])  # a failing hook is only logged
    with app.app_context():
        agent = app.extensions["switchboard.registry"].current().get("architect")
    run = LiveRun("r1", None, agent, "tiny")
    manager._drive(run)
    assert seen == [run]


def test_a_busy_database_only_means_counting_again(app, alice, agents_up, monkeypatch):
    from services.webui.chat import context
    from services.webui.database import DatabaseUnavailable

    sid, ids = make_session(app, turns=2)

    def busy(*args, **kwargs):
        raise DatabaseUnavailable()

    monkeypatch.setattr(context, "update", busy)
    assert alice.get(f"/chat/{sid}").status_code == 200
    assert alice.get(f"/api/chat/sessions/{sid}/context").json["used"] == 108
    with app.app_context():
        assert db.session.get(Message, ids[0]).token_count is None
