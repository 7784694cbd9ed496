"""Progress you can see, in Chromium against gunicorn and real reference agents (issue #11, part 2):
the timeline of status updates under a reply (live, after it ends, after a reload), the elapsed
counter, and the "No output for N s" notice of a stalled reply, which counts and then clears."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import last_reply, message_id, new_chat, send
from .conftest import STALL_NOTICE_SECONDS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def seconds_in(text: str) -> int:
    """The seconds a progress text counts ("Working · 1 min 05 s" is 65)."""
    match = re.search(r"(?:(\d+) min )?(\d+) s$", text.strip())
    assert match, text
    return int(match.group(1) or 0) * 60 + int(match.group(2))


def wait_until_counted_past(locator, seconds: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        shown = seconds_in(locator.inner_text())
        if shown > seconds:
            return shown
        assert time.monotonic() < deadline, f"the counter stayed at {shown} s"
        time.sleep(0.2)


def shoot(screens, url: str, what: str, prepare) -> None:
    """Screenshots of `url` light and dark, wide and 375 px; `prepare(page)` gets each ready."""
    for shot, width, scheme in screens(url):
        target = prepare(shot)
        assert shot.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        target.scroll_into_view_if_needed()
        path = SCREENSHOTS / f"progress-{what}-{scheme}-{width}.png"
        shot.screenshot(path=str(path))
        assert path.stat().st_size > 10_000


def test_the_timeline_shows_during_and_after_a_reply_and_after_a_reload(page, screens):
    new_chat(page, "dir-code")
    # The second status update comes 1.5 s after the first: the stream appends it to the timeline.
    send(page, "Show me the progress @@tokens=220 @@delay_ms=30 @@first_token_ms=3000")
    reply = last_reply(page)
    steps = reply.locator(".reply-steps")
    # Live: the timeline is open with the agent's status updates, and the elapsed time counts.
    expect(steps).to_have_attribute("open", "")
    expect(steps.locator(".step")).to_have_count(2)
    ids = steps.locator(".step").evaluate_all("els => els.map(e => e.id)")
    assert len(set(ids)) == 2 and ids[0].endswith("-step-1") and ids[1].endswith("-step-2")
    expect(steps.locator(".step").first.locator(".step-status")).to_have_text("Planning")
    expect(steps.locator(".step").last).to_contain_text("Code Director is writing the reply.")
    expect(steps.locator(".step").last.locator("time")).to_have_text(re.compile(r"^\+\d+ s$"))
    elapsed = reply.locator(".progress-elapsed")
    expect(elapsed).to_have_text(re.compile(r"^Working · \d+ s$"))
    wait_until_counted_past(elapsed, seconds_in(elapsed.inner_text()))
    expect(reply.locator(".progress-stall")).to_be_hidden()  # output keeps coming: no notice

    # Ended: the progress line is gone, the timeline folded but kept.
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(reply.locator(".reply-progress")).to_have_count(0)
    expect(steps).not_to_have_attribute("open", "")
    expect(steps.locator(".steps-count")).to_have_text("2")
    steps.locator("summary").click()
    expect(steps.locator(".step").last).to_be_visible()

    # A reload shows the stored timeline (the event log is not where it lives).
    page.reload()
    steps = last_reply(page).locator(".reply-steps")
    expect(steps.locator(".step")).to_have_count(2)
    expect(steps.locator(".step-detail").first).to_have_text("Code Director is reading the request.")
    assert page.evaluate("() => window.__csp") == []
    chat_url = page.url

    # The review page shows it open.
    page.goto(chat_url.replace("/chat/", "/sessions/"))
    review = page.locator(".transcript-message.role-assistant .reply-steps")
    expect(review).to_have_attribute("open", "")
    expect(review.locator(".step-detail").last).to_have_text("Code Director is writing the reply.")
    assert page.evaluate("() => window.__csp") == []

    def opened(shot):
        timeline = shot.locator("#messages .turn-assistant").last.locator(".reply-steps")
        timeline.locator("summary").click()
        expect(timeline.locator(".step").last).to_be_visible()
        return timeline

    shoot(screens, chat_url, "timeline", opened)


def test_a_stalled_reply_says_no_output_counting_and_clears_when_output_resumes(page, screens):
    new_chat(page, "architect")
    send(page, "Take your time @@tokens=60 @@delay_ms=20 @@stall_after=10 @@stall_ms=22000")
    reply = last_reply(page)
    stall = reply.locator(".progress-stall")
    expect(stall).to_be_visible(timeout=20_000)
    expect(stall).to_have_text(re.compile(r"^No output for \d+ s$"))
    first = seconds_in(stall.inner_text())
    assert first >= STALL_NOTICE_SECONDS
    wait_until_counted_past(stall, first)  # it keeps counting
    expect(reply).to_have_attribute("data-status", "executing")
    rid = message_id(reply)

    # Any page loaded now shows the notice at once: the server gives the time of the last output.
    def stalled(shot):
        notice = shot.locator(f"#msg-{rid} .progress-stall")
        expect(notice).to_be_visible()
        expect(notice).to_have_text(re.compile(r"^No output for \d+ s$"))
        assert seconds_in(notice.inner_text()) >= STALL_NOTICE_SECONDS
        return shot.locator(f"#msg-{rid}")

    shoot(screens, page.url, "stall", stalled)

    # Output resumes: the notice goes, the reply completes.
    expect(stall).to_be_hidden(timeout=30_000)
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    assert page.evaluate("() => window.__csp") == []
    assert page.console_errors == []
