"""Approvals in Chromium against gunicorn and a real reference agent: the request shown in the
reply, Approve / Reject through the buttons, a reload and a second tab, and screenshots."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import agent_task, last_reply, message_id, new_chat, send
from .conftest import new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ask(page, what: str, extra: str = "@@tokens=30 @@delay_ms=5"):
    """Send a message whose reply asks for approval; returns the reply once the card shows."""
    new_chat(page, "dir-code")
    send(page, f'Tidy up @@approval="{what}" {extra}')
    reply = last_reply(page)
    expect(reply.locator(".approval .approval-title")).to_have_text(what, timeout=15_000)
    # Deltas swap the status chip; app.js carries its status to the article (data-status).
    expect(reply.locator(".turn-head .chip")).to_have_text("Awaiting approval")
    return reply


def second_tab(context, url: str):
    other = new_page(context)
    other.goto(url)
    return other


def test_approve_through_the_button_survives_a_reload_and_shows_in_a_second_tab(context, page, stack):
    reply = ask(page, "delete the old branches")
    card = reply.locator(".approval")
    # The detail is the agent's markdown, rendered on the server (bold, a list).
    expect(card.locator(".approval-detail strong")).to_have_text("Code Director")
    expect(card.locator(".approval-detail li")).to_have_count(3)
    expect(page.locator("#composer-waiting")).to_have_text("Code Director is waiting for your answer above.")
    expect(page.locator("#composer-stop")).to_have_text("Stop")

    page.reload()  # the request is stored: a reload shows it, still answerable
    reply = last_reply(page)
    expect(reply.locator(".approval .approval-title")).to_have_text("delete the old branches")
    expect(reply.locator(".approval-approve")).to_be_visible()
    expect(page.locator("#composer-waiting")).to_contain_text("is waiting for your answer")
    other = second_tab(context, page.url)
    expect(last_reply(other).locator(".approval .approval-approve")).to_be_visible()

    reply.locator(".approval-comment-input").fill("go ahead")
    reply.locator(".approval-approve").click()
    expect(reply.locator(".approval-outcome")).to_contain_text(f"Approved by {stack.username} ·")
    expect(reply.locator(".approval-comment")).to_have_text("go ahead")
    expect(page.locator("#composer-waiting")).to_be_empty()
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(reply.locator(".approval-outcome")).to_contain_text(f"Approved by {stack.username}")
    # The other tab follows: the decision, then the finished reply; no buttons left anywhere.
    other_reply = last_reply(other)
    expect(other_reply.locator(".approval-outcome")).to_contain_text(f"Approved by {stack.username}")
    expect(other_reply).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(other.locator(".approval-approve")).to_have_count(0)
    record = agent_task(stack, "dir-code", message_id(reply))
    assert record["status"] == "complete"
    assert [(d["decision"], d["comment"]) for d in record["approvals"]] == [("approve", "go ahead")]
    page.reload()
    expect(last_reply(page).locator(".approval-outcome")).to_contain_text(f"Approved by {stack.username}")
    assert page.evaluate("window.__csp") == [] and other.evaluate("window.__csp") == []
    assert not page.console_errors


def test_reject_through_the_button_ends_with_a_sentence_and_the_other_tab_shows_it(context, page, stack):
    reply = ask(page, "drop the staging database")
    other = second_tab(context, page.url)
    expect(last_reply(other).locator(".approval-reject")).to_be_visible()
    reply.locator(".approval-reject").click()
    expect(reply.locator(".approval-outcome")).to_contain_text(f"Rejected by {stack.username}")
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(reply.locator(".turn-body")).to_contain_text("I did not do it")
    expect(last_reply(other).locator(".approval-outcome")).to_contain_text(f"Rejected by {stack.username}")
    expect(last_reply(other).locator(".turn-body")).to_contain_text("I did not do it")
    assert [d["decision"] for d in agent_task(stack, "dir-code", message_id(reply))["approvals"]] == ["reject"]
    # The decision is on the review page too.
    page.goto(page.url.replace("/chat/", "/sessions/"))
    expect(page.locator(".transcript-approval .approval-outcome")).to_contain_text(f"Rejected by {stack.username}")
    assert page.evaluate("window.__csp") == []


def test_stop_while_waiting_ends_cancelled_and_a_second_answer_is_refused(context, page, stack):
    reply = ask(page, "rewrite the users table")
    other = second_tab(context, page.url)
    page.click("#composer-stop")
    expect(reply).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(reply.locator(".approval-outcome")).to_have_text("Not answered")
    expect(page.locator("#composer-waiting")).to_be_empty()
    # The other tab still showed the buttons a moment ago; an answer now is refused with a sentence.
    stale = last_reply(other)
    expect(stale).to_have_attribute("data-status", "cancelled", timeout=15_000)
    assert agent_task(stack, "dir-code", message_id(reply))["approvals"] == []
    assert page.evaluate("window.__csp") == []


def test_typing_instead_of_answering_says_what_is_awaited(page):
    ask(page, "rotate the keys")
    send(page, "yes")
    expect(page.locator("#composer-error")).to_have_text(
        "Code Director is waiting for your answer above. Approve or reject it, or press Esc to stop the reply."
    )
    last_reply(page).locator(".approval-approve").click()
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)


def test_screenshots_light_dark_and_narrow(screens, page):
    ask(page, "deploy release 4.2 to production")
    url = page.url
    shots = []
    for shot, width, scheme in screens(url):
        expect(last_reply(shot).locator(".approval-approve")).to_be_visible()
        last_reply(shot).locator(".approval").scroll_into_view_if_needed()
        time.sleep(0.3)
        name = f"approvals-request-{scheme}-{width}.png"
        shot.screenshot(path=str(SCREENSHOTS / name))
        shots.append(name)
        assert shot.evaluate("window.__csp") == []
    last_reply(page).locator(".approval-comment-input").fill("Ship it after the 14:00 freeze ends.")
    last_reply(page).locator(".approval-approve").click()
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    for shot, width, scheme in screens(url, widths=(375,)):
        last_reply(shot).locator(".approval").scroll_into_view_if_needed()
        time.sleep(0.3)
        name = f"approvals-approved-{scheme}-{width}.png"
        shot.screenshot(path=str(SCREENSHOTS / name))
        shots.append(name)
    for name in shots:
        assert (SCREENSHOTS / name).stat().st_size > 10_000
