"""The security baseline: login required by default, a strict CSP, and cookies done right."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import make_response, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user

from .errors import error_response
from .redirects import safe_next

# Endpoints reachable without logging in. Everything else needs a login, so that a route added
# later is protected without anyone remembering to decorate it.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "health.healthz", "static"})

CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


class SessionInterface(SecureCookieSessionInterface):
    """Marks the session cookie Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def require_login():
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    if request.endpoint is None:
        return None  # unknown URL: let routing answer 404
    if request.path.startswith("/api/"):
        return error_response(401, "Your login has expired. Log in again to continue.", "login_required")
    if request.headers.get("HX-Request"):
        # htmx follows HX-Redirect with a full page load, which is what an expired login needs.
        response = make_response(error_response(401, "Your login has expired. Log in again to continue."))
        # Back to the page the person was on (htmx names it), never to another site.
        response.headers["HX-Redirect"] = url_for("auth.login", next=safe_next(page_to_return_to(), None))
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def page_to_return_to() -> str | None:
    """The path (and query) of the page htmx says the person was on, never another site.

    The header is the client's to write: one that is not a URL at all just loses the way back.
    """
    try:
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
    except ValueError:  # e.g. "http://[" (an unclosed IPv6 host)
        return None
    if not current.path.startswith("/") or "\x00" in current.path + current.query:
        return None
    return current.path + (f"?{current.query}" if current.query else "")


def init_security(app) -> None:
    from .extensions import talisman

    app.session_interface = SessionInterface()
    talisman.init_app(
        app,
        force_https=False,
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        session_cookie_http_only=True,
        content_security_policy=CONTENT_SECURITY_POLICY,
        content_security_policy_nonce_in=[],
        frame_options="DENY",
        referrer_policy="same-origin",
        strict_transport_security=True,
    )
    app.before_request(require_login)
