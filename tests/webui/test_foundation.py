"""The foundation's promises: migrations, pragmas, login everywhere, CSRF, CSP, logs, bad input."""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from services.webui import ConfigError, create_app, database
from services.webui.extensions import db
from services.webui.logs import JsonLineFormatter
from services.webui.security import PUBLIC_ENDPOINTS

from ..support import UserClient, base_config, csrf_from, write_registry

ROOT = Path(__file__).resolve().parents[2]
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
EXPECTED_TABLES = {"users", "conversation_sessions", "messages", "runs", "idempotency_keys"}


def sample_url(rule) -> str:
    values = {arg: "00000000-0000-4000-8000-000000000000" for arg in rule.arguments}
    if rule.endpoint == "static":
        values = {"filename": "css/app.css"}
    return rule.build(values, append_unknown=False)[1]


def protected_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_migrations_upgrade_to_head_and_downgrade_to_base(tmp_path, agents_file):
    db_path = tmp_path / "empty.db"
    app = create_app(base_config(tmp_path, db_path, agents_file))
    with app.app_context():
        upgrade()
        assert EXPECTED_TABLES <= set(inspect(db.engine).get_table_names())
        downgrade(revision="base")
        remaining = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert not remaining & EXPECTED_TABLES
        upgrade()  # and back up again: the downgrade left a database that migrates cleanly
        assert EXPECTED_TABLES <= set(inspect(db.engine).get_table_names())


def test_models_and_migrations_agree(app):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.webui.database import include_in_autogenerate

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_in_autogenerate})
        assert compare_metadata(context, db.metadata) == []


