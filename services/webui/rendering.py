"""Agent replies as HTML for the pages: rendered within a budget, and a final reply only once.

Where the rendered HTML lives is a choice: an app-owned, bounded LRU (cachetools), kept in
`app.extensions["markdown_cache"]` and keyed by (message id, content hash, renderer version),
rather than a `messages.html` column. A column would be written while a page is read (a GET
waiting on SQLite's write lock, which under gevent stalls every stream of the worker), would need
filling and invalidating when the renderer changes, and would double the size of long replies on
disk. The price: each worker renders a final reply once, and that render is bounded by the
budget (markdown.render_markdown). A live reply changes at every update, so it is never cached.
"""

from __future__ import annotations

import hashlib
import threading
import time

from cachetools import LRUCache
from flask import current_app, has_app_context
from markupsafe import Markup

from .markdown import RENDERER_VERSION, render_markdown

EXTENSION = "markdown_cache"
# A render that took longer than this yields to other greenlets before the next one starts, so
# that a page of many long replies never holds the worker for more than one budget at a time.
YIELD_AFTER_SECONDS = 0.005


class RenderCache:
    """A bounded LRU of rendered HTML, its size counted in characters."""

    def __init__(self, max_chars: int):
        self._entries: LRUCache = LRUCache(maxsize=max_chars, getsizeof=len)
        self._lock = threading.Lock()  # cachetools is not thread-safe; gevent patches this lock

    def get(self, key) -> Markup | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key, html: Markup) -> None:
        if len(html) > self._entries.maxsize:
            return  # cachetools would raise: larger than the whole cache
        with self._lock:
            self._entries[key] = html

    def __len__(self) -> int:
        return len(self._entries)


def init_rendering(app) -> None:
    app.extensions[EXTENSION] = RenderCache(app.config["MARKDOWN_CACHE_CHARS"])


def _budget() -> dict:
    if not has_app_context():
        return {}
    config = current_app.config
    return {"budget_seconds": config["MARKDOWN_BUDGET_MS"] / 1000, "max_chars": config["MARKDOWN_MAX_CHARS"]}


def render_message(message_id: str | None, content: str | None, final: bool = True, streamed=None) -> Markup:
    """The HTML of one reply; a final one comes from the cache after its first render.

    `streamed`: the blocks a page stream rendered as they finished (markdown.RenderedBlocks), which
    the final render reuses where the whole parse confirms them.
    """
    if not content:
        return Markup("")
    cache: RenderCache | None = current_app.extensions.get(EXTENSION) if has_app_context() else None
    key = None
    if final and message_id and cache is not None:
        key = (message_id, hashlib.blake2b(content.encode(), digest_size=16).digest(), RENDERER_VERSION)
        cached = cache.get(key)
        if cached is not None:
            return cached
    started = time.perf_counter()
    html = render_markdown(content, streamed=streamed, **_budget())
    if key is not None:
        cache.put(key, html)
    if time.perf_counter() - started > YIELD_AFTER_SECONDS:
        time.sleep(0)  # under gevent: let the other greenlets of this worker run
    return html
