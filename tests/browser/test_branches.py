"""Conversation control in Chromium: regenerate then "‹ 1 / 2 ›", edit and resend, retry after a
stopped reply, copy as markdown, branch into a new chat; screenshots light, dark and 375 px."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import new_chat, send, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FAST = "@@delay_ms=2 @@first_token_ms=5"


def replies(page):
    return page.locator("#messages .turn-assistant")


def users(page):
    return page.locator("#messages .turn-user")


def finished(page, count: int) -> None:
    expect(page.locator("#messages .turn-assistant.status-complete")).to_have_count(count, timeout=20_000)
    expect(page.locator("#composer-button")).to_have_text("Send", timeout=20_000)


def test_regenerate_then_switch_between_the_two_replies(page):
    new_chat(page, "architect")
    send(page, f"first topic @@echo_context {FAST}")
    finished(page, 1)
    first = replies(page).first
    first_id = first.get_attribute("id")
    first.locator('[data-action="regenerate"]').click()
    expect(replies(page).first).not_to_have_attribute("id", first_id, timeout=20_000)
    finished(page, 1)
    reply = replies(page).first
    expect(reply.locator(".sibling-count")).to_have_text("2 / 2")
    expect(reply.locator('[data-action="next"]')).to_be_disabled()
    reply.locator('[data-action="previous"]').click()
    expect(replies(page).first).to_have_attribute("id", first_id)
    expect(replies(page).first.locator(".sibling-count")).to_have_text("1 / 2")
    expect(replies(page)).to_have_count(1)
    # What is sent next follows the path shown; after a reload it is still the path chosen.
    page.reload()
    expect(replies(page).first).to_have_attribute("id", first_id)
    assert page.evaluate("() => window.__csp") == []


def test_edit_and_resend_makes_a_branch_the_agent_sees(page):
    new_chat(page, "architect")
    send(page, f"original question @@echo_context {FAST}")
    finished(page, 1)
    send(page, f"follow up @@echo_context {FAST}")
    finished(page, 2)
    second = users(page).nth(1)
    second.locator('[data-action="edit"]').click()
    box = second.locator("textarea")
    expect(box).to_be_focused()
    box.fill(f"edited follow up @@echo_context {FAST}")
    second.locator('[data-action="resend"]').click()
    expect(users(page).nth(1).locator(".turn-body")).to_contain_text("edited follow up", timeout=20_000)
    finished(page, 2)
    expect(users(page).nth(1).locator(".sibling-count")).to_have_text("2 / 2")
    text = replies(page).nth(1).locator(".turn-body").inner_text()
    assert "user: edited follow up" in text and "user: follow up" not in text
    # Back to the first version: its own reply comes back with it.
    users(page).nth(1).locator('[data-action="previous"]').click()
    expect(users(page).nth(1).locator(".turn-body")).to_have_text(f"follow up @@echo_context {FAST}")
    expect(replies(page).nth(1).locator(".turn-body")).not_to_contain_text("edited")
    assert page.evaluate("() => window.__csp") == []


def test_retry_and_continue_after_a_stopped_reply(page):
    new_chat(page, "architect")
    send(page, "a long answer @@tokens=400 @@delay_ms=40")
    reply = replies(page).last
    wait_for_text(reply, 20)
    page.click("#composer-stop")
    expect(reply).to_have_attribute("data-status", "cancelled", timeout=20_000)
    expect(reply.locator('[data-action="retry"]')).to_be_visible()
    expect(reply.locator('[data-action="continue"]')).to_be_visible()
    stopped_id = reply.get_attribute("id")
    reply.locator('[data-action="retry"]').click()
    expect(replies(page).last).not_to_have_attribute("id", stopped_id, timeout=20_000)
    expect(page.locator("#composer-stop")).to_have_text("Stop")
    wait_for_text(replies(page).last, 20)
    page.click("#composer-stop")
    expect(replies(page).last).to_have_attribute("data-status", "cancelled", timeout=20_000)
    expect(replies(page).last.locator(".sibling-count")).to_have_text("2 / 2")
    # Continue: a new reply under the stopped one; both are shown.
    replies(page).last.locator('[data-action="continue"]').click()
    expect(replies(page)).to_have_count(2, timeout=20_000)
    wait_for_text(replies(page).last, 20)
    page.click("#composer-stop")
    expect(replies(page).last).to_have_attribute("data-status", "cancelled", timeout=20_000)
    assert page.evaluate("() => window.__csp") == []


def test_copy_as_markdown_puts_the_raw_text_on_the_clipboard(context, page):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    new_chat(page, "architect")
    send(page, f"Copy **this** <b>and</b> `that` @@echo {FAST}")
    finished(page, 1)
    reply = replies(page).first
    reply.locator('[data-action="copy"]').click()
    expect(reply.locator('[data-action="copy"]')).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "Copy **this** <b>and</b> `that`"
    users(page).first.locator('[data-action="copy"]').click()
    assert page.evaluate("() => navigator.clipboard.readText()") == f"Copy **this** <b>and</b> `that` @@echo {FAST}"
    # The raw text is an attribute value, never markup: nothing of it became an element.
    assert reply.locator(".turn-actions b").count() == 0
    assert page.evaluate("() => window.__csp") == []


def test_branch_into_a_new_chat_and_hand_off_to_another_agent(page):
    new_chat(page, "architect")
    send(page, f"shared start @@echo_context {FAST}")
    finished(page, 1)
    send(page, f"only in the original @@echo_context {FAST}")
    finished(page, 2)
    original = page.url
    first_reply = replies(page).first
    first_reply.locator('[data-action="branch-menu"]').click()
    first_reply.locator('[data-action="branch"]').click()
    expect(page).not_to_have_url(original, timeout=20_000)
    expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
    page.wait_for_load_state("load")  # a full page load (HX-Redirect): its scripts wire Enter
    expect(page.locator(".chat-title h1")).to_contain_text("Branch of")
    expect(users(page)).to_have_count(1)
    expect(replies(page)).to_have_count(1)
    send(page, f"in the branch @@echo_context {FAST}")
    finished(page, 2)
    text = replies(page).last.locator(".turn-body").inner_text()
    assert "user: shared start" in text and "only in the original" not in text

    page.goto(original)
    last = replies(page).last
    last.locator('[data-action="branch-menu"]').click()
    last.locator("select[name=agent_id]").select_option("dir-code")
    last.locator('[data-action="branch"]').click()
    expect(page).not_to_have_url(original, timeout=20_000)
    page.wait_for_load_state("load")
    handoff = page.locator("#messages .turn-handoff")
    expect(handoff).to_have_count(1)
    expect(handoff.locator(".turn-author")).to_have_text("Handoff")
    expect(handoff.locator(".turn-body")).to_contain_text("only in the original")
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", re.compile("Code Director"))
    assert page.evaluate("() => window.__csp") == []


def test_screenshots_of_the_action_rows(screens, page):
    new_chat(page, "architect")
    send(page, f"Plan the rollout {FAST} @@tokens=60")
    finished(page, 1)
    replies(page).first.locator('[data-action="regenerate"]').click()
    expect(replies(page).first.locator(".sibling-count")).to_have_text("2 / 2", timeout=20_000)
    finished(page, 1)
    send(page, f"And the rollback? {FAST} @@tokens=40")
    finished(page, 2)
    names = []
    for shot, width, scheme in screens(page.url):
        expect(shot.locator("#messages .turn-actions")).to_have_count(4)
        shot.locator("#messages .turn-user").last.locator('[data-action="edit"]').click()
        time.sleep(0.3)
        name = f"branches-actions-{scheme}-{width}"
        shot.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        names.append(name)
    for name in names:
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
