"""Driving the chat page in the browser tests: send from the composer, find the replies, wait."""

from __future__ import annotations

import time

import requests
from playwright.sync_api import expect


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def last_reply(page):
    return page.locator("#messages .turn-assistant").last


def message_id(locator) -> str:
    return locator.get_attribute("id").removeprefix("msg-")


def reply_text(locator) -> str:
    return locator.locator(".turn-body").inner_text()


def new_chat(page, agent_id: str | None = None) -> None:
    page.goto(f"/?agent_id={agent_id}" if agent_id else "/")
    expect(page.locator("#composer-input")).to_be_visible()


def wait_for_text(reply, minimum: int = 1, timeout: float = 20) -> None:
    """Until the reply shows at least `minimum` characters."""
    deadline = time.monotonic() + timeout
    while len(reply_text(reply)) < minimum:
        assert time.monotonic() < deadline, "the reply did not start"
        time.sleep(0.05)


def agent_task(stack, agent_id: str, task_id: str) -> dict:
    """What the reference agent recorded of a task (a reply's message id)."""
    return requests.get(f"{stack.agent_url(agent_id)}/tasks/{task_id}", timeout=5).json()
