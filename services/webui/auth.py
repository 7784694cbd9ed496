"""Accounts: login and logout pages, password hashing, and the `flask users` commands."""
from __future__ import annotations

import logging
import secrets

import click
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from .extensions import db, limiter, login_manager
from .models import USER_ROLES, User
from .redirects import safe_next

bp = Blueprint("auth", __name__)
log = logging.getLogger("switchboard.auth")
hasher = PasswordHasher()
LOGIN_FAILED = "Wrong username or password."
# Verified against when the username does not exist, so that timing does not reveal which it was.
_DUMMY_HASH = hasher.hash("switchboard-dummy-password")


def hash_password(password: str) -> str:
    return hasher.hash(password)


def check_password(user: User | None, password: str) -> bool:
    try:
        return hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    try:
        return db.session.get(User, int(user_id))
    except ValueError:
        return None


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def _after_login() -> str:
    return safe_next(request.args.get("next"), url_for("chat.home"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(_after_login())
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data.strip()
        user = db.session.scalar(select(User).where(User.username == username))
        if check_password(user, form.password.data):
            login_user(user)
            log.info("login succeeded for user %s", username)
            return redirect(_after_login())
        log.info("login failed for user %s", username)
        error = LOGIN_FAILED
    elif request.method == "POST":
        error = "Enter your username and password."
    status = 401 if error else 200
    return render_template("login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    return redirect(url_for("auth.login"))


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
    click.echo(f"Password changed for {username}.")


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
