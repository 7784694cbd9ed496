"""Attachments in Chromium: the paperclip, drag and drop, the agent's echo of what it got, a refused
file's sentence, and a download that is never rendered as a page."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import last_reply, new_chat, reply_text, send

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTES = b"Deploy checklist\n1. freeze\n2. migrate\n"
# Markup that is not at the start: accepted as text, and must never run when opened.
TRAP = b'just text\n<script>window.__pwned = 1; alert(1)</script><svg onload="alert(2)"></svg>\n'


def attach(page, name: str, data: bytes, mime: str = "text/plain") -> None:
    page.set_input_files("#attach-input", files=[{"name": name, "mimeType": mime, "buffer": data}])


def ready_chips(page):
    return page.locator("#attach-chips .attachment-chip:not(.uploading)")


def test_attach_by_picker_and_by_drop_and_the_agent_echoes_them(page):
    new_chat(page, "architect")
    page.click("#attach-button")  # opens the picker (nothing to assert in headless), no error
    attach(page, "notes.txt", NOTES)
    expect(ready_chips(page)).to_have_count(1)
    expect(ready_chips(page).first).to_contain_text("notes.txt")
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['dropped line one\\nmore\\n'], 'dropped.log', {type: 'text/plain'}));
        const zone = document.querySelector('#composer-input');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    expect(ready_chips(page)).to_have_count(2)
    assert page.locator('#composer-form input[name="attachment_ids"]').count() == 2
    send(page, "@@echo @@delay_ms=2 Please read these")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    text = reply_text(reply)
    assert "Received 2 attachments" in text
    assert "notes.txt · text/plain" in text and "first line: Deploy checklist" in text
    assert "dropped.log · text/plain" in text and "first line: dropped line one" in text
    expect(page.locator("#attach-chips .attachment-chip")).to_have_count(0)  # sent with the message
    user_turn = page.locator("#messages .turn-user").last
    expect(user_turn.locator(".attachment-chip a")).to_have_count(2)
    expect(user_turn.locator(".attachment-chip a").first).to_have_text("notes.txt")
    assert page.evaluate("() => window.__csp") == []
    assert page.console_errors == []


def test_a_pasted_file_becomes_a_chip_and_can_be_removed(page):
    new_chat(page, "architect")
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['a,b\\n1,2\\n'], 'pasted.csv', {type: 'text/csv'}));
        const input = document.querySelector('#composer-input');
        input.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
    }""")
    expect(ready_chips(page)).to_have_count(1)
    page.click("#attach-chips .attachment-remove")
    expect(page.locator("#attach-chips .attachment-chip")).to_have_count(0)


def test_a_refused_file_says_why_under_the_composer(page):
    new_chat(page, "architect")
    attach(page, "page.html", b"<!doctype html><html><body>hi</body></html>", "text/html")
    expect(page.locator("#composer-error")).to_contain_text("page.html is HTML or SVG, which cannot be attached.")
    attach(page, "logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/svg+xml")
    expect(page.locator("#composer-error")).to_contain_text("logo.svg is HTML or SVG")
    attach(page, "tool.exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff", "application/octet-stream")
    expect(page.locator("#composer-error")).to_contain_text("tool.exe is not a text file, a PDF or a supported image")
    expect(page.locator("#attach-chips .attachment-chip")).to_have_count(0)
    assert page.evaluate("() => window.__csp") == []


def test_an_opened_attachment_is_a_download_never_a_page(page):
    new_chat(page, "architect")
    attach(page, "trap.txt", TRAP)
    expect(ready_chips(page)).to_have_count(1)
    send(page, "@@echo @@delay_ms=2 trap")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)
    link = page.locator("#messages .turn-user .attachment-chip a").last
    href = link.get_attribute("href")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "trap.txt"
    assert open(download.path(), "rb").read() == TRAP
    # Navigating to the URL itself is a download too: the page is never replaced by the file.
    url = page.url
    with page.expect_download():
        page.evaluate(
            "href => { const a = document.createElement('a'); a.href = href; document.body.append(a); a.click(); }",
            href,
        )
    time.sleep(0.5)
    assert page.url == url
    assert page.dialogs == [] and page.evaluate("() => window.__pwned") is None
    response = page.request.get(href)
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "sandbox" in response.headers["content-security-policy"]


def test_screenshots_of_chips_light_dark_and_narrow(screens, page):
    new_chat(page, "architect")
    attach(page, "quarterly-report-final-v2.csv", b"region,revenue\nnorth,12\n")
    expect(ready_chips(page)).to_have_count(1)
    send(page, "@@echo @@delay_ms=2 Numbers attached")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)
    for shot, width, scheme in screens(page.url):
        attach(shot, "server.log", b"boot ok\n")
        expect(ready_chips(shot)).to_have_count(1)
        expect(shot.locator("#messages .turn-user .attachment-chip")).to_have_count(1)
        name = f"attachments-chips-{scheme}-{width}.png"
        shot.screenshot(path=str(SCREENSHOTS / name))
        assert (SCREENSHOTS / name).stat().st_size > 10_000
