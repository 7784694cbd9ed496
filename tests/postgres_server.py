"""A throw-away PostgreSQL server for the tests that prove the models and migrations run there.

SWITCHBOARD_TEST_POSTGRES_URL names an existing server to use instead. Otherwise the server
binaries of Debian's postgresql package (in the machine image) start a fresh cluster on a free
loopback port, as the `postgres` user when the tests run as root (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.agents.fleet import free_port


def _server_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def postgres_server():
    """Yields a server URL (psycopg2 driver) on which the tests may create databases."""
    pytest.importorskip("psycopg2")
    if os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL"):
        yield os.environ["SWITCHBOARD_TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
        return
    initdb, pg_ctl = _server_bin("initdb"), _server_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries are not installed (Debian package postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    try:
        run(initdb, "-D", str(data), "-U", "switchboard", "--auth=trust", "--no-sync")
        run(
            pg_ctl,
            "-D",
            str(data),
            "-w",
            "-l",
            str(folder / "server.log"),
            "-o",
            f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off",
            "start",
        )
        yield f"postgresql+psycopg2://switchboard@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
