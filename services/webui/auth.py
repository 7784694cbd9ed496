"""Accounts: login and logout, logins that can be ended, password changes, `flask users`.

A login is a row in `login_sessions` (models.LoginSession) whose id is the hash of a random
token kept in the signed session cookie; the user loader accepts a cookie only while its row
exists and has not expired. So logout ends that login for every copy of the cookie, and a
password change or `flask users logout-all` ends every login of the user at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys

import click
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for
from flask.cli import AppGroup
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import bindparam, delete, func, select
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from .extensions import db, limiter, login_manager
from .models import USER_ROLES, LoginSession, User, utcnow
from .redirects import safe_next

bp = Blueprint("auth", __name__)
log = logging.getLogger("switchboard.auth")
hasher = PasswordHasher()
LOGIN_FAILED = "Wrong username or password."
# Verified against when the username does not exist, so that timing does not reveal which it was.
_DUMMY_HASH = hasher.hash("switchboard-dummy-password")


LOGIN_SESSION_KEY = "login_session"
MIN_PASSWORD_CHARS = 8


def _under_gevent() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("threading")


def off_the_hub(function, *args):
    """Run CPU-heavy `function` (Argon2) in gevent's threadpool when serving under gevent.

    A gevent worker serves all its requests and streams on one thread; argon2-cffi releases the
    GIL, so in a pool thread a hash no longer stalls every stream of the worker for its ~50 ms.
    """
    if not _under_gevent():
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)


def hash_password(password: str) -> str:
    return off_the_hub(hasher.hash, password)


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password(user: User | None, password: str) -> bool:
    return off_the_hub(_verify, user.password_hash if user else _DUMMY_HASH, password) and user is not None


# ---- logins that can be ended -----------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_login(user: User) -> None:
    """Log `user` in with a fresh session: nothing from before survives, the CSRF token included."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    db.session.execute(delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now))
    db.session.add(
        LoginSession(
            id=_token_hash(token),
            user_id=user.id,
            created_at=now,
            expires_at=now + current_app.config["PERMANENT_SESSION_LIFETIME"],
        )
    )
    db.session.commit()
    session.clear()
    g.pop("csrf_token", None)  # Flask-WTF caches the request's token here
    login_user(user)
    session[LOGIN_SESSION_KEY] = token


def end_login() -> None:
    token = session.get(LOGIN_SESSION_KEY)
    if isinstance(token, str):
        db.session.execute(delete(LoginSession).where(LoginSession.id == _token_hash(token)))
        db.session.commit()
    logout_user()
    session.clear()


def end_logins(user: User, keep_current: bool = False) -> int:
    """End every login of `user` (but this request's own when `keep_current`); returns how many."""
    query = delete(LoginSession).where(LoginSession.user_id == user.id)
    token = session.get(LOGIN_SESSION_KEY) if keep_current else None
    if isinstance(token, str):
        query = query.where(LoginSession.id != _token_hash(token))
    ended = db.session.execute(query).rowcount
    db.session.commit()
    return ended


# Every request runs this query: built once, with parameters, because building the statement
# cost half as much as running it.
_USER_OF_LOGIN = (
    select(User)
    .join(LoginSession, LoginSession.user_id == User.id)
    .where(
        User.id == bindparam("uid"),
        LoginSession.id == bindparam("token_hash"),
        LoginSession.expires_at > bindparam("now"),
    )
)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    token = session.get(LOGIN_SESSION_KEY)
    if not isinstance(token, str):
        return None  # a cookie that names a user but no login (e.g. from before logins could end)
    try:
        uid = int(user_id)
    except ValueError:
        return None
    return db.session.scalar(_USER_OF_LOGIN, {"uid": uid, "token_hash": _token_hash(token), "now": utcnow()})


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def username_tag(username: str) -> str:
    """A short keyed hash of a submitted username: it links attempts without naming them.

    What is typed into the username box is sometimes a password; a plain hash of it could be
    looked up in a dictionary, a keyed one cannot without the SECRET_KEY.
    """
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, username.strip().casefold().encode(), hashlib.sha256).hexdigest()[:12]


def _account_key() -> str:
    # Failed logins are limited per submitted account too, so that many addresses cannot share
    # the guessing of one password; keyed by the tag, so that no raw name is stored.
    return "login-account:" + username_tag(request.form.get("username", ""))


