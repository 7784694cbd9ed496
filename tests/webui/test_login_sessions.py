"""Issue #10, finding 3: logins can end (logout, password change, admin), CSRF tokens rotate and expire."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services.webui import auth
from services.webui.extensions import db
from services.webui.models import LoginSession, utcnow

from ..support import UserClient, csrf_from

PASSWORD = "correct horse battery"
COOKIE = "switchboard_session"


def copy_of(app, user: UserClient):
    """A second client holding the same cookie, as a thief who copied it would."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, user.client.get_cookie(COOKIE).value)
    return thief


def logged_in(client) -> bool:
    return client.get("/api/me").status_code == 200


def test_logout_ends_the_login_for_every_copy_of_its_cookie(app, alice):
    thief = copy_of(app, alice)
    assert logged_in(thief)
    assert alice.post("/logout").status_code == 302
    assert not logged_in(thief) and not logged_in(alice.client)


def test_logout_ends_only_that_login(app, make_user):
    first = make_user("frank")
    second = UserClient(app, "frank", PASSWORD)
    first.post("/logout")
    assert logged_in(second.client) and not logged_in(first.client)


def test_flask_users_passwd_ends_every_login_of_the_user(app, alice, bob, runner):
    thief = copy_of(app, alice)
    result = runner.invoke(args=["users", "passwd", "alice", "--password", "a new one", "--password", "a new one"])
    assert result.exit_code == 0, result.output
    assert not logged_in(alice.client) and not logged_in(thief)
    assert logged_in(bob.client)
    UserClient(app, "alice", "a new one")  # the new password works


def test_flask_users_logout_all_ends_every_login_of_the_user(app, alice, bob, runner):
    second = UserClient(app, "alice", PASSWORD)
    result = runner.invoke(args=["users", "logout-all", "alice"])
    assert result.exit_code == 0 and "2 logins" in result.output, result.output
    assert not logged_in(alice.client) and not logged_in(second.client) and logged_in(bob.client)
    unknown = runner.invoke(args=["users", "logout-all", "nobody"])
    assert unknown.exit_code != 0 and "no user 'nobody'" in unknown.output


def test_an_expired_login_is_over(app, alice):
    with app.app_context():
        db.session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert not logged_in(alice.client)


def test_a_cookie_from_before_this_change_no_longer_logs_in(app, alice):
    """A signed cookie naming only a user id (what every login wrote until now) is not enough."""
    with alice.client.session_transaction() as session:
        session.pop("login_session")
    assert not logged_in(alice.client)


def test_logging_in_clears_expired_logins_of_the_user(app, alice):
    with app.app_context():
        db.session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    UserClient(app, "alice", PASSWORD)
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(LoginSession)) == 1


# ---- the change-password page ----------------------------------------------------------------


def change(user: UserClient, current: str, new: str, again: str | None = None, **kwargs):
    page = user.client.get("/account/password")
    assert page.status_code == 200
    data = {
        "current_password": current,
        "new_password": new,
        "new_password_again": new if again is None else again,
        "csrf_token": csrf_from(page.text),
    }
    return user.client.post("/account/password", data=data, **kwargs)


def test_the_layout_links_to_the_change_password_page(alice):
    assert 'href="/account/password"' in alice.get("/").text


def test_changing_the_password_ends_the_other_logins_only(app, alice):
    other = UserClient(app, "alice", PASSWORD)
    thief = copy_of(app, other)
    response = change(alice, PASSWORD, "brand new password")
    assert response.status_code == 200 and "Your password has been changed" in response.text
    assert logged_in(alice.client) and not logged_in(other.client) and not logged_in(thief)
    UserClient(app, "alice", "brand new password")
    with pytest.raises(AssertionError):
        UserClient(app, "alice", PASSWORD)


