"""Approvals end to end through the JSON API: a real reference agent asks (`@@approval="…"`),
gunicorn serves the app, and the agent's own record (`GET /tasks/{id}`) proves what it received.

A small AGENT_IDLE_TIMEOUT shows that a waiting run is not ended as idle; a small
APPROVAL_TIMEOUT shows that an unanswered one ends with a sentence and its task stopped.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest
import requests
import sseclient

from ..servers import BIN, ROOT, LiveStack
from ..support import wait_for

pytestmark = pytest.mark.slow

IDLE_TIMEOUT = 1.5
APPROVAL_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"AGENT_IDLE_TIMEOUT": str(IDLE_TIMEOUT), "APPROVAL_TIMEOUT": str(APPROVAL_TIMEOUT)}
    with LiveStack(tmp_path_factory.mktemp("approvals"), env_overrides=env) as stack:
        stack.add_user("mallory", "mallory-password-123")
        subprocess.run(
            [str(BIN / "flask"), "users", "create", "root", "--admin", "--password", "root-password-1234"],
            cwd=ROOT,
            env=stack.env,
            check=True,
            capture_output=True,
        )
        yield stack


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def send(api, content):
    response = api.post("/api/chat/message", json={"agent_id": "dir-code", "content": content})
    assert response.status_code == 202, response.text
    return response.json()


def task(stack, task_id):
    return requests.get(f"{stack.agent_url('dir-code')}/tasks/{task_id}", timeout=5).json()


def approval_row(stack, message_id):
    with sqlite3.connect(stack.db_path) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM approvals WHERE message_id = ?", (message_id,)).fetchone()


def message_row(stack, message_id):
    with sqlite3.connect(stack.db_path) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()


def read_until(api, url, stop, timeout=30):
    """The JSON stream's events up to the first one `stop` accepts (or done)."""
    response = api.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=timeout)
    events = []
    try:
        for event in sseclient.SSEClient(response).events():
            events.append((event.event, json.loads(event.data), int(event.id)))
            if event.event == "done" or stop(events[-1]):
                break
    finally:
        response.close()
    return events


def requested(api, sent):
    """Read the stream until the approval request arrives; returns its approval object."""
    events = read_until(api, sent["stream_url"], lambda e: e[0] == "status_update" and "approval" in e[1])
    kind, data, _ = events[-1]
    assert kind == "status_update" and data["status"] == "awaiting_approval", events
    return data["approval"]


def answer(client, sent, approval_id, decision, comment=None):
    url = f"/api/chat/sessions/{sent['session_id']}/approvals/{approval_id}"
    return client.post(url, json={"decision": decision, "comment": comment})


def final(stack, message_id):
    return wait_for(lambda: (row := message_row(stack, message_id)) and row["status"] not in LIVE and row)


LIVE = ("pending", "streaming", "planning", "executing", "awaiting_approval")


def test_approve_goes_on_and_the_agent_receives_exactly_one_decision(stack, api):
    sent = send(api, 'Tidy the release notes @@approval="delete the old branches" @@tokens=20')
    approval = requested(api, sent)
    assert approval["title"] == "delete the old branches" and "wants to" in approval["detail"]
    # Stored before anyone saw it, and open.
    row = approval_row(stack, sent["message_id"])
    assert row["approval_id"] == approval["approval_id"] and row["decision"] is None
    wait_for(lambda: message_row(stack, sent["message_id"])["status"] == "awaiting_approval")

    response = answer(api, sent, approval["approval_id"], "approve", "go ahead")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "approve" and body["decided_by"] == stack.username and body["delivered"] is True

    second = answer(api, sent, approval["approval_id"], "reject")
    assert second.status_code == 409 and "already answered" in second.json()["message"]

    reply = final(stack, sent["message_id"])
    assert reply["status"] == "complete" and "Code Director" in reply["content"]
    row = approval_row(stack, sent["message_id"])
    assert (row["decision"], row["comment"], row["decider"]) == ("approve", "go ahead", stack.username)
    assert row["decided_at"] is not None
    record = task(stack, sent["message_id"])
    assert record["status"] == "complete" and record["tokens_sent"] == 20
    assert record["approvals"] == [
        {"approval_id": approval["approval_id"], "decision": "approve", "comment": "go ahead"}
    ]

    # After the end: still one decision, and 409 with a sentence.
    late = answer(api, sent, approval["approval_id"], "approve")
    assert late.status_code == 409
    assert len(task(stack, sent["message_id"])["approvals"]) == 1

    # The whole stream, replayed: request, then the decision (who, when), then the reply.
    events = read_until(api, sent["stream_url"], lambda e: False)
    kinds = [kind for kind, _, _ in events]
    decided = next(data for kind, data, _ in events if kind == "approval")
    assert decided["decision"] == "approve" and decided["decided_by"] == stack.username
    assert kinds.index("approval") < kinds.index("token") and kinds[-2:] == ["usage", "done"]


def test_reject_ends_the_reply_with_a_sentence_saying_it_was_not_done(stack, api):
    sent = send(api, 'Clean up @@approval="drop the staging database"')
    approval = requested(api, sent)
    response = answer(api, sent, approval["approval_id"], "reject", "not today")
    assert response.status_code == 200 and response.json()["decision"] == "reject"
    reply = final(stack, sent["message_id"])
    assert reply["status"] == "complete"
    assert "I did not do it" in reply["content"] and "drop the staging database" in reply["content"]
    assert [d["decision"] for d in task(stack, sent["message_id"])["approvals"]] == ["reject"]


