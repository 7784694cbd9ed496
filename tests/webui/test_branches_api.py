"""Conversation control through the JSON API against live reference agents (tests/servers.py):
retry after an error, an interruption and a stop; continue; regenerate; edit makes a branch and
the agent receives exactly the new path; switching siblings changes what is sent next; branch
into a new chat (same agent: a copy; another agent: a handoff).

`@@echo_context` makes the reference agent answer with what it was sent, one line a message:
"- role: first words" (directives left out); `lines` drops the leading "- ".
"""

from __future__ import annotations

import time

import pytest

from ..servers import LiveStack

FAST = "@@delay_ms=1 @@first_token_ms=1"
FINAL = ("complete", "cancelled", "error", "interrupted")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LiveStack(tmp_path_factory.mktemp("branches")) as stack:
        stack.add_user("mallory", "mallory-password-123")
        yield stack


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def send(api, content, session_id=None, agent_id="architect", **extra):
    body = {"agent_id": agent_id, "content": content, "session_id": session_id, **extra}
    response = api.post("/api/chat/message", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def path(api, session_id) -> dict:
    response = api.get(f"/api/chat/sessions/{session_id}/path")
    assert response.status_code == 200, response.text
    return response.json()


def wait_final(api, session_id, message_id, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {m["id"]: m for m in path(api, session_id)["messages"]}.get(message_id)
        if found is not None and found["status"] in FINAL:
            return found
        time.sleep(0.1)
    raise AssertionError(f"reply {message_id} did not end")


def wait_writing(api, session_id, message_id, timeout=30.0) -> dict:
    """Until the live reply has some text stored."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = {m["id"]: m for m in path(api, session_id)["messages"]}.get(message_id)
        if found is not None and found["content"] and found["status"] not in FINAL:
            return found
        time.sleep(0.05)
    raise AssertionError(f"reply {message_id} never had text while live: {found}")


def lines(reply: dict) -> list[str]:
    return [line.removeprefix("- ") for line in reply["content"].strip().splitlines()]


def action(api, session_id, message_id, name, **body):
    url = f"/api/chat/sessions/{session_id}/messages/{message_id}/{name}"
    return api.post(url, json=body) if body else api.post(url)


def turn(api, content, session_id=None, **extra) -> dict:
    sent = send(api, content, session_id, **extra)
    reply = wait_final(api, sent["session_id"], sent["message_id"])
    return {**sent, "reply": reply}


def test_edit_makes_a_branch_and_the_agent_receives_exactly_the_new_path(api):
    first = turn(api, f"first question @@echo_context {FAST}")
    sid = first["session_id"]
    assert lines(first["reply"]) == ["user: first question"]
    second = turn(api, f"second question @@echo_context {FAST}", sid)
    assert lines(second["reply"]) == [
        "user: first question",
        "assistant: - user: first question",
        "user: second question",
    ]

    response = action(api, sid, second["user_message_id"], "edit", content=f"changed question @@echo_context {FAST}")
    assert response.status_code == 202, response.text
    edited = response.json()
    reply = wait_final(api, sid, edited["message_id"])
    assert lines(reply) == ["user: first question", "assistant: - user: first question", "user: changed question"]

    shown = path(api, sid)
    assert [m["id"] for m in shown["messages"]] == [
        first["user_message_id"],
        first["message_id"],
        edited["user_message_id"],
        edited["message_id"],
    ]
    assert shown["current_leaf_id"] == edited["message_id"]
    user_turn = shown["messages"][2]
    assert (user_turn["position"], user_turn["count"]) == (2, 2)
    assert user_turn["sibling_ids"] == [second["user_message_id"], edited["user_message_id"]]
    assert user_turn["parent_id"] == first["message_id"]

    # Switching back to the first version shows its reply, and what is sent next follows it.
    switched = action(api, sid, second["user_message_id"], "switch")
    assert switched.status_code == 200, switched.text
    assert [m["id"] for m in switched.json()["messages"]][2:] == [second["user_message_id"], second["message_id"]]
    third = turn(api, f"third question @@echo_context {FAST}", sid)
    assert lines(third["reply"]) == [
        "user: first question",
        "assistant: - user: first question",
        "user: second question",
        "assistant: - user: first question - assistant: - user: first question - user: second question",
        "user: third question",
    ]
    # ...and switching to the edit again shows the newest leaf under it.
    switched = action(api, sid, edited["user_message_id"], "switch").json()
    assert switched["current_leaf_id"] == edited["message_id"]


def test_regenerate_adds_a_sibling_reply_with_the_same_or_another_model(api):
    first = turn(api, f"plan the move @@echo_context {FAST}", model_id="ref-standard")
    sid = first["session_id"]
    response = action(api, sid, first["message_id"], "regenerate", model_id="ref-fast")
    assert response.status_code == 202, response.text
    again = response.json()
    assert again["user_message_id"] is None
    reply = wait_final(api, sid, again["message_id"])
    assert lines(reply) == ["user: plan the move"]
    shown = path(api, sid)["messages"]
    assert [m["id"] for m in shown] == [first["user_message_id"], again["message_id"]]
    assert (shown[1]["position"], shown[1]["count"]) == (2, 2)
    assert shown[1]["model_id"] == "ref-fast" and first["reply"]["model_id"] == "ref-standard"

    bad = action(api, sid, first["message_id"], "regenerate", model_id="no-such-model")
    assert bad.status_code == 422 and "no-such-model" in bad.json()["message"]
    not_a_reply = action(api, sid, first["user_message_id"], "regenerate")
    assert not_a_reply.status_code == 422
    # Back to the first reply: 1 / 2.
    back = action(api, sid, first["message_id"], "switch").json()["messages"]
    assert back[1]["id"] == first["message_id"] and back[1]["position"] == 1


def test_retry_after_an_error_answers_the_same_question(api, stack):
    stack.fleet.process("dir-data").kill()
    stack.fleet.process("dir-data").wait(timeout=10)
    failed = turn(api, f"count the rows @@echo_context {FAST}", agent_id="dir-data")
    sid = failed["session_id"]
    assert failed["reply"]["status"] == "error"
    stack.fleet.revive(backoff=0)
    stack.fleet.wait_healthy(timeout=20)

    response = action(api, sid, failed["message_id"], "retry")
    assert response.status_code == 202, response.text
    reply = wait_final(api, sid, response.json()["message_id"])
    assert reply["status"] == "complete" and lines(reply) == ["user: count the rows"]
    assert reply["parent_id"] == failed["user_message_id"]
    assert (reply["position"], reply["count"]) == (2, 2)
    # A complete reply is not retried (regenerate it instead).
    assert action(api, sid, reply["id"], "retry").status_code == 422


def test_retry_and_continue_after_an_interruption(api):
    broken = turn(api, f"tell me a story {FAST} @@crash_after=6")
    sid = broken["session_id"]
    assert broken["reply"]["status"] == "interrupted" and broken["reply"]["content"]

    retried = action(api, sid, broken["message_id"], "retry")
    assert retried.status_code == 202, retried.text
    again = wait_final(api, sid, retried.json()["message_id"])
    assert again["parent_id"] == broken["user_message_id"] and again["count"] == 2

    # Continue the retried reply: a new reply under the partial one; the page shows both.
    response = action(api, sid, again["id"], "continue")
    assert response.status_code == 202, response.text
    continued = wait_final(api, sid, response.json()["message_id"])
    shown = path(api, sid)["messages"]
    assert [m["id"] for m in shown] == [broken["user_message_id"], again["id"], continued["id"]]
    assert continued["parent_id"] == again["id"] and continued["status"] == "complete"
    # The complete continuation has nothing to continue.
    assert action(api, sid, continued["id"], "continue").status_code == 422


def test_retry_after_a_stop_and_nothing_while_a_reply_is_live(api):
    slow = f"@@echo_context {FAST} @@stall_after=2 @@stall_ms=30000 slow question"
    sent = send(api, slow)
    sid = sent["session_id"]
    wait_writing(api, sid, sent["message_id"])
    # While the reply is live, no action may start another.
    for name, body in (("regenerate", {}), ("edit", {"content": "other"}), ("switch", {})):
        target = sent["user_message_id"] if name != "regenerate" else sent["message_id"]
        busy = action(api, sid, target, name, **body)
        assert busy.status_code in (409, 422), (name, busy.text)
        if name != "regenerate":
            assert busy.status_code == 409 and "still being written" in busy.json()["message"]
    assert api.post(f"/api/chat/sessions/{sid}/cancel").status_code in (200, 202)
    stopped = wait_final(api, sid, sent["message_id"])
    assert stopped["status"] == "cancelled"

    retried = action(api, sid, sent["message_id"], "retry")
    assert retried.status_code == 202, retried.text
    wait_writing(api, sid, retried.json()["message_id"])
    assert api.post(f"/api/chat/sessions/{sid}/cancel").status_code in (200, 202)
    again = wait_final(api, sid, retried.json()["message_id"])
    assert again["status"] == "cancelled" and again["content"].startswith("- user:")
    assert again["parent_id"] == sent["user_message_id"] and again["position"] == 2


def test_branch_into_a_new_chat_copies_the_path_and_another_agent_gets_a_handoff(api):
    first = turn(api, f"alpha question @@echo_context {FAST}")
    sid = first["session_id"]
    second = turn(api, f"beta question @@echo_context {FAST}", sid)

    response = action(api, sid, first["message_id"], "branch")
    assert response.status_code == 201, response.text
    branch = response.json()
    assert branch["handoff"] is False and branch["url"] == f"/chat/{branch['session_id']}"
    copied = path(api, branch["session_id"])["messages"]
    assert [(m["role"], m["content"]) for m in copied] == [
        ("user", f"alpha question @@echo_context {FAST}"),
        ("assistant", first["reply"]["content"]),
    ]
    assert not {m["id"] for m in copied} & {first["user_message_id"], first["message_id"]}
    follow = turn(api, f"gamma question @@echo_context {FAST}", branch["session_id"])
    assert lines(follow["reply"]) == [
        "user: alpha question",
        "assistant: - user: alpha question",
        "user: gamma question",
    ]
    # The original is untouched.
    assert [m["id"] for m in path(api, sid)["messages"]][-1] == second["message_id"]
    # Same agent lock: the branch belongs to the same agent.
    other = api.post(
        "/api/chat/message", json={"agent_id": "dir-code", "content": "hi", "session_id": branch["session_id"]}
    )
    assert other.status_code == 409

    response = action(api, sid, second["message_id"], "branch", agent_id="dir-code")
    assert response.status_code == 201, response.text
    handoff = response.json()
    assert handoff["handoff"] is True and handoff["agent_id"] == "dir-code"
    (note,) = path(api, handoff["session_id"])["messages"]
    assert note["message_type"] == "handoff" and note["role"] == "user"
    assert "Architect" in note["content"] and "beta question" in note["content"]
    reply = turn(api, f"delta question @@echo_context {FAST}", handoff["session_id"], agent_id="dir-code")["reply"]
    assert lines(reply) == [
        "user: Handoff: this conversation was started with Architect (architect). The transcript so far follows; continue from it.",
        "user: delta question",
    ]
    assert action(api, sid, second["message_id"], "branch", agent_id="nobody").status_code == 404


def test_actions_check_ownership_and_the_message_belongs_to_the_session(api, stack):
    mine = turn(api, f"private question {FAST}")
    other = turn(api, f"another chat {FAST}")
    sid = mine["session_id"]
    mallory = stack.login("mallory", "mallory-password-123")
    for name in ("regenerate", "retry", "continue", "switch", "branch"):
        assert action(mallory, sid, mine["message_id"], name).status_code == 404, name
    assert action(mallory, sid, mine["user_message_id"], "edit", content="x").status_code == 404
    assert mallory.get(f"/api/chat/sessions/{sid}/path").status_code == 404
    # A message of another session is not found in this one.
    assert action(api, sid, other["message_id"], "regenerate").status_code == 404
    assert action(api, sid, "no-such-message", "switch").status_code == 404
    # No CSRF token, no action.
    bare = api.post(
        f"{stack.base_url}/api/chat/sessions/{sid}/messages/{mine['message_id']}/regenerate",
        headers={"X-CSRFToken": ""},
    )
    assert bare.status_code == 400