def test_sqlite_pragmas_on_a_fresh_connection(app):
    with app.app_context():
        db.engine.dispose()
        with db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            # The serving thread waits in SQLite's C busy handler only a moment (it would hold
            # every stream of a gevent worker); longer waits yield in Python.
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() <= 50
    from services.webui.runs import run_manager

    with run_manager(app).store.engine.connect() as conn:  # the run store waits on its own thread
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_a_writer_waits_for_the_write_lock_in_python_not_in_sqlites_busy_handler(tmp_path, monkeypatch):
    """Under gevent a wait in SQLite's C busy handler holds every stream of the worker: each try
    at the lock must fail at once, with the waits in between (which yield) done in Python."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute(f"PRAGMA busy_timeout={database.READ_BUSY_TIMEOUT_MS}")
    seen = []

    def sleep(seconds):
        seen.append(writer.execute("PRAGMA busy_timeout").fetchone()[0])
        if len(seen) == 2:
            holder.execute("COMMIT")  # the other writer is done

    monkeypatch.setattr(database, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    database.begin_immediate(writer, wait_seconds=30)
    assert writer.in_transaction  # the lock was taken after the holder let go
    assert seen == [0, 0]  # no C busy wait while trying
    writer.execute("ROLLBACK")
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == database.READ_BUSY_TIMEOUT_MS  # reads as before

    holder.execute("BEGIN IMMEDIATE")
    seen.clear()
    with pytest.raises(database.DatabaseUnavailable):
        database.begin_immediate(writer, wait_seconds=0)
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == database.READ_BUSY_TIMEOUT_MS
    holder.execute("ROLLBACK")


def test_every_non_public_route_needs_login(app):
    client = app.test_client()
    token = csrf_from(client.get("/login").text)  # a valid token, so that only the login check is left
    checked = 0
    for rule, method in protected_routes(app):
        url = sample_url(rule)
        response = client.open(url, method=method, headers={"X-CSRFToken": token})
        if url.startswith("/api/"):
            assert response.status_code == 401, f"{method} {url} -> {response.status_code}"
            assert response.json["error"] == "login_required"
        else:
            assert response.status_code in (302, 401), f"{method} {url} -> {response.status_code}"
            if response.status_code == 302:
                assert "/login" in response.headers["Location"]
        checked += 1
    assert checked >= 5


def test_every_state_changing_route_rejects_a_missing_csrf_token(app, alice):
    checked = 0
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & WRITE_METHODS):
            response = alice.client.open(sample_url(rule), method=method, json={})
            assert response.status_code == 400, f"{method} {rule.rule} -> {response.status_code}"
            assert "reload" in response.text.lower()
            checked += 1
    assert checked >= 3


def test_html_responses_carry_a_strict_csp(app, alice):
    anonymous = app.test_client()
    responses = [anonymous.get("/login"), anonymous.get("/no-such-page"), alice.get("/")]
    for response in responses:
        assert response.mimetype == "text/html"
        csp = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "object-src 'none'" in csp


def test_templates_have_no_inline_script_style_or_hx_on():
    offences = []
    for path in (ROOT / "templates").rglob("*.html"):
        source = path.read_text()
        for match in re.finditer(r"<script\b([^>]*)>(.*?)</script>", source, re.S | re.I):
            if "src=" not in match.group(1) or match.group(2).strip():
                offences.append(f"{path.name}: inline <script>")
        if re.search(r"\sstyle\s*=", source, re.I):
            offences.append(f"{path.name}: style= attribute")
        if re.search(r"<style\b", source, re.I):
            offences.append(f"{path.name}: <style> element")
        if re.search(r"hx-on", source, re.I):
            offences.append(f"{path.name}: hx-on handler")
    assert not offences


def test_login_log_lines_contain_no_password(app, make_user):
    password = "s3cret-Pa55word-never-logged"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logging.getLogger().addHandler(handler)
    try:
        make_user("carol", password)
        anonymous = app.test_client()
        token = csrf_from(anonymous.get("/login").text)
        anonymous.post("/login", data={"username": "carol", "password": password + "x", "csrf_token": token})
        # A careless line elsewhere is still redacted by the formatter.
        logging.getLogger("switchboard.test").warning("form was password=%s", password)
    finally:
        logging.getLogger().removeHandler(handler)
    output = stream.getvalue()
    assert "login succeeded for user carol" in output and "login failed for user carol" in output
    assert password not in output
    for line in output.splitlines():
        json.loads(line)  # one structured line per record


def test_wrong_password_and_unknown_user_get_the_same_message(app, make_user):
    make_user("dave", "right password here")
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    wrong = client.post("/login", data={"username": "dave", "password": "nope", "csrf_token": token})
    unknown = client.post("/login", data={"username": "nobody", "password": "nope", "csrf_token": token})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text


def test_login_attempts_are_rate_limited(app_config):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute"})
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    codes = [
        client.post("/login", data={"username": "x", "password": "y", "csrf_token": token}).status_code
        for _ in range(4)
    ]
    assert codes[:3] == [401, 401, 401] and codes[3] == 429


def test_cookies_are_httponly_lax_and_secure_over_https(app, make_user):
    make_user("erin", "a long enough password")
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        client = app.test_client()
        page = client.get("/login", base_url=base)
        response = client.post(
            "/login",
            base_url=base,
            data={"username": "erin", "password": "a long enough password", "csrf_token": csrf_from(page.text)},
        )
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def test_healthz_reports_database_registry_and_agents_to_a_logged_in_user(alice):
    response = alice.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["database"] == "ok" and body["registry"]["loaded"] and body["registry"]["agents"] == 2
    assert body["agents"] == {"architect": "down", "dir-code": "down"}  # nothing listens on their ports
    assert body["events"] == {"bus": "memory", "ok": True, "live_runs": 0}
    assert response.headers["X-Request-ID"]


def test_healthz_reports_a_database_that_cannot_write_as_degraded(alice, app_config):
    import sqlite3

    holder = sqlite3.connect(app_config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        response = alice.get("/healthz")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    assert response.json["status"] == "degraded" and response.json["database"] == "read-only"
    assert alice.get("/healthz").json["database"] == "ok"


def test_healthz_tells_anyone_else_the_overall_status_only(client, monkeypatch):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}
    assert "architect" not in response.text
    monkeypatch.setattr("services.webui.health.database_reachable", lambda: False)
    degraded = client.get("/healthz")
    assert degraded.status_code == 503 and degraded.json == {"status": "degraded"}


def test_unknown_routes_are_404_pages_or_json(client, alice):
    page = alice.get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html" and "Traceback" not in page.text
    api = alice.get("/api/no/such/thing")
    assert api.status_code == 404 and api.json["error"] == "not_found"


def test_oversized_bodies_get_413_with_a_message(app_config, make_user):
    app = create_app({**app_config, "MAX_CONTENT_LENGTH": 2048})
    with app.app_context():
        from services.webui.auth import create_user

        create_user("frank", "a long enough password")
    frank = UserClient(app, "frank", "a long enough password")
    response = frank.post("/api/chat/message", data="x" * 4096, content_type="application/json")
    assert response.status_code == 413 and response.json["message"]


def test_malformed_json_gets_400_with_a_message(alice):
    response = alice.post("/api/chat/message", data="{not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json["message"]


def test_missing_csrf_token_tells_the_person_to_reload(alice):
    response = alice.client.post("/api/chat/message", json={"content": "hi"})
    assert response.status_code == 400 and "Reload the page" in response.json["message"]
    page = alice.client.post("/logout")
    assert page.status_code == 400 and "Reload the page" in page.text


def test_a_database_that_cannot_be_opened_stops_start_up_with_one_sentence(tmp_path, agents_file):
    config = base_config(tmp_path, tmp_path / "missing-dir" / "sub" / "x.db", agents_file)
    with pytest.raises(ConfigError) as info:
        create_app(config)
    message = str(info.value)
    assert message.startswith("DATABASE_URL") and "\n" not in message


def test_a_bad_registry_stops_start_up_naming_the_entry(tmp_path, app_config):
    bad = write_registry(tmp_path / "bad.toml", [{"agent_id": "a", "port": 70000}])
    with pytest.raises(ConfigError) as info:
        create_app({**app_config, "AGENTS_FILE": str(bad)})
    assert "'a'" in str(info.value) and "70000" in str(info.value)


def test_users_cli_create_list_passwd(app, runner):
    result = runner.invoke(args=["users", "create", "grace", "--admin", "--password", "pw-one-two-three"])
    assert result.exit_code == 0, result.output
    assert "grace\tadmin" in runner.invoke(args=["users", "list"]).output
    assert runner.invoke(args=["users", "passwd", "grace", "--password", "pw-four-five-six"]).exit_code == 0
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    ok = client.post("/login", data={"username": "grace", "password": "pw-four-five-six", "csrf_token": token})
    assert ok.status_code == 302
    duplicate = runner.invoke(args=["users", "create", "grace", "--password", "x"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output


def test_ensure_admin_generates_a_password_once(app, runner, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("ADMIN_USERNAME", "root-admin")
    first = runner.invoke(args=["users", "ensure-admin"])
    password = re.search(r"password (\S+)", first.output).group(1)
    second = runner.invoke(args=["users", "ensure-admin"])
    assert password not in second.output and "no account created" in second.output
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    assert (
        client.post("/login", data={"username": "root-admin", "password": password, "csrf_token": token}).status_code
        == 302
    )


def test_every_setting_is_documented_in_the_readme():
    """Settings are read in config.py (and gunicorn.conf.py); each must be in the README's table."""
    root = Path(__file__).resolve().parents[2]
    sources = (root / "services/webui/config.py").read_text() + (root / "gunicorn.conf.py").read_text()
    names = set(re.findall(r'(?:_int|_float|_bool)\(env, "([A-Z_]+)"', sources))
    names |= set(re.findall(r'env(?:iron)?\.get\(\s*"([A-Z_]+)"', sources))
    assert {"WEB_WORKERS", "REDIS_URL", "DATABASE_WRITE_WAIT_SECONDS", "HEARTBEAT_SECONDS"} <= names
    table = "\n".join(line for line in (root / "README.md").read_text().splitlines() if line.startswith("| `"))
    undocumented = sorted(name for name in names if f"`{name}`" not in table)
    assert undocumented == [], f"document these settings in the README: {undocumented}"