def _after_login() -> str:
    return safe_next(request.args.get("next"), url_for("chat.home"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["LOGIN_RATE_LIMIT"],
    methods=["POST"],
    error_message="Too many attempts. Wait a minute and try again.",
)
@limiter.limit(
    lambda: current_app.config["LOGIN_ACCOUNT_RATE_LIMIT"],
    methods=["POST"],
    key_func=_account_key,
    deduct_when=lambda response: response.status_code == 401,
    error_message="Too many attempts for this account. Wait a few minutes and try again.",
)
def login():
    if current_user.is_authenticated:
        return redirect(_after_login())
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data.strip()
        user = db.session.scalar(select(User).where(User.username == username))
        if check_password(user, form.password.data):
            start_login(user)
            log.info("login succeeded for user %s", username)
            return redirect(_after_login())
        if user is None:
            log.info("login failed for an unknown user (tag %s)", username_tag(username))
        else:
            log.info("login failed for user %s", username)
        error = LOGIN_FAILED
    elif request.method == "POST":
        error = "Enter your username and password."
    status = 401 if error else 200
    return render_template("login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    end_login()
    return redirect(url_for("auth.login"))


class ChangePasswordForm(FlaskForm):
    # Checked by _password_change_error, which can say exactly what is wrong.
    current_password = PasswordField("Current password")
    new_password = PasswordField("New password")
    new_password_again = PasswordField("New password again")


def _password_change_error(form: ChangePasswordForm) -> str | None:
    """The first thing wrong with the form, as a sentence; checked in the order a person fills it."""
    current, new, again = (
        form.current_password.data or "",
        form.new_password.data or "",
        form.new_password_again.data or "",
    )
    if not current or len(current) > 256:
        return "Enter your current password."
    if len(new) < MIN_PASSWORD_CHARS:
        return f"The new password must have at least {MIN_PASSWORD_CHARS} characters."
    if len(new) > 256:
        return "The new password must have at most 256 characters."
    if new != again:
        return "The new passwords do not match. Type the same new password twice."
    if new == current:
        return "The new password must be different from the current one."
    if not check_password(current_user, current):
        return "Your current password is not right."
    return None


@bp.route("/account/password", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def change_password():
    form = ChangePasswordForm()
    error, changed = None, False
    if form.validate_on_submit():
        error = _password_change_error(form)
        if error is None:
            current_user.password_hash = hash_password(form.new_password.data)
            db.session.commit()
            ended = end_logins(current_user, keep_current=True)
            log.info("password changed by user %s; %d other logins ended", current_user.username, ended)
            changed = True
    elif request.method == "POST":
        error = "Fill in all three fields."
    status = 400 if error else 200
    return render_template("account/password.html", form=form, error=error, changed=changed), status


# ---- admin: end a user's logins ------------------------------------------------------------


def _require_admin() -> None:
    if not current_user.is_admin:
        abort(403, "Only an admin can see and end other users' logins.")


@bp.get("/account/users")
def users_page():
    _require_admin()
    logins = dict(
        db.session.execute(
            select(LoginSession.user_id, func.count())
            .where(LoginSession.expires_at > utcnow())
            .group_by(LoginSession.user_id)
        ).all()
    )
    users = db.session.scalars(select(User).order_by(User.username)).all()
    ended = request.args.get("ended")
    return render_template(
        "account/users.html",
        users=users,
        logins=logins,
        ended=ended if any(user.username == ended for user in users) else None,
    )


@bp.post("/account/users/<username>/logout-all")
def users_logout_all_page(username: str):
    _require_admin()
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        abort(404, f"There is no user {username[:64]!r}.")
    ended = end_logins(user, keep_current=user.id == current_user.id)
    log.info("admin %s ended %d logins of user %s", current_user.username, ended, user.username)
    return redirect(url_for("auth.users_page", ended=user.username), code=303)


# ---- CLI: flask users create|passwd|list|ensure-admin ----------------------------------------

users_cli = AppGroup("users", help="Manage user accounts.")


def _valid_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > 64:
        raise click.BadParameter("a username has 1 to 64 characters.")
    return username


def create_user(username: str, password: str, role: str = "user") -> User:
    if role not in USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(USER_ROLES)}")
    user = User(username=username, password_hash=hash_password(password), role=role)
    db.session.add(user)
    db.session.commit()
    return user


@users_cli.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.password_option(help="The password (prompted for when not given).")
def users_create(username: str, admin: bool, password: str) -> None:
    username = _valid_username(username)
    if db.session.scalar(select(User).where(User.username == username)):
        raise click.ClickException(f"user {username!r} already exists.")
    create_user(username, password, "admin" if admin else "user")
    click.echo(f"Created {'admin' if admin else 'user'} {username}.")


@users_cli.command("passwd")
@click.argument("username")
@click.password_option(help="The new password (prompted for when not given).")
def users_passwd(username: str, password: str) -> None:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}.")
    user.password_hash = hash_password(password)
    db.session.commit()
    ended = end_logins(user)
    click.echo(f"Password changed for {username}; {ended} logins ended.")


@users_cli.command("logout-all")
@click.argument("username")
def users_logout_all(username: str) -> None:
    """End every login of a user, on every device (the user must log in again)."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}.")
    click.echo(f"Ended {end_logins(user)} logins of {username}.")


@users_cli.command("list")
def users_list() -> None:
    for user in db.session.scalars(select(User).order_by(User.username)):
        click.echo(f"{user.username}\t{user.role}\t{user.created_at:%Y-%m-%d}")


@users_cli.command("ensure-admin")
def users_ensure_admin() -> None:
    """Create the first admin from ADMIN_USERNAME / ADMIN_PASSWORD when there is no user yet."""
    import os

    if db.session.scalar(select(User.id).limit(1)) is not None:
        click.echo("Users exist already; no account created.")
        return
    username = _valid_username(os.environ.get("ADMIN_USERNAME") or "admin")
    password = os.environ.get("ADMIN_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    create_user(username, password, "admin")
    # Printed to the terminal once, on purpose; it goes through click, never through logging.
    if generated:
        click.echo(f"Created admin account: username {username}, password {password}")
        click.echo("This password is shown only once. Change it with: flask users passwd " + username)
    else:
        click.echo(f"Created admin account {username} (password from ADMIN_PASSWORD).")