def test_only_the_owner_may_answer_others_and_the_admin_get_404(stack, api):
    sent = send(api, 'Ship it @@approval="deploy to production"')
    approval = requested(api, sent)
    for username, password in (("mallory", "mallory-password-123"), ("root", "root-password-1234")):
        other = stack.login(username, password)
        response = answer(other, sent, approval["approval_id"], "approve")
        assert response.status_code == 404, (username, response.text)
    unknown = answer(api, sent, "no-such-request", "approve")
    assert unknown.status_code == 404 and "no such approval request" in unknown.json()["message"]
    bad = answer(api, sent, approval["approval_id"], "maybe")
    assert bad.status_code == 422
    no_csrf = requests.post(
        f"{stack.base_url}/api/chat/sessions/{sent['session_id']}/approvals/{approval['approval_id']}",
        json={"decision": "approve"},
        cookies=api.cookies,
        timeout=5,
    )
    assert no_csrf.status_code in (400, 403)
    assert task(stack, sent["message_id"])["approvals"] == []
    assert approval_row(stack, sent["message_id"])["decision"] is None
    assert answer(api, sent, approval["approval_id"], "approve").status_code == 200
    assert final(stack, sent["message_id"])["status"] == "complete"


def test_stop_while_waiting_ends_cancelled_and_the_agent_task_ends(stack, api):
    sent = send(api, 'Migrate @@approval="rewrite the users table"')
    approval = requested(api, sent)
    response = api.post(f"/api/chat/sessions/{sent['session_id']}/cancel")
    assert response.status_code in (200, 202), response.text
    assert final(stack, sent["message_id"])["status"] == "cancelled"
    record = wait_for(lambda: (t := task(stack, sent["message_id"])) and t["status"] != "running" and t)
    assert record["status"] == "cancelled" and record["approvals"] == []
    late = answer(api, sent, approval["approval_id"], "approve")
    assert late.status_code == 409 and "ended" in late.json()["message"]
    assert task(stack, sent["message_id"])["approvals"] == []


def test_the_idle_timeout_does_not_apply_while_waiting(stack, api):
    sent = send(api, 'Rotate keys @@approval="rotate the API keys" @@tokens=10')
    approval = requested(api, sent)
    time.sleep(IDLE_TIMEOUT * 2.5)  # silent well past the idle timeout
    assert message_row(stack, sent["message_id"])["status"] == "awaiting_approval"
    assert answer(api, sent, approval["approval_id"], "approve").status_code == 200
    reply = final(stack, sent["message_id"])
    assert reply["status"] == "complete" and reply["error"] is None


def test_an_unanswered_request_ends_after_the_approval_timeout(stack, api):
    sent = send(api, 'Archive @@approval="archive last year"')
    approval = requested(api, sent)
    reply = final(stack, sent["message_id"])
    assert reply["status"] == "error"
    assert (
        reply["error"] == f"Nobody answered the approval request within {APPROVAL_TIMEOUT:g} s; the agent was stopped."
    )
    record = wait_for(lambda: (t := task(stack, sent["message_id"])) and t["status"] != "running" and t)
    assert record["status"] == "cancelled" and record["approvals"] == []
    assert answer(api, sent, approval["approval_id"], "approve").status_code == 409


def test_an_answer_on_another_server_reaches_the_agent_and_every_stream(stack, api):
    """The answer lands on a server that does not drive the run: it records and forwards it, and
    the driving server's stream carries the decision once the agent goes on."""
    other_url = stack.start_extra_server()
    sent = send(api, 'Rebuild @@approval="rebuild the search index" @@tokens=10')
    approval = requested(api, sent)
    elsewhere = stack.login()
    elsewhere.base_url = other_url
    response = answer(elsewhere, sent, approval["approval_id"], "approve", "from the other server")
    assert response.status_code == 200 and response.json()["delivered"] is True, response.text
    events = read_until(api, sent["stream_url"], lambda e: False)
    decided = [data for kind, data, _ in events if kind == "approval"]
    assert [(d["decision"], d["comment"]) for d in decided] == [("approve", "from the other server")]
    assert events[-1][1]["status"] == "complete"
    assert len(task(stack, sent["message_id"])["approvals"]) == 1


def test_the_reference_agents_approval_endpoint(stack, api):
    sent = send(api, 'Prune @@approval="prune the caches" @@tokens=5')
    approval = requested(api, sent)
    base = f"{stack.agent_url('dir-code')}/tasks/{sent['message_id']}/approvals"
    assert requests.post(f"{base}/nope", json={"decision": "approve"}, timeout=5).status_code == 404
    assert requests.post(f"{base}/{approval['approval_id']}", json={"decision": "x"}, timeout=5).status_code == 400
    unknown_task = f"{stack.agent_url('dir-code')}/tasks/nope/approvals/{approval['approval_id']}"
    assert requests.post(unknown_task, json={"decision": "approve"}, timeout=5).status_code == 404
    assert answer(api, sent, approval["approval_id"], "approve").status_code == 200
    direct = requests.post(f"{base}/{approval['approval_id']}", json={"decision": "reject"}, timeout=5)
    assert direct.status_code == 409
    assert final(stack, sent["message_id"])["status"] == "complete"
    assert [d["decision"] for d in task(stack, sent["message_id"])["approvals"]] == ["approve"]
