"""The sessions pages in a real browser (Playwright driving Debian Chromium) with htmx 4: search as
you type with the URL following, the actions fragment swapping in place, errors landing in the
alert region, the list refreshing itself, delete behind its confirmation, and no CSP violation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from services.webui.models import new_id

from ..chromium import SCREENSHOTS, chromium
from ..support import free_port
from .test_sessions import add_session, conversation, get_session

pytestmark = pytest.mark.browser
HTMX = Path(__file__).resolve().parents[2] / "static" / "vendor" / "htmx.min.js"
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective));
"""


@pytest.fixture
def served(app, alice):
    if not HTMX.exists():
        pytest.skip("htmx is not installed under static/vendor (make assets)")
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page(served):
    with chromium() as browser:
        context = browser.new_context(base_url=served)
        context.add_init_script(CSP_PROBE)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto("/login")
        page.fill("#username", "alice")
        page.fill("#password", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url(served + "/")
        yield page


def test_search_as_you_type_archive_rename_and_delete(app, page, served):
    from playwright.sync_api import expect  # (CSP forbids eval: wait with locators, not functions)

    target = add_session(app, "alice", title="Release checklist", messages=conversation("q", "the nectarine rollout"))
    add_session(app, "alice", title="Budget", messages=conversation("q", "numbers"))
    busy = add_session(app, "alice", title="Busy one", messages=conversation(), active_run_id=new_id())

    page.goto("/sessions")
    results = page.locator("#sessions-results")
    assert results.locator(".sessions-row").count() == 3
    page.locator("#session-q").press_sequentially("nectar", delay=40)
    page.wait_for_url("**/sessions?*q=nectar*")  # the URL follows the search: bookmarkable
    expect(page.locator("#sessions-results .sessions-row")).to_have_count(1)
    assert results.locator("mark").first.inner_text().lower() == "nectarine"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "sessions-search.png"), full_page=True)
    assert "Budget" not in results.inner_text()
    page.reload()  # the bookmark shows the same results
    assert page.locator("#session-q").input_value() == "nectar"
    assert page.locator("#sessions-results .sessions-row").count() == 1

    # Archive from the list: the fragment swaps in place, then the list refreshes itself.
    page.select_option("select[name=archived]", "false")
    page.wait_for_url("**archived=false*")
    row = page.locator("#sessions-results .sessions-row").first
    row.get_by_role("button", name="Archive").click()
    expect(page.locator("#sessions-results .sessions-row")).to_have_count(0)
    assert get_session(app, target).archived_at is not None

    # A refused action (409) lands in the alert region and leaves the controls in place.
    page.goto(f"/sessions/{busy}")
    page.get_by_role("button", name="Archive").click()
    alert = page.locator(f"#session-actions-{busy}-error")
    alert.get_by_text("still being written").wait_for()
    assert page.get_by_role("button", name="Archive").is_visible()

    # Inline rename: no reload, the fragment comes back with the new title.
    page.goto(f"/sessions/{target}")
    page.screenshot(path=str(SCREENSHOTS / "sessions-review.png"), full_page=True)
    page.evaluate("window.__marker = 1")
    page.fill(f"#session-actions-{target}-title", "Release checklist v2")
    page.get_by_role("button", name="Rename").click()
    # The swapped-in fragment renders the saved title into the value attribute.
    expect(page.locator(f'#session-actions-{target}-title[value="Release checklist v2"]')).to_have_count(1)
    assert page.evaluate("window.__marker") == 1 and get_session(app, target).title == "Release checklist v2"

    # Delete sits behind a disclosure; confirming goes back to the list.
    page.locator(".session-delete > summary").click()
    page.get_by_role("button", name="Delete permanently").click()
    page.wait_for_url(served + "/sessions")
    assert get_session(app, target) is None
    assert page.evaluate("window.__csp") == []
