"""Issue #10, finding 2: every `next` goes through one helper that only allows same-site paths."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest

from services.webui.redirects import safe_next

from ..support import csrf_from

DEFAULT = "/home"
# Each of these is somewhere else once a browser has normalised it (WHATWG URL parsing strips
# tab/CR/LF anywhere and C0/space at the ends, and reads "\" as "/"), or is no path at all.
OFFSITE = [
    "//evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "\t//evil.example",
    " //evil.example",
    "\x00//evil.example",
    "//evil.example\x1f",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/%09/evil.example",
    "/%2F/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "http:/evil.example",
    "evil.example",
    "",
    None,
    "/\x7f",
    "/a\x00b",
    "/%0d%0aSet-Cookie:x=1",
]
LOCAL = ["/", "/sessions", "/sessions/abc?x=1&y=2", "/chat/abc#part", "/search?q=a%20b"]


@pytest.mark.parametrize("target", OFFSITE)
def test_anything_that_is_not_a_same_site_path_falls_back(target):
    assert safe_next(target, DEFAULT) == DEFAULT


@pytest.mark.parametrize("target", LOCAL)
def test_same_site_paths_are_kept(target):
    assert safe_next(target, DEFAULT) == target


def login(app, user, next_value: str):
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    return client.post(
        f"/login?next={quote(next_value, safe='')}",
        data={"username": user.username, "password": "correct horse battery", "csrf_token": token},
    )


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\r\n/evil.example", "/\\evil.example", "/%09/evil.example"])
def test_login_never_redirects_off_site_and_never_fails(app, make_user, target):
    user = make_user("mallory-target")
    response = login(app, user, target)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.netloc in ("", "localhost") and not location.path.startswith("//")


def test_login_keeps_a_local_next(app, make_user):
    user = make_user("local-next")
    response = login(app, user, "/sessions?q=x")
    assert response.status_code == 302 and response.headers["Location"].endswith("/sessions?q=x")


def test_a_logged_in_visit_to_login_with_a_crlf_next_is_not_a_500(app, alice):
    response = alice.get("/login?next=/%0d%0a/evil.example")
    assert response.status_code == 302 and "evil" not in response.headers["Location"]


def test_session_actions_use_the_same_helper(app, alice):
    from .test_sessions import add_session

    session_id = add_session(app, "alice", title="Redirects")
    for target in ("/\t/evil.example", "/\r\n/x", "/\\evil.example"):
        response = alice.post(f"/sessions/{session_id}/rename", data={"title": "y", "next": target})
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/sessions/{session_id}")