@pytest.mark.parametrize(
    "current, new, again, sentence",
    [
        ("wrong password", "brand new password", None, "Your current password is not right."),
        (PASSWORD, "brand new password", "something else", "The new passwords do not match."),
        (PASSWORD, "short", None, "at least 8 characters"),
        (PASSWORD, PASSWORD, None, "different from the current one"),
        ("", "brand new password", None, "Enter your current password"),
    ],
)
def test_a_refused_change_says_why_and_changes_nothing(app, alice, current, new, again, sentence):
    other = UserClient(app, "alice", PASSWORD)
    response = change(alice, current, new, again)
    assert response.status_code == 400 and sentence in response.text
    assert logged_in(other.client)
    UserClient(app, "alice", PASSWORD)


def test_changing_the_password_needs_a_csrf_token(alice):
    response = alice.client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "brand new password",
            "new_password_again": "brand new password",
        },
    )
    assert response.status_code == 400 and "security token" in response.text


def test_changing_the_password_needs_a_login(client):
    assert client.get("/account/password").status_code == 302


# ---- CSRF tokens -----------------------------------------------------------------------------


def test_the_csrf_token_rotates_at_login(app, make_user):
    make_user("gina")
    client = app.test_client()
    before = csrf_from(client.get("/login").text)
    with client.session_transaction() as session:
        raw_before = session["csrf_token"]
    client.post("/login", data={"username": "gina", "password": PASSWORD, "csrf_token": before})
    with client.session_transaction() as session:
        assert session.get("csrf_token") != raw_before
    after = client.get("/api/me").json["csrf_token"]
    refused = client.post("/api/chat/sessions/import", json={}, headers={"X-CSRFToken": before})
    assert refused.status_code == 400 and refused.json["error"] == "csrf_failed"
    accepted = client.post("/api/chat/sessions/import", json={}, headers={"X-CSRFToken": after})
    assert accepted.status_code != 400 or accepted.json["error"] != "csrf_failed"


def test_csrf_tokens_expire(app_config, make_user):
    from services.webui import create_app

    app = create_app({**app_config, "WTF_CSRF_TIME_LIMIT": 1})
    assert app.config["WTF_CSRF_TIME_LIMIT"] == 1
    with app.app_context():
        auth.create_user("hank", PASSWORD)
    user = UserClient(app, "hank", PASSWORD)
    time.sleep(2.1)
    response = user.post("/api/chat/sessions/import", json={})
    assert response.status_code == 400 and response.json["error"] == "csrf_failed"


def test_csrf_tokens_expire_by_default(app):
    limit = app.config["WTF_CSRF_TIME_LIMIT"]
    assert limit is not None and 0 < limit <= 24 * 3600


# ---- Argon2 off the gevent hub ----------------------------------------------------------------


def test_password_hashing_runs_in_the_threadpool_under_gevent(monkeypatch):
    monkeypatch.setattr(auth, "_under_gevent", lambda: True)
    main = threading.get_ident()
    assert auth.off_the_hub(threading.get_ident) != main
    monkeypatch.setattr(auth, "_under_gevent", lambda: False)
    assert auth.off_the_hub(threading.get_ident) == main


# ---- an admin ends a user's logins ------------------------------------------------------------


def test_an_admin_can_end_every_login_of_a_user(app, make_user, bob):
    admin = make_user("root", role="admin")
    thief = copy_of(app, bob)
    page = admin.get("/account/users")
    assert page.status_code == 200 and "bob" in page.text and 'href="/account/users"' in page.text
    response = admin.post("/account/users/bob/logout-all")
    assert response.status_code == 303 and response.headers["Location"].endswith("/account/users?ended=bob")
    assert "Ended every login of bob" in admin.get("/account/users?ended=bob").text
    assert not logged_in(bob.client) and not logged_in(thief) and logged_in(admin.client)


def test_only_an_admin_may_end_logins_of_others(app, alice, bob):
    assert alice.get("/account/users").status_code == 403
    response = alice.post("/account/users/bob/logout-all")
    assert response.status_code == 403 and "Only an admin" in response.text
    assert logged_in(bob.client)
    assert 'href="/account/users"' not in alice.get("/").text


def test_ending_logins_of_an_unknown_user_is_a_404(app, make_user):
    admin = make_user("root2", role="admin")
    assert admin.post("/account/users/nobody/logout-all").status_code == 404
