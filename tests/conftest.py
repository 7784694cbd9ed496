"""Shared fixtures in the style of Flask's tutorial: `app`, `client`, `runner`, plus logged-in users.

Each test gets its own SQLite file, copied from one database migrated to head once per run, so
tests run against exactly the schema that migrations build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask_migrate import upgrade

from services.webui import create_app
from services.webui.auth import create_user
from services.webui.extensions import db
from services.webui.runs import run_manager

from .support import UserClient, base_config, default_test_agents, write_registry


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    db_path = folder / "template.db"
    agents_file = write_registry(folder / "agents.toml", default_test_agents())
    app = create_app(base_config(folder, db_path, agents_file))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return db_path


@pytest.fixture
def agents_file(tmp_path) -> Path:
    return write_registry(tmp_path / "agents.toml", default_test_agents())


@pytest.fixture
def app_config(tmp_path, migrated_template, agents_file) -> dict:
    db_path = tmp_path / "switchboard.db"
    shutil.copy(migrated_template, db_path)
    return base_config(tmp_path, db_path, agents_file)


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    # No housekeeping thread outlives its test (it would log about a database that is gone).
    run_manager(app).shutdown(timeout=0.5)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_user(app):
    def make(username: str, password: str = "correct horse battery", role: str = "user") -> UserClient:
        with app.app_context():
            create_user(username, password, role)
        return UserClient(app, username, password)

    return make


@pytest.fixture
def alice(make_user) -> UserClient:
    return make_user("alice")


@pytest.fixture
def bob(make_user) -> UserClient:
    return make_user("bob")
