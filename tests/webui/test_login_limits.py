"""Issue #10, findings 6 and 7: unknown usernames are never logged verbatim; failures back off per account."""

from __future__ import annotations

import io
import logging

import pytest

from services.webui import create_app
from services.webui.auth import create_user
from services.webui.logs import JsonLineFormatter

from ..support import csrf_from

PASSWORD = "correct horse battery"


@pytest.fixture
def log_output():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def attempt(client, username: str, password: str):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_an_unknown_username_is_never_logged_verbatim(app, make_user, log_output):
    make_user("kate", PASSWORD)
    typed_into_the_wrong_box = "Kate's-Password-42"
    client = app.test_client()
    assert attempt(client, typed_into_the_wrong_box, "").status_code == 401
    assert attempt(client, typed_into_the_wrong_box, "anything").status_code == 401
    assert attempt(client, "kate", "wrong").status_code == 401
    output = log_output.getvalue()
    assert typed_into_the_wrong_box not in output and typed_into_the_wrong_box.lower() not in output
    assert "login failed for an unknown user" in output
    assert "login failed for user kate" in output  # known accounts may be named


def test_the_unknown_user_tag_is_stable_and_not_a_plain_hash(app, log_output):
    import hashlib

    client = app.test_client()
    attempt(client, "ghost", "x")
    attempt(client, "ghost", "y")
    lines = [line for line in log_output.getvalue().splitlines() if "unknown user" in line]
    assert len(lines) == 2 and lines[0].split("tag ")[1][:8] == lines[1].split("tag ")[1][:8]
    assert hashlib.sha256(b"ghost").hexdigest()[:8] not in log_output.getvalue()


@pytest.fixture
def limited_app(app_config):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "1000 per minute", "LOGIN_ACCOUNT_RATE_LIMIT": "3 per minute"})
    with app.app_context():
        create_user("ivan", PASSWORD)
        create_user("judy", PASSWORD)
    return app


def test_failures_back_off_per_account_even_from_many_addresses(limited_app):
    addresses = [f"10.0.0.{i}" for i in range(1, 5)]
    codes = []
    for address in addresses:
        client = limited_app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        codes.append(attempt(client, "ivan", "wrong").status_code)
    assert codes == [401, 401, 401, 429]
    blocked = attempt(limited_app.test_client(), "ivan", PASSWORD)
    assert blocked.status_code == 429 and "Too many attempts" in blocked.text
    assert attempt(limited_app.test_client(), "judy", PASSWORD).status_code == 302  # other accounts unaffected


def test_the_account_limit_ignores_case_and_spaces(limited_app):
    for name in ("ivan", " ivan", "IVAN"):
        attempt(limited_app.test_client(), name, "wrong")
    assert attempt(limited_app.test_client(), "Ivan ", "wrong").status_code == 429


def test_successful_logins_do_not_count_towards_the_account_limit(limited_app):
    for _ in range(5):
        assert attempt(limited_app.test_client(), "judy", PASSWORD).status_code == 302
