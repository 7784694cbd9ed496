"""What the agent receives, in Chromium against gunicorn and the real reference agents (#12 part 2):
the "no longer sees" marker where the budget cuts (and where it moves after a reply), a summary
and a fresh context made through the page, and what the agent then receives (`@@echo_context`)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import last_reply, send

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# ref-fast: an 8,192-token window, 2,048 kept for the reply. Each long reply is ~1,500 tokens
# (estimated), so five turns overflow the budget and the oldest fall off.
LONG = "turn {n} @@tokens=1200 @@delay_ms=0 @@first_token_ms=0"


def long_session(stack, turns: int = 5) -> str:
    api = stack.login()
    session_id = None
    for n in range(1, turns + 1):
        body = {"agent_id": "architect", "model_id": "ref-fast", "content": LONG.format(n=n)}
        if session_id:
            body["session_id"] = session_id
        sent = api.post("/api/chat/message", json=body, timeout=30)
        assert sent.status_code == 202, sent.text
        session_id = sent.json()["session_id"]
        api.get(sent.json()["stream_url"], timeout=90)  # the JSON stream ends after `done`
    return session_id


def plan_of(page, session_id: str) -> dict:
    return page.request.get(f"/api/chat/sessions/{session_id}/context").json()


def neighbours(page) -> tuple[str, str]:
    """The ids of the elements just above and just below the marker."""
    return tuple(
        page.evaluate(
            """() => { const m = document.getElementById('context-marker');
                   return [m.previousElementSibling.id, m.nextElementSibling.id]; }"""
        )
    )


def echoed(reply) -> list[str]:
    """The roles the agent received, from an @@echo_context reply (one list item per message)."""
    return [item.split(":", 1)[0].strip() for item in reply.locator(".turn-body li").all_inner_texts()]


def send_and_wait(page, text: str):
    """Send from the composer; the new reply once it is complete."""
    replies = page.locator("#messages .turn-assistant")
    before = replies.count()
    send(page, text)
    expect(replies).to_have_count(before + 1)
    reply = replies.nth(before)
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    return reply


def test_the_marker_sits_where_the_budget_cuts_and_moves_after_a_reply(page, stack, screens):
    session_id = long_session(stack)
    plan = plan_of(page, session_id)
    cut = plan["cut"]
    assert cut["reason"] == "budget" and cut["hidden_messages"] > 0, plan
    hidden = [m["id"] for m in plan["messages"] if not m["sent"]]
    page.goto(f"/chat/{session_id}")
    marker = page.locator("#context-marker")
    n = cut["hidden_messages"]
    expect(marker).to_contain_text(f"The agent no longer sees the {n} message{'s' if n != 1 else ''} above.")
    assert neighbours(page) == (f"msg-{hidden[-1]}", f"msg-{cut['before_message_id']}")
    expect(page.locator("#context-meter")).to_have_attribute("value", str(plan["used"]))
    expect(page.locator(".gauge-estimate")).to_have_text("(estimate)")

    # The agent receives exactly the messages below the marker, plus the new one.
    send_and_wait(page, "@@echo_context")
    # (The new message takes a few tokens of the budget too: the oldest sent one may drop off.)
    sent_roles = [m["role"] for m in plan["messages"] if m["sent"]]
    received = echoed(last_reply(page))
    assert received[-1] == "user" and len(sent_roles) - 1 <= len(received) - 1 <= len(sent_roles)
    assert received[:-1] == sent_roles[len(sent_roles) - (len(received) - 1) :]

    # After the reply the marker is where the new plan cuts (moved out of band by the final render).
    after = plan_of(page, session_id)["cut"]
    expect(page.locator("#context-marker")).to_have_count(1)
    assert neighbours(page)[1] == f"msg-{after['before_message_id']}"
    page.reload()
    assert neighbours(page)[1] == f"msg-{after['before_message_id']}"

    for shot, width, scheme in screens(page.url):
        shot.locator("#context-marker").scroll_into_view_if_needed()
        time.sleep(0.3)
        shot.screenshot(path=str(SCREENSHOTS / f"context-marker-{scheme}-{width}.png"))
    for scheme in ("light", "dark"):
        assert (SCREENSHOTS / f"context-marker-{scheme}-375.png").stat().st_size > 10_000
    assert page.evaluate("() => window.__csp") == []
    assert page.console_errors == []


def test_summarize_and_start_fresh_through_the_page(page, stack, screens):
    session_id = long_session(stack, turns=3)
    page.goto(f"/chat/{session_id}")
    page.click("#summarize-button")
    summary = page.locator("#messages .turn-summary").last
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(summary.locator(".chip-summary")).to_have_text("Summary of earlier messages")
    expect(page.locator("#context-marker")).to_contain_text("The summary below stands in for them.")
    summary_id = summary.get_attribute("id")
    assert neighbours(page)[1] == summary_id

    # The summary replaces the turns it covers: the agent receives it (as a system message) and the new one.
    send_and_wait(page, "@@echo_context")
    reply = last_reply(page)
    assert echoed(reply) == ["system", "user"]
    expect(reply.locator(".turn-body li").first).to_contain_text("Summary of the earlier conversation")

    # Edit it through the page: the agent receives the new text.
    page.goto(f"/chat/{session_id}")
    summary = page.locator(f"#{summary_id}")
    summary.locator(".summary-edit summary").click()
    summary.locator("textarea").fill("Briefing: ship on Friday.")
    summary.locator("button", has_text="Save summary").click()
    expect(page.locator(f"#{summary_id} .turn-body")).to_have_text("Briefing: ship on Friday.")
    send_and_wait(page, "@@echo_context")
    expect(last_reply(page).locator(".turn-body li").first).to_contain_text("ship on Friday.")

    # A fresh context: nothing above the divider is sent.
    page.click("#fresh-context-button")
    divider = page.locator("#messages .context-reset")
    expect(divider).to_have_count(1)
    expect(divider).to_contain_text("nothing above this line is sent")
    for shot, width, scheme in screens(page.url, widths=(1280,)):
        shot.locator("#messages .context-reset").scroll_into_view_if_needed()
        time.sleep(0.3)
        shot.screenshot(path=str(SCREENSHOTS / f"context-fresh-{scheme}-{width}.png"))
    send_and_wait(page, "@@echo_context")
    assert echoed(last_reply(page)) == ["user"]

    # Undo brings the earlier messages back into what is sent.
    page.locator("#messages .context-reset button", has_text="Undo").click()
    expect(page.locator("#messages .context-reset")).to_have_count(0)
    assert plan_of(page, session_id)["cut"]["reason"] == "summary"
    assert page.evaluate("() => window.__csp") == []
    assert page.console_errors == []
