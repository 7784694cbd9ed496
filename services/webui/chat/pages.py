"""The chat pages (HTML): the home page and a session's page."""
from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("chat", __name__)


@bp.get("/")
def home():
    return render_template("chat.html")
