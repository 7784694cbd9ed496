"""Browser tests: Playwright (sync API) driving Debian Chromium against the app served by gunicorn
with real reference agents (tests/servers.py LiveStack), started once for this package.

Package scope, not session: Playwright's sync API cannot nest, so its loop must be stopped before
other suites that start their own (tests/webui/test_sessions_browser.py) run.
"""

from __future__ import annotations

import pytest

from ..chromium import SCREENSHOTS, chromium
from ..servers import LiveStack
from ..support import free_port

MAX_MESSAGE_CHARS = 2000
# The screens the screenshots are taken on: width -> height.
SCREEN_HEIGHTS = {1280: 800, 375: 740}
# Short, so a stalled reply shows its notice within seconds (tests/browser/test_progress.py).
STALL_NOTICE_SECONDS = 3

# Runs in every page before its own scripts: records what the tests need to prove things.
PROBE = """
window.__dialogs = 0;
window.__csp = [];
window.__states = [];
window.__requests = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + (e.sample || '')));
window.__reconnecting = [];
const record = () => {
  const lost = document.querySelector('.reply-stream.reconnecting');
  if (lost && window.__reconnecting[window.__reconnecting.length - 1] !== lost.textContent) window.__reconnecting.push(lost.textContent);
  const replies = document.querySelectorAll('#messages .turn-assistant');
  const reply = replies[replies.length - 1];
  if (!reply) return;
  const body = reply.querySelector('.turn-body');
  const state = reply.id + '|' + reply.dataset.status + '|' + (body ? body.textContent.length : 0);
  if (window.__states[window.__states.length - 1] !== state) window.__states.push(state);
};
new MutationObserver(record).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    down = {"agent_id": "dir-ops", "parent_role": "architect", "name": "Ops Director", "port": free_port()}
    with LiveStack(
        tmp_path_factory.mktemp("browser"),
        extra_agents=[down],
        env_overrides={"MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS), "STALL_NOTICE_SECONDS": str(STALL_NOTICE_SECONDS)},
    ) as stack:
        yield stack


@pytest.fixture(scope="package")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="package")
def logged_in_state(stack, browser):
    """Cookies of one login through the login form, reused by the other tests' contexts."""
    return storage_state(browser, stack, stack.username, stack.password)


def storage_state(browser, stack, username: str, password: str) -> dict:
    """The cookies of `username` logged in through the login form, for new contexts."""
    context = new_context(browser, stack)
    login(new_page(context), stack, username, password)
    state = context.storage_state()
    context.close()
    return state


def login(page, stack, username: str | None = None, password: str | None = None):
    page.goto("/login")
    page.fill("#username", username or stack.username)
    page.fill("#password", password or stack.password)
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/")


def new_context(browser, stack, **options):
    """A browser context on the app with the PROBE in every page (1280 x 800 unless told)."""
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.new_context(base_url=stack.base_url, **options)
    context.add_init_script(PROBE)
    return context


def new_page(context, timeout: int = 10_000):
    """A page that records dialogs (dismissed) and console errors: page.dialogs, page.console_errors."""
    page = context.new_page()
    page.set_default_timeout(timeout)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.console_errors = []
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    return page


@pytest.fixture
def context(browser, stack, logged_in_state):
    context = new_context(browser, stack, storage_state=logged_in_state)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return new_page(context)


@pytest.fixture
def screens(browser, stack, logged_in_state):
    """`screens(url)` yields, for each screen width (1280, 375) and colour scheme (light, dark),
    `(page, width, scheme)`: a fresh logged-in page (a context of its own, with the PROBE) at `url`.
    Each context closes when the next page is asked for (any left open, at teardown).
    The test waits and takes its screenshot into SCREENSHOTS (made here) under its own name.
    `widths`, `schemes` narrow the set; `state` logs in as another user (storage_state()).
    """
    opened = []

    def screens(url: str, widths=tuple(SCREEN_HEIGHTS), schemes=("light", "dark"), state=None):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for width in widths:
            for scheme in schemes:
                context = new_context(
                    browser,
                    stack,
                    storage_state=state or logged_in_state,
                    color_scheme=scheme,
                    viewport={"width": width, "height": SCREEN_HEIGHTS[width]},
                )
                opened.append(context)
                page = new_page(context, timeout=15_000)
                page.goto(url)
                yield page, width, scheme
                opened.remove(context)
                context.close()

    yield screens
    for context in opened:
        context.close()
