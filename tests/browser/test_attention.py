"""Attention in Chromium: the sidebar's marks, the tab title's count, notifications while hidden,
Send that never turns into Stop under the cursor, and Esc that stops only from the composer.

The module logs in as its own user, and each test starts with nothing marked, so that chats of
other tests never add to its marks or counts.
Replies are started through the JSON API where no page should be looking at them.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from ..chromium import SCREENSHOTS
from .chat_page import send
from .conftest import login, new_context, new_page, storage_state

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "attention-password-123"
# Marks follow the server within a poll (ATTENTION_POLL_SECONDS, 5 s) or two.
POLL_WAIT = 30_000

# Notification recorded instead of shown; document.hidden under the test's control (Playwright
# cannot hide a tab). The permission itself is the browser's, granted by the context.
HIDDEN_AND_NOTES = """
window.__notes = [];
const RealNotification = window.Notification;
class RecordedNotification {
  constructor(title, options) {
    this.title = title;
    this.options = options || {};
    window.__notes.push({title, body: this.options.body, tag: this.options.tag});
    window.__lastNote = this;
  }
  close() { this.closed = true; }
  static get permission() { return RealNotification.permission; }
  static requestPermission() { return RealNotification.requestPermission(); }
}
window.Notification = RecordedNotification;
let __hidden = false;
Object.defineProperty(Document.prototype, "hidden", {get: () => __hidden, configurable: true});
Object.defineProperty(Document.prototype, "visibilityState", {get: () => (__hidden ? "hidden" : "visible"), configurable: true});
window.__setHidden = (value) => { __hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
"""


@pytest.fixture(scope="module")
def attention_user(stack):
    """One user for this module (a user is a CLI call, slow on a busy machine): (name, api session)."""
    stack.add_user("attention", PASSWORD)
    return "attention", stack.login("attention", PASSWORD)


@pytest.fixture
def user(attention_user):
    """The module's user with nothing marked: earlier tests' chats stopped and seen."""
    name, api = attention_user
    for item in api.get("/api/chat/attention").json()["sessions"]:
        if item["state"] != "unseen":
            api.post(f"/api/chat/sessions/{item['id']}/cancel")
            wait_until_ended(api, item["id"])
        assert api.post(f"/api/chat/sessions/{item['id']}/seen").status_code == 200
    assert api.get("/api/chat/attention").json()["sessions"] == []
    return name, api


@pytest.fixture
def own_page(browser, stack, user):
    """(context, page): a page logged in as the module's user, in a context closed after the test."""
    context = new_context(browser, stack)
    page = new_page(context, timeout=15_000)
    login(page, stack, user[0], PASSWORD)
    yield context, page
    context.close()


def api_send(api, content, agent_id="architect", session_id=None) -> dict:
    body = {"agent_id": agent_id, "content": content}
    if session_id:
        body["session_id"] = session_id
    response = api.post("/api/chat/message", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_until_ended(api, session_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        messages = api.get(f"/api/chat/sessions/{session_id}").json()["messages"]
        if messages[-1]["status"] in ("complete", "cancelled", "error", "interrupted"):
            return
        assert time.monotonic() < deadline, "the reply did not end"
        time.sleep(0.2)


def mark(page, session_id: str):
    return page.locator(f'#session-list li[data-session-id="{session_id}"] .attention-mark')


def test_running_and_unseen_marks_the_title_count_and_opening_clears(user, own_page):
    _, api = user
    _, page = own_page
    quiet = api_send(api, "Seen already @@tokens=3 @@delay_ms=1")["session_id"]
    wait_until_ended(api, quiet)
    with page.expect_response(lambda r: r.url.endswith(f"/api/chat/sessions/{quiet}/seen")):
        page.goto(f"/chat/{quiet}")  # looked at: not marked
    long = api_send(api, "Long one @@tokens=120 @@delay_ms=60")["session_id"]
    page.goto("/")
    expect(mark(page, long)).to_have_attribute("data-state", "running")
    expect(mark(page, long)).to_have_text("Running")
    expect(page).to_have_title("New chat · Switchboard")  # running is not a count

    # It ends while the person is on another page: "New reply", counted in the title.
    expect(mark(page, long)).to_have_attribute("data-state", "unseen", timeout=POLL_WAIT)
    expect(mark(page, long)).to_have_text("New reply")
    expect(page).to_have_title("(1) New chat · Switchboard")
    expect(mark(page, quiet)).to_have_count(0)

    # Opening it reports it seen: the mark and the count go, in this tab and after a reload.
    with page.expect_response(lambda r: r.url.endswith(f"/api/chat/sessions/{long}/seen")) as seen:
        page.click(f'#session-list li[data-session-id="{long}"] a')
    assert seen.value.status == 200
    expect(mark(page, long)).to_have_count(0)
    expect(page).to_have_title(re.compile(r"^Long one @@.* · Switchboard$"))
    page.goto("/")
    expect(mark(page, long)).to_have_count(0)
    page.wait_for_function("() => !document.title.startsWith('(')")
    assert page.evaluate("() => window.__csp") == []


def test_a_reply_ending_on_screen_is_seen_and_a_waiting_chat_is_counted(user, own_page):
    _, api = user
    _, page = own_page
    page.goto("/?agent_id=architect")
    seen = []
    page.on("response", lambda r: seen.append(r.status) if r.url.endswith("/seen") else None)
    send(page, "Watch me end @@tokens=30 @@delay_ms=20")
    expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
    sid = page.url.rsplit("/", 1)[1]
    expect(page.locator("#messages .turn-assistant").last).to_have_attribute("data-status", "complete")
    deadline = time.monotonic() + POLL_WAIT / 1000
    while not seen:  # the page reports the end it saw, within a poll
        assert time.monotonic() < deadline, "the page did not report the reply seen"
        page.wait_for_timeout(200)
    assert seen == [200]
    # A chat started elsewhere appears in the list (the sidebar is fetched again) with its mark.
    waiting = api_send(api, "Approve me @@status=awaiting_approval @@first_token_ms=10 @@tokens=600 @@delay_ms=100")
    expect(mark(page, waiting["session_id"])).to_have_text("Needs approval", timeout=POLL_WAIT)
    expect(page).to_have_title(re.compile(r"^\(1\) Watch me end @@.* · Switchboard$"))
    page.goto("/")  # the chat that ended on screen stays unmarked
    expect(mark(page, sid)).to_have_count(0)
    expect(mark(page, waiting["session_id"])).to_have_attribute("data-state", "waiting")
    api.post(f"/api/chat/sessions/{waiting['session_id']}/cancel")
    assert page.evaluate("() => window.__csp") == []


def test_notifications_opt_in_and_fire_only_while_hidden(stack, user, own_page):
    _, api = user
    context, page = own_page
    context.grant_permissions(["notifications"], origin=stack.base_url)
    context.add_init_script(HIDDEN_AND_NOTES)
    page.goto("/")
    toggle = page.locator(".attention-notify-toggle")
    expect(toggle).to_have_text("Notify me")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(toggle).to_have_text("Notifications on")
    assert page.evaluate("() => localStorage.getItem('switchboard.notify')") == "on"

    # Visible: a reply that ends tells nobody.
    shown = api_send(api, "While you look @@tokens=3 @@delay_ms=1")["session_id"]
    expect(mark(page, shown)).to_have_attribute("data-state", "unseen", timeout=POLL_WAIT)
    assert page.evaluate("() => window.__notes") == []

    # Hidden: one that ends, and one that asks for approval, each notify once.
    page.evaluate("() => window.__setHidden(true)")
    ended = api_send(api, "Tell me when done @@tokens=20 @@delay_ms=20")["session_id"]
    page.wait_for_function("() => window.__notes.length >= 1", timeout=POLL_WAIT)
    note = page.evaluate("() => window.__notes[0]")
    assert note["title"].startswith("Reply finished: Tell me when done @@")
    assert note["tag"].startswith(f"switchboard-{ended}-")
    waiting = api_send(api, "Ask me first @@status=awaiting_approval @@first_token_ms=10 @@tokens=600 @@delay_ms=100")[
        "session_id"
    ]
    page.wait_for_function("() => window.__notes.length >= 2", timeout=POLL_WAIT)
    assert page.evaluate("() => window.__notes[1].title").startswith("Needs your approval: Ask me first @@")
    api.post(f"/api/chat/sessions/{waiting}/cancel")

    assert page.evaluate("() => window.__notes.length") == 2  # nothing fired twice

    # Clicking a notification brings the chat up (a new page: nothing recorded yet).
    page.evaluate("() => window.__lastNote.onclick()")
    expect(page).to_have_url(f"{stack.base_url}/chat/{waiting}")

    # Turned off: hidden or not, nothing more.
    page.evaluate("() => window.__setHidden(false)")
    page.click(".attention-notify-toggle")
    expect(page.locator(".attention-notify-toggle")).to_have_attribute("aria-pressed", "false")
    page.evaluate("() => window.__setHidden(true)")
    quiet = api_send(api, "Quietly @@tokens=3 @@delay_ms=1")["session_id"]
    wait_until_ended(api, quiet)
    page.evaluate("() => window.__setHidden(false)")
    expect(mark(page, quiet)).to_have_attribute("data-state", "unseen", timeout=POLL_WAIT)
    assert page.evaluate("() => window.__notes") == []
    assert page.evaluate("() => window.__csp") == []


def test_send_does_not_turn_into_stop_under_the_cursor_when_another_tab_starts_a_reply(own_page):
    context, page = own_page
    page.goto("/?agent_id=architect")
    send(page, "First @@tokens=3 @@delay_ms=1")
    expect(page.locator("#messages .turn-assistant").last).to_have_attribute("data-status", "complete")
    other = context.new_page()
    other.goto(page.url)
    page.bring_to_front()
    page.hover("#composer-button")
    before = page.locator("#composer-button").bounding_box()

    send(other, "From the other tab @@tokens=300 @@delay_ms=40")
    expect(page.locator("#composer-stop")).to_be_visible()  # the watcher saw it
    send_button = page.locator("#composer-button")
    expect(send_button).to_have_text("Send")
    expect(send_button).to_have_attribute("aria-disabled", "true")
    assert send_button.bounding_box() == before  # Send did not move; Stop appeared beside it
    stop_box = page.locator("#composer-stop").bounding_box()
    assert stop_box["x"] + stop_box["width"] <= before["x"]

    # The click meant to send (under the cursor all along) cancels nothing: it says why.
    page.mouse.down()
    page.mouse.up()
    expect(page.locator("#composer-error")).to_have_text(
        "A reply is still being written. Press Esc to stop it, or wait for it to finish."
    )
    reply = page.locator("#messages .turn-assistant").last
    assert reply.get_attribute("data-status") not in ("cancelled", "complete")
    page.click("#composer-stop")
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#composer-stop")).to_have_count(0)
    expect(page.locator("#composer-input")).to_be_focused()  # focus is not lost with Stop
    assert page.evaluate("() => window.__csp") == []


def test_esc_in_a_select_or_a_menu_does_not_stop_and_menus_close(own_page):
    _, page = own_page
    stops = []
    page.on("request", lambda r: stops.append(r.url) if r.method == "POST" and r.url.endswith("/stop") else None)
    page.goto("/?agent_id=architect")
    send(page, "Keep going @@tokens=400 @@delay_ms=40")
    expect(page.locator("#composer-stop")).to_be_visible()
    reply = page.locator("#messages .turn-assistant").last
    menu = page.locator("details.session-menu")

    page.focus("#model-select")
    page.keyboard.press("Escape")

    page.click("details.session-menu > summary")
    expect(menu).to_have_attribute("open", "")
    page.keyboard.press("Escape")  # focus on the menu's summary
    expect(menu).not_to_have_attribute("open", "")
    expect(page.locator("details.session-menu > summary")).to_be_focused()

    page.click("details.session-menu > summary")
    page.focus(".session-menu .session-title-input")
    page.keyboard.press("Escape")  # from inside the menu
    expect(menu).not_to_have_attribute("open", "")

    page.click("details.session-menu > summary")
    expect(menu).to_have_attribute("open", "")
    page.click("#messages")  # an outside click
    expect(menu).not_to_have_attribute("open", "")

    assert stops == [] and reply.get_attribute("data-status") not in ("cancelled", "complete")
    page.focus("#composer-input")
    page.keyboard.press("Escape")
    expect(reply).to_have_attribute("data-status", "cancelled")
    assert len(stops) == 1
    assert page.evaluate("() => window.__csp") == []


def test_screenshots_of_the_sidebar_marks(browser, stack, user, screens):
    name, api = user
    running = api_send(api, "Refactor the billing module @@tokens=400 @@delay_ms=80")["session_id"]
    waiting = api_send(
        api,
        "Deploy to production @@status=awaiting_approval @@first_token_ms=10 @@tokens=600 @@delay_ms=100",
        "dir-code",
    )
    unseen = api_send(api, "Summarise the incident report @@tokens=5 @@delay_ms=1", "dir-data")["session_id"]
    wait_until_ended(api, unseen)
    titles = {
        running: "Refactor the billing module",
        waiting["session_id"]: "Deploy to production",
        unseen: "Summarise the incident report",
    }
    for sid, title in titles.items():
        assert api.patch(f"/api/chat/sessions/{sid}", json={"title": title}).status_code == 200
    names = []
    try:
        for page, width, scheme in screens("/", state=storage_state(browser, stack, name, PASSWORD)):
            if width < 760:
                page.click(".sidebar-toggle")
                expect(page.locator("#sidebar")).to_be_visible()
            expect(mark(page, running)).to_have_text("Running")
            expect(mark(page, waiting["session_id"])).to_have_text("Needs approval")
            expect(mark(page, unseen)).to_have_text("New reply")
            expect(page).to_have_title("(2) New chat · Switchboard")
            time.sleep(0.3)  # the drawer's transition
            path = SCREENSHOTS / f"attention-sidebar-{scheme}-{width}.png"
            page.screenshot(path=str(path))
            names.append(path)
            assert page.evaluate("() => window.__csp") == []
    finally:
        api.post(f"/api/chat/sessions/{running}/cancel")
        api.post(f"/api/chat/sessions/{waiting['session_id']}/cancel")
    assert all(path.stat().st_size > 10_000 for path in names) and len(names) == 4
