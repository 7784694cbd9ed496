"""Issue #10, finding 4: the database and its -wal/-shm are 0600, in 0700 folders we own."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from flask_migrate import upgrade

from services.webui import config as config_module
from services.webui import create_app
from services.webui.auth import create_user
from services.webui.extensions import db

from ..support import base_config


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    previous = os.umask(0o022)  # what a default shell gives: files 0644, folders 0755
    yield
    os.umask(previous)


def assert_private_while_open(app, db_path) -> None:
    """Write, then look while the connection is still open: SQLite deletes the -wal at close."""
    with app.app_context():
        create_user("perm-check", "a password here")
        try:
            for suffix in ("", "-wal", "-shm"):
                assert mode(f"{db_path}{suffix}") == 0o600, suffix
        finally:
            db.engine.dispose()


def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path, agents_file, loose_umask):
    db_path = tmp_path / "fresh.db"
    app = create_app(base_config(tmp_path, db_path, agents_file))
    with app.app_context():
        upgrade()
    assert_private_while_open(app, db_path)


def test_an_existing_database_made_readable_by_others_is_tightened(
    tmp_path, migrated_template, agents_file, loose_umask
):
    db_path = tmp_path / "old.db"
    shutil.copy(migrated_template, db_path)
    os.chmod(db_path, 0o644)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"old.db{suffix}").touch(mode=0o644)
        os.chmod(tmp_path / f"old.db{suffix}", 0o644)
    app = create_app(base_config(tmp_path, db_path, agents_file))
    assert_private_while_open(app, db_path)


def test_the_default_data_folder_and_the_instance_folder_are_0700(tmp_path, agents_file, monkeypatch, loose_umask):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    monkeypatch.setattr(config_module, "DEFAULT_DATA_DIR", data_dir)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = base_config(tmp_path, tmp_path / "unused.db", agents_file)
    del settings["SQLALCHEMY_DATABASE_URI"]
    app = create_app(settings)
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith(str(data_dir / "switchboard.db"))
    with app.app_context():
        upgrade()
    assert_private_while_open(app, data_dir / "switchboard.db")
    assert mode(data_dir) == 0o700 and mode(app.instance_path) == 0o700


def test_a_folder_we_do_not_own_is_left_alone(tmp_path, agents_file, loose_umask):
    """A DATABASE_URL elsewhere (a shared folder, say) gets its files tightened, not its folder."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    create_app(base_config(tmp_path, shared / "app.db", agents_file))
    assert mode(shared) == 0o755 and mode(shared / "app.db") == 0o600
