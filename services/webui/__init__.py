"""The Switchboard web app: `create_app` builds it (Flask's application-factory pattern)."""

from __future__ import annotations

from .config import PROJECT_ROOT, ConfigError, load_config

__all__ = ["create_app", "ConfigError"]


def create_app(config: dict | None = None):
    # Imported here, not at the top: gunicorn.conf.py reads config.py in the master process,
    # which must not import Flask before a gevent worker has monkey-patched.
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        instance_path=str(PROJECT_ROOT / "instance"),
    )
    app.config.update(load_config(app.instance_path, config))

    from .logs import assign_request_id, configure_logging, echo_request_id

    configure_logging(app.config["LOG_LEVEL"])
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    from . import database  # noqa: F401  (installs the SQLite pragma listener)
    from .extensions import csrf, db, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    csrf.init_app(app)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)

    from .security import init_security

    init_security(app)
    app.before_request(assign_request_id)
    app.after_request(echo_request_id)
    from .errors import init_inputs

    init_inputs(app)  # after the login check and the request id: a refusal carries the id

    database.secure_data_files(app)
    database.check_database(app)

    from .fleet import init_fleet
    from .rendering import init_rendering

    init_fleet(app)
    init_rendering(app)

    from . import auth, health, openapi
    from .chat import api as chat_api
    from .chat import context_routes
    from .chat import pages as chat_pages
    from .errors import register_error_handlers

    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(chat_pages.bp)
    app.register_blueprint(chat_api.bp)
    app.register_blueprint(context_routes.bp)
    from .chat import attention

    app.register_blueprint(attention.bp)
    from .sessions import init_sessions

    init_sessions(app)  # /sessions pages, /api/chat/sessions, `flask sessions` and `flask dev`
    from .usage import init_usage

    init_usage(app)  # /usage, /usage.csv, /api/usage
    from .attachments import init_attachments

    init_attachments(app)  # /api/attachments, downloads, `flask attachments`
    app.cli.add_command(auth.users_cli)
    register_error_handlers(app, translators=[database.unavailable_from])

    @app.context_processor
    def url_endpoints():
        # Lets the shared layout link to areas (blueprints) only when they are registered.
        return {"url_endpoints": app.view_functions.keys()}

    from .runs import init_runs

    init_runs(app)
    from .chat.context_actions import init_auto_summary

    init_auto_summary(app)
    return app
