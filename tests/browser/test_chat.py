"""The chat page in Chromium against gunicorn and real reference agents: issue 4's acceptance."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import agent_task, last_reply, message_id, new_chat, reply_text, send, wait_for_text
from .conftest import MAX_MESSAGE_CHARS, login, new_context, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FINAL = ("complete", "cancelled", "error", "interrupted")


def test_log_in_pick_agent_and_model_send_and_watch_the_reply_stream(browser, stack):
    context = new_context(browser, stack)
    page = new_page(context)
    try:
        login(page, stack)
        options = page.eval_on_selector_all(
            "#agent-picker option", "els => els.map(e => [e.value, e.textContent.trim(), e.disabled])"
        )
        assert options[0] == ["architect", "Architect · root", False]
        assert ["dir-code", "↳ Code Director · reports to Architect", False] in options
        down = next(o for o in options if o[0] == "dir-ops")
        assert down[2] and "down: Agent dir-ops is not answering on its port" in down[1]

        page.select_option("#agent-picker", "dir-code")
        expect(page).to_have_url(re.compile(r"/\?agent_id=dir-code$"))
        page.select_option("#model-select", "ref-fast")
        expect(page.locator("#context-meter")).to_have_attribute("max", "8192")

        page.focus("#composer-input")
        page.keyboard.type("Plan the release")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("second line @@tokens=140 @@delay_ms=12")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
        expect(page.locator("#composer-stop")).to_have_text("Stop")
        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)

        rid = message_id(reply)
        states = [s.split("|") for s in page.evaluate("() => window.__states") if s.startswith(f"msg-{rid}|")]
        intermediate = {int(length) for _, status, length in states if status not in FINAL and int(length) > 0}
        assert len(intermediate) >= 2, states  # the reply was seen growing before it completed
        assert (
            page.locator(".turn-user .turn-body")
            .last.inner_text()
            .endswith("Plan the release\nsecond line @@tokens=140 @@delay_ms=12")
        )

        expect(reply.locator(".chip")).to_have_text("Complete")
        usage = reply.locator(".usage").inner_text()
        match = re.fullmatch(r"([\d,]+) tokens in · 140 out · \$[\d.]+", usage)
        assert match, usage
        # The gauge counts what the next message would send (chat/context.py), estimated here.
        sid = page.url.rstrip("/").rsplit("/", 1)[-1]
        used = page.request.get(f"/api/chat/sessions/{sid}/context").json()["used"]
        assert used > 140
        expect(page.locator("#context-meter")).to_have_attribute("value", str(used))
        expect(page.locator(".gauge-used")).to_have_text(f"~{used:,}")
        expect(page.locator("#composer-button")).to_have_text("Send")
        expect(page.locator("#composer-stop")).to_have_count(0)
        assert "```" not in reply_text(reply) and reply.locator(".md pre code .k").count() > 0  # highlighted code
        assert page.evaluate("() => window.__csp") == []
    finally:
        context.close()


def test_keyboard_only_reaches_pickers_and_composer(page):
    new_chat(page)
    visited = []
    for _ in range(40):
        page.keyboard.press("Tab")
        visited.append(page.evaluate("() => document.activeElement.id"))
        if visited[-1] == "composer-input":
            break
    assert "agent-picker" in visited and "model-select" in visited and visited[-1] == "composer-input"
    page.keyboard.type("Hello by keyboard @@tokens=5 @@delay_ms=5")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/chat/"))
    expect(last_reply(page)).to_have_attribute("data-status", "complete")


def test_stop_mid_stream_keeps_the_text_and_the_agent_stops(page, stack):
    new_chat(page, "dir-code")
    send(page, "Write a long one @@tokens=400 @@delay_ms=30")
    reply = last_reply(page)
    wait_for_text(reply, 40)
    page.click("#composer-stop")
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".chip")).to_have_text("Cancelled")
    expect(reply.locator(".turn-note")).to_have_text("Stopped. The text so far is kept.")
    assert len(reply_text(reply)) >= 40
    expect(page.locator("#composer-button")).to_have_text("Send")  # usable again at once
    expect(page.locator("#composer-stop")).to_have_count(0)
    task = agent_task(stack, "dir-code", message_id(reply))
    assert task["status"] == "cancelled" and 0 < task["tokens_sent"] < 400


def test_stop_before_the_first_token_with_esc(page, stack):
    new_chat(page, "architect")
    send(page, "Slow start @@first_token_ms=3000")
    expect(page.locator("#composer-stop")).to_have_text("Stop")
    reply = last_reply(page)
    page.focus("#composer-input")
    page.keyboard.press("Escape")
    expect(reply).to_have_attribute("data-status", "cancelled")
    assert reply_text(reply).strip() == ""
    task = agent_task(stack, "architect", message_id(reply))
    assert task["status"] == "cancelled" and task["tokens_sent"] == 0


def test_reload_mid_stream_shows_the_text_continues_and_stop_still_works(page, stack):
    new_chat(page, "dir-data")
    send(page, "Reload me @@tokens=300 @@delay_ms=30")
    wait_for_text(last_reply(page), 60)
    time.sleep(0.3)  # the run flushes the text to the database at least every 250 ms
    server_html = page.request.get(page.url).text()  # what the server renders on reload
    rid = message_id(last_reply(page))
    body = re.search(rf'id="msg-{rid}".*?<div class="turn-body md"[^>]*>(.*?)</div>', server_html, re.S)
    assert body and len(re.sub(r"<[^>]+>", "", body.group(1)).strip()) > 10
    page.reload()
    reply = last_reply(page)
    before = len(reply_text(reply))
    assert before > 10
    time.sleep(0.8)
    assert len(reply_text(reply)) > before  # it continues live
    expect(page.locator("#composer-stop")).to_have_text("Stop")
    page.click("#composer-stop")
    expect(reply).to_have_attribute("data-status", "cancelled")
    assert agent_task(stack, "dir-data", rid)["status"] == "cancelled"


def test_a_dropped_stream_reconnects_and_resumes_without_duplicates(page):
    words = " ".join(f"word{i}" for i in range(80))
    new_chat(page, "architect")
    send(page, f"{words} @@echo @@delay_ms=25")
    reply = last_reply(page)
    wait_for_text(reply, 50)
    # Drop the connection under hx-sse; it reconnects with Last-Event-ID.
    page.eval_on_selector(".reply-stream", "el => el._htmx.sse.reader.cancel()")
    expect(page.locator(".reply-stream.reconnecting")).to_have_count(0)  # back after ~0.5 s
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
    assert page.evaluate("() => window.__reconnecting") == ["Connection lost. Reconnecting…"]
    assert reply_text(reply).strip() == words  # every word exactly once


def test_two_tabs_follow_the_same_reply(context, page):
    new_chat(page, "architect")
    send(page, "First @@tokens=5 @@delay_ms=5")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    other = context.new_page()
    other.goto(page.url)
    page.bring_to_front()
    send(page, "Both of you watch this @@tokens=80 @@delay_ms=25")
    expect(other.locator("#messages .turn-assistant")).to_have_count(2)
    expect(other.locator("#composer-stop")).to_have_text("Stop")
    for tab in (page, other):
        expect(last_reply(tab)).to_have_attribute("data-status", "complete", timeout=15_000)
    assert reply_text(last_reply(page)) == reply_text(last_reply(other))
    expect(other.locator("#composer-button")).to_have_text("Send")
    expect(other.locator("#composer-stop")).to_have_count(0)


def test_choosing_another_agent_opens_a_new_session_with_a_new_url(page):
    new_chat(page, "architect")
    send(page, "Question for the architect @@tokens=5 @@delay_ms=5")
    expect(page).to_have_url(re.compile(r"/chat/"))
    first_url = page.url
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.select_option("#agent-picker", "dir-code")
    expect(page).to_have_url(re.compile(r"/\?agent_id=dir-code$"))
    expect(page.locator("#messages .turn")).to_have_count(0)
    send(page, "Question for code @@tokens=5 @@delay_ms=5")
    expect(page).to_have_url(re.compile(r"/chat/"))
    assert page.url != first_url
    expect(last_reply(page).locator(".turn-author")).to_have_text("Code Director")
    sidebar = page.locator("#session-list")
    expect(sidebar.locator("a[aria-current=page]")).to_contain_text("Question for code")
    expect(sidebar).to_contain_text("Question for the architect")
    page.goto(first_url)
    expect(last_reply(page).locator(".turn-author")).to_have_text("Architect")


XSS = "\n\n".join(
    [
        "<script>window.__pwned = 'script'; alert('script')</script>",
        "<img src=x onerror=\"window.__pwned='img'; alert('img')\">",
        "<svg onload=\"alert('svg')\"><circle r=5 onclick=\"alert('circle')\"/></svg>",
        "[click me](javascript:alert('link')) and [again](JaVaScRiPt:alert('case'))",
        "<javascript:alert('autolink')> and <https://example.com/safe>",
        "<a href=\"javascript:alert('raw')\">raw link</a>",
        '<div hx-get="/chat/gauge?agent_id=architect&xss=hx" hx-trigger="load">hx</div>',
        '<div data-hx-get="/chat/gauge?agent_id=architect&xss=data" data-hx-trigger="load">data-hx</div>',
        '<b hx-swap-oob="true" id="composer-actions">PWNED-OOB</b>',
        '<hx-partial hx-target="#composer-actions">PWNED-PARTIAL</hx-partial>',
        "[title](https://example.com/t \"<hx-partial hx-target='#chat'>PWNED-TITLE</hx-partial>\")",
        "<iframe src=\"javascript:alert('iframe')\"></iframe>",
        "![pixel](https://example.com/p.png?leak=1)",
    ]
)


def test_agent_output_with_xss_payloads_executes_nothing_and_renders_inert(page):
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    new_chat(page, "architect")
    send(page, f"{XSS}\n@@echo @@delay_ms=2")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
    time.sleep(0.5)  # give anything that would fire (load triggers, handlers) the chance to
    assert page.dialogs == []
    assert page.evaluate("() => window.__pwned") is None
    assert page.evaluate("() => window.__csp") == []  # nothing even tried to run inline code
    assert not [url for url in requested if "xss=" in url]
    body = reply.locator(".md")
    assert body.get_attribute("hx-ignore") == ""
    assert body.locator("script, img, svg, iframe, style, template, [style]").count() == 0
    bad = body.evaluate(
        """el => [...el.querySelectorAll('*')].flatMap(n => [...n.attributes].map(a => a.name))
              .filter(a => a.startsWith('on') || a.startsWith('hx-') || a.startsWith('data-'))"""
    )
    assert bad == []
    hrefs = body.evaluate("el => [...el.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
    assert hrefs and all(href.startswith(("https://", "http://", "mailto:")) for href in hrefs), hrefs
    text = reply_text(reply)
    assert "<script>window.__pwned" in text and "PWNED-OOB" in text  # shown as text
    expect(page.locator("#composer-button")).to_have_text("Send")  # the OOB payload did not land
    expect(page.locator("#composer-actions")).not_to_contain_text("PWNED")
    expect(page.locator(".chat-head")).not_to_contain_text("PWNED")


def test_agent_error_and_interrupted_replies_say_what_to_do(page):
    new_chat(page, "dir-code")
    send(page, 'Fail please @@tokens=5 @@error="the model refused"')
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "error")
    expect(reply.locator(".turn-note")).to_contain_text("the model refused. Retry in a moment")
    send(page, "Crash please @@tokens=50 @@crash_after=8 @@delay_ms=10")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "interrupted")
    expect(reply.locator(".turn-note")).to_contain_text("The text so far is kept; retry or continue it below")
    assert len(reply_text(reply)) > 0


def test_empty_and_over_long_messages_are_refused_without_a_request(page):
    new_chat(page)
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.focus("#composer-input")
    page.keyboard.press("Enter")
    expect(page.locator("#composer-error")).to_have_text("Write a message before sending.")
    page.fill("#composer-input", "x" * (MAX_MESSAGE_CHARS + 1))
    page.click("#composer-button")
    expect(page.locator("#composer-error")).to_have_text(
        f"The message is {MAX_MESSAGE_CHARS + 1:,} characters long; the limit is {MAX_MESSAGE_CHARS:,}."
    )
    assert posts == []


def test_lost_csrf_token_and_expired_login(page, context):
    new_chat(page)
    page.evaluate("""() => {
        document.body.setAttribute('hx-headers:inherited', JSON.stringify({'X-CSRFToken': 'bogus'}));
        document.querySelector('#composer-form [name=csrf_token]').value = 'bogus';
    }""")
    send(page, "hello")
    expect(page.locator("#composer-error")).to_have_text(
        "Your form expired or lost its security token. Reload the page and try again."
    )
    page.reload()
    context.clear_cookies()  # the login expires
    send(page, "hello again")  # a write fails the CSRF check first: the same sentence
    expect(page.locator("#composer-error")).to_contain_text("Reload the page and try again.")
    page.select_option("#agent-picker", "dir-code")  # htmx follows HX-Redirect to the login page
    expect(page).to_have_url(re.compile(r"/login\?next=/"))  # and back here after logging in


def test_screenshots_light_and_dark_wide_and_narrow(screens, page):
    new_chat(page, "architect")
    send(page, "Compare the rollout options @@tokens=120 @@delay_ms=2")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    table = "| Option | Cost | Risk |\n|:--|--:|:-:|\n| Blue/green | $120 | low |\n| Canary | $80 | medium |"
    send(
        page,
        f'{table}\n\n```python\ndef rollout(step: int) -> str:\n    return f"stage {{step}}"\n```\n@@echo @@delay_ms=2',
    )
    expect(page.locator("#messages .turn-assistant.status-complete")).to_have_count(2)
    send(page, "And a live one @@tokens=400 @@delay_ms=60")
    wait_for_text(last_reply(page), 60)
    for shot, width, scheme in screens(page.url):
        expect(shot.locator("#messages .turn-assistant")).to_have_count(3)
        time.sleep(0.4)
        shot.screenshot(path=str(SCREENSHOTS / f"chat-{width}-{scheme}.png"))
    page.click("#composer-stop")
    expect(last_reply(page)).to_have_attribute("data-status", "cancelled")
    for name in ("chat-1280-light", "chat-1280-dark", "chat-375-light", "chat-375-dark"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


def test_a_streaming_reply_appends_finished_blocks_and_ends_as_a_reload_renders_it(page):
    new_chat(page, "architect")
    send(page, "Plan the release @@tokens=160 @@delay_ms=25")
    reply = last_reply(page)
    blocks = reply.locator(".md-blocks")
    # Finished blocks (the heading, the intro...) are in place while the tail is still written.
    expect(blocks.locator("h2")).to_have_count(1, timeout=15_000)
    assert reply.get_attribute("data-status") not in FINAL
    tail_before = reply.locator(".md-tail").inner_html()
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    streamed = reply.locator(".turn-body").inner_html()
    assert "md-tail" not in streamed and "md-blocks" not in streamed  # the final render is whole
    page.reload()
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    assert last_reply(page).locator(".turn-body").inner_html() == streamed
    assert tail_before != streamed
