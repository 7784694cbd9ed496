"""Configuration from environment variables (and an optional .env file).

Every setting has one place here. A bad value stops start-up with one sentence that names the
setting, raised as ConfigError; the launcher, the CLI and wsgi.py print it and exit.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "services" / "webui" / "data"


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message is one sentence naming it."""


def _int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _float(env: dict, name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _bool(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}.")


def _secret_key(env: dict, instance_path: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into the instance folder."""
    if env.get("SECRET_KEY"):
        if len(env["SECRET_KEY"]) < 16:
            raise ConfigError("SECRET_KEY must be at least 16 characters long.")
        return env["SECRET_KEY"]
    key_file = instance_path / "secret_key"
    try:
        if key_file.exists():
            return key_file.read_text().strip()
        instance_path.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        # Created with 0600 so that other local users cannot read it.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key
    except FileExistsError:
        return key_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"SECRET_KEY is not set and cannot be stored in {key_file}: {exc.strerror}.") from None


def _database_url(env: dict) -> str:
    url = env.get("DATABASE_URL")
    if url:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
            raise ConfigError(f"DATABASE_URL must start with sqlite: or postgresql:, not {url.split(':')[0]!r}.")
        # Heroku-style URLs say postgres://, which SQLAlchemy no longer accepts; a URL without a
        # driver gets psycopg2, the driver the `postgres` extra installs.
        for bare in ("postgres://", "postgresql://"):
            if url.startswith(bare):
                return "postgresql+psycopg2://" + url[len(bare) :]
        return url
    DEFAULT_DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)  # database.secure_data_files tightens it
    return f"sqlite:///{DEFAULT_DATA_DIR / 'switchboard.db'}"


def _attachments_dir(env: dict, database_url: str) -> str:
    """ATTACHMENTS_DIR, else `attachments/` beside the SQLite file (so a database and its files
    stay together, and a test database never meets someone's real files), else the data folder."""
    if env.get("ATTACHMENTS_DIR"):
        return env["ATTACHMENTS_DIR"]
    if database_url.startswith("sqlite:///"):
        path = database_url[len("sqlite:///") :].split("?", 1)[0]
        if path and path != ":memory:" and not path.startswith("file:"):
            return str(Path(path).resolve().parent / "attachments")
    return str(DEFAULT_DATA_DIR / "attachments")


def _redis_url(env: dict) -> str | None:
    url = env.get("REDIS_URL") or None
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, not {url.split(':')[0]!r}.")
    return url


def web_workers(env: dict | None = None) -> int:
    """How many gunicorn workers to run; more than one needs Redis (REDIS_URL).

    Without Redis a run's events live in the memory of the worker that drives it, so a stream
    opened on another worker could only follow it through the database, far behind. One gevent
    worker holds a thousand streams; more workers (or hosts) share events through Redis.
    """
    env = dict(os.environ) if env is None else env
    workers = _int(env, "WEB_WORKERS", 1, minimum=1)
    if workers > 1 and not _redis_url(env):
        raise ConfigError(
            f"WEB_WORKERS={workers} needs REDIS_URL: without Redis every stream must be served by the "
            "worker that runs its reply, so Switchboard runs one worker (it holds ~1,000 streams)."
        )
    return workers


def _engine_options(database_url: str, env: dict) -> dict:
    if database_url.startswith("sqlite"):
        # SQLite connections are cheap files handles, and under gevent a thousand streams may
        # want one at once: never make a greenlet wait for a pooled connection.
        return {"pool_size": 20, "max_overflow": -1}
    return {
        "pool_pre_ping": True,
        "pool_size": _int(env, "DATABASE_POOL_SIZE", 10, minimum=1),
        "max_overflow": _int(env, "DATABASE_MAX_OVERFLOW", 20),
    }


def load_config(instance_path: str, overrides: dict | None = None) -> dict:
    """Build the Flask config mapping from the environment; `overrides` win (used by tests)."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)
    env = dict(os.environ)
    overrides = dict(overrides or {})
    agents_file = env.get("AGENTS_FILE") or str(PROJECT_ROOT / "config" / "agents.toml")
    database_url = overrides.get("SQLALCHEMY_DATABASE_URI") or _database_url(env)
    config = {
        "SECRET_KEY": overrides.get("SECRET_KEY") or _secret_key(env, Path(instance_path)),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, env),
        "AGENTS_FILE": agents_file,
        "REGISTRY_URL": env.get("REGISTRY_URL") or None,
        "REGISTRY_TTL": _float(env, "REGISTRY_TTL", 10.0),
        "HEARTBEAT_SECONDS": _float(env, "HEARTBEAT_SECONDS", 15.0, minimum=0.05),
        "AGENT_IDLE_TIMEOUT": _float(env, "AGENT_IDLE_TIMEOUT", 120.0, minimum=0.1),
        "APPROVAL_TIMEOUT": _float(env, "APPROVAL_TIMEOUT", 3600.0, minimum=0.1),
        "AGENT_CONNECT_TIMEOUT": _float(env, "AGENT_CONNECT_TIMEOUT", 3.0, minimum=0.1),
        # How often an open page asks for the sidebar's marks (chat/attention.py).
        "ATTENTION_POLL_SECONDS": _float(env, "ATTENTION_POLL_SECONDS", 5.0, minimum=0.5),
        # A live reply whose agent said nothing this long shows "No output for N s" (0: never).
        "STALL_NOTICE_SECONDS": _float(env, "STALL_NOTICE_SECONDS", 15.0),
        # Each flush rewrites the reply so far: at 0.25 s, 500 replies streaming at once took a
        # sizeable share of the worker (bench/load.py (a)). A worker killed outright loses at most
        # this much of a reply's text, and the reply's stream then tells the client what was kept.
        "RUN_FLUSH_SECONDS": _float(env, "RUN_FLUSH_SECONDS", 1.0, minimum=0.01),
        "RUN_STALE_SECONDS": _float(env, "RUN_STALE_SECONDS", 30.0, minimum=1.0),
        "RUN_EVENT_RETENTION_SECONDS": _int(env, "RUN_EVENT_RETENTION_SECONDS", 900, minimum=60),
        "DATABASE_WRITE_WAIT_SECONDS": _float(env, "DATABASE_WRITE_WAIT_SECONDS", 5.0, minimum=0.0),
        "RUN_MEMORY_EVENTS": _int(env, "RUN_MEMORY_EVENTS", 20_000, minimum=100),
        "REDIS_URL": _redis_url(env),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024),
        "MAX_MESSAGE_CHARS": _int(env, "MAX_MESSAGE_CHARS", 32000, minimum=1),
        "MAX_REPLY_CHARS": _int(env, "MAX_REPLY_CHARS", 400_000, minimum=1000),
        # Kept free for the reply: below 1 a share of the model's window, else a number of tokens.
        "CONTEXT_REPLY_RESERVE": _float(env, "CONTEXT_REPLY_RESERVE", 0.25),
        # After a reply, summarize once the history sent uses this share of the budget (0: never).
        "CONTEXT_AUTO_SUMMARY": _float(env, "CONTEXT_AUTO_SUMMARY", 0.0),
        "MARKDOWN_BUDGET_MS": _float(env, "MARKDOWN_BUDGET_MS", 50.0, minimum=1.0),
        "MARKDOWN_MAX_CHARS": _int(env, "MARKDOWN_MAX_CHARS", 40_000, minimum=0),
        "MARKDOWN_CACHE_CHARS": _int(env, "MARKDOWN_CACHE_CHARS", 32_000_000, minimum=0),
        "ATTACHMENTS_DIR": _attachments_dir(env, database_url),
        "ATTACHMENT_MAX_FILES": _int(env, "ATTACHMENT_MAX_FILES", 10, minimum=0),
        "ATTACHMENT_MAX_BYTES": _int(env, "ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024, minimum=1),
        "ATTACHMENT_QUOTA_BYTES": _int(env, "ATTACHMENT_QUOTA_BYTES", 200 * 1024 * 1024, minimum=0),
        "SESSIONS_IMPORT_MAX_BYTES": _int(env, "SESSIONS_IMPORT_MAX_BYTES", 4 * 1024 * 1024, minimum=1024),
        "LOGIN_RATE_LIMIT": env.get("LOGIN_RATE_LIMIT") or "10 per minute",
        "LOGIN_ACCOUNT_RATE_LIMIT": env.get("LOGIN_ACCOUNT_RATE_LIMIT") or "5 per minute;20 per hour",
        # Limits are shared by every worker and host when Redis is there.
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI") or _redis_url(env) or "memory://",
        "SESSION_COOKIE_SECURE": _bool(env, "SECURE_COOKIES", False),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_NAME": "switchboard_session",
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0),
        "ARCHIVE_IDLE_DAYS": _int(env, "ARCHIVE_IDLE_DAYS", 0),
        "LOG_LEVEL": (env.get("LOG_LEVEL") or "INFO").upper(),
        # A login ends this long after it began (its row in login_sessions, and the cookie).
        "PERMANENT_SESSION_LIFETIME": timedelta(days=_int(env, "LOGIN_SESSION_DAYS", 14, minimum=1)),
        # CSRF tokens are signed with a time: a page left open longer asks to be reloaded.
        "WTF_CSRF_TIME_LIMIT": int(_float(env, "CSRF_TOKEN_HOURS", 12.0, minimum=0.1) * 3600),
    }
    if config["LOG_LEVEL"] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {config['LOG_LEVEL']!r}.")
    config.update({k: v for k, v in overrides.items() if k.isupper()})
    return config
