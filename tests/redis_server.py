"""A throw-away redis-server (Debian's package, which `make test` installs) on a free port.

The scale-out profile's tests run a real Redis: several gunicorn servers share it, as several
hosts would. Nothing is persisted (`--save "" --appendonly no`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

import redis

from services.agents.fleet import free_port


def start_redis(port: int, folder: str) -> subprocess.Popen:
    """A redis-server on `port`, answering PING: empty, as after a restart without persistence."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: `make test` installs Debian's redis-server package"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    return process


def stop_redis(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def redis_server():
    """Yields a redis:// URL; the server and its folder are gone afterwards."""
    folder = tempfile.mkdtemp(prefix="switchboard-redis-")
    port = free_port()
    try:
        process = start_redis(port, folder)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_redis(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
