"""The WSGI entry point for gunicorn (`wsgi:app`) and the flask CLI (FLASK_APP=wsgi:app)."""

import sys

from services.webui import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    # One sentence naming the setting, not a traceback.
    sys.stderr.write(f"switchboard: configuration error: {exc}\n")
    raise SystemExit(2) from None
