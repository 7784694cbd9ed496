"""`make run`: the reference agents, then gunicorn, in one foreground command.

Ctrl-C stops everything it started. Migrations and the first admin account are done first, so
that a fresh clone is usable with one command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def flask(*args: str) -> None:
    result = subprocess.run([str(VENV_BIN / "flask"), *args], cwd=ROOT, env={**os.environ, "FLASK_APP": "wsgi:app"})
    if result.returncode != 0:
        sys.exit(result.returncode)


def main() -> int:
    from services.agents.fleet import Fleet

    # Files made by anything started here (database, logs) are the user's alone; the app also
    # makes its own data files private itself (database.secure_data_files), whatever the umask.
    os.umask(0o077)

    port = os.environ.get("PORT", "5050")
    host = os.environ.get("HOST", "127.0.0.1")
    agents_file = os.environ.get("AGENTS_FILE") or str(ROOT / "config" / "agents.toml")

    flask("db", "upgrade")
    flask("users", "ensure-admin")
    flask("sessions", "archive-idle")  # does nothing while ARCHIVE_IDLE_DAYS is 0
    flask("attachments", "cleanup")  # unsent uploads past a day, files a crash left behind

    fleet = Fleet(agents_file)
    fleet.start()
    try:
        fleet.wait_healthy(timeout=20)
    except Exception as exc:  # agents that do not come up are shown as down in the app
        print(f"switchboard: some agents did not start: {exc}", file=sys.stderr)

    gunicorn = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env={**os.environ, "PORT": port, "HOST": host},
    )
    print(f"\nSwitchboard is running at http://{host}:{port}/  (Ctrl-C stops it)\n", flush=True)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and gunicorn.poll() is None:
            time.sleep(0.2)
            if stopping:
                break  # Ctrl-C reaches the agents too: they are stopping, not crashed
            for agent_id in fleet.revive():  # a crashed reference agent comes back by itself
                print(f"switchboard: agent {agent_id} exited; restarted it.", file=sys.stderr, flush=True)
    finally:
        if gunicorn.poll() is None:
            gunicorn.terminate()
            try:
                gunicorn.wait(timeout=20)  # workers first end their runs (gunicorn.conf.py)
            except subprocess.TimeoutExpired:
                gunicorn.kill()
        fleet.stop()
    return gunicorn.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
