"""Cost in Chromium: the chat header's running total follows each reply as it ends, each reply names
its model, and the Usage page; screenshots of both, light and dark, wide and 375 px."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import last_reply, new_chat, send

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPLY_USAGE = re.compile(r"([\d,]+) tokens in · ([\d,]+) out · \$([\d.,]+)")
HEADER_TOTAL = re.compile(r"([\d,]+) in · ([\d,]+) out · \$([\d.,]+)")


def numbers(pattern, text: str) -> tuple[int, int, float]:
    match = pattern.fullmatch(text.strip())
    assert match, text
    prompt, completion, cost = match.groups()
    return int(prompt.replace(",", "")), int(completion.replace(",", "")), float(cost.replace(",", ""))


def header_total(page) -> tuple[int, int, float]:
    return numbers(HEADER_TOTAL, page.locator("#session-cost .session-cost-value").inner_text())


def reply_usages(page) -> list[tuple[int, int, float]]:
    texts = page.locator("#messages .turn-assistant .usage").all_inner_texts()
    return [numbers(REPLY_USAGE, text) for text in texts]


def test_the_header_total_updates_as_each_reply_ends(page):
    new_chat(page, "architect")
    page.select_option("#model-select", "ref-fast")
    send(page, "First question @@tokens=30 @@delay_ms=5")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(page.locator("#session-cost")).to_have_attribute("data-replies", "1")
    first = reply_usages(page)
    assert len(first) == 1 and first[0][1] == 30
    assert header_total(page)[:2] == first[0][:2]
    expect(last_reply(page).locator(".turn-model")).to_have_text("· ref-fast")

    # The model changes within the session: the next reply names its own.
    page.select_option("#model-select", "ref-standard")
    send(page, "Second question @@tokens=50 @@delay_ms=20")
    expect(last_reply(page)).not_to_have_attribute("data-status", "complete")
    assert header_total(page)[:2] == first[0][:2]  # unchanged while the reply is written
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    # No reload: the page stream's last message carried the new total out of band.
    expect(page.locator("#session-cost")).to_have_attribute("data-replies", "2")
    both = reply_usages(page)
    prompt, completion, cost = header_total(page)
    assert (prompt, completion) == (both[0][0] + both[1][0], both[0][1] + both[1][1]) and completion == 80
    assert abs(cost - (both[0][2] + both[1][2])) <= 0.0001 * 2  # each line rounds its own cost
    models = page.locator("#messages .turn-assistant .turn-model").all_inner_texts()
    assert models == ["· ref-fast", "· ref-standard"]

    # Stop: the total counts the stopped reply as soon as Stop is answered.
    send(page, "A long one @@tokens=400 @@delay_ms=40")
    expect(last_reply(page).locator(".md-tail")).not_to_be_empty(timeout=15_000)
    page.click("#composer-stop")
    expect(last_reply(page)).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(page.locator("#session-cost")).to_have_attribute("data-replies", "3")
    assert header_total(page)[0] > prompt
    page.reload()
    reloaded = header_total(page)
    assert reloaded[0] > prompt and reloaded[1] >= completion
    assert page.evaluate("() => window.__csp") == []
    assert page.console_errors == []


def test_the_usage_page_shows_the_totals_and_downloads_csv(page):
    new_chat(page, "architect")
    send(page, "Something to count @@tokens=12 @@delay_ms=2")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    page.click(".topnav >> text=Usage")
    expect(page).to_have_url(re.compile(r"/usage$"))
    expect(page.locator("h1")).to_have_text("Usage")
    assert re.fullmatch(r"\$[\d.,]+", page.locator("#usage-total-cost").inner_text())
    expect(page.locator(".usage-section h2")).to_have_text(["By agent", "By model", "By day"])
    expect(page.locator(".usage-section").first).to_contain_text("Architect")
    with page.expect_download() as download:
        page.click("#usage-csv")
    assert download.value.suggested_filename.startswith("switchboard-usage-tester-")
    header = open(download.value.path(), encoding="utf-8").readline().strip()
    assert header == "day,user,agent_id,model_id,replies,prompt_tokens,completion_tokens,cost_usd"
    page.fill("input[name=from]", "2026-03-01")
    page.fill("input[name=to]", "2026-02-01")
    page.click(".usage-filters button[type=submit]")
    expect(page.locator(".usage-error")).to_have_text("from must be on or before to.")
    assert page.evaluate("() => window.__csp") == []


def test_screenshots_of_the_running_cost_and_the_usage_page(screens, page):
    new_chat(page, "architect")
    send(page, "Price the rollout @@tokens=60 @@delay_ms=2")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    names = []
    for shot, width, scheme in screens(page.url):
        expect(shot.locator("#session-cost")).to_be_visible()
        time.sleep(0.3)
        name = f"cost-header-{scheme}-{width}.png"
        shot.locator(".chat-head").screenshot(path=str(SCREENSHOTS / name))
        names.append(name)
        box = shot.locator("#session-cost").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width  # nothing off screen at 375 px
        shot.goto("/usage")
        expect(shot.locator("#usage-total-cost")).to_be_visible()
        name = f"cost-usage-{scheme}-{width}.png"
        shot.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        names.append(name)
        overflow = shot.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the Usage page scrolls sideways at {width} px"
    for name in names:
        assert (SCREENSHOTS / name).stat().st_size > 5_000
