"""Where to send a person after a form: one check for every `next`, used everywhere.

A `next` is kept only when it is a path on this site after the same normalisation a browser
applies to a Location header (WHATWG URL parsing): ASCII tab, CR and LF removed anywhere, C0
controls and spaces trimmed from both ends, and backslashes read as slashes. The percent-decoded
form must pass too, so that no decoding step further along can turn it into another host.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MAX_NEXT_CHARS = 2048
_TRIMMED = "".join(chr(code) for code in range(0x21))  # C0 controls and space
_REMOVED = str.maketrans("", "", "\t\r\n")


def _as_browser_reads_it(target: str) -> str:
    return target.translate(_REMOVED).strip(_TRIMMED).replace("\\", "/")


def _is_local_path(target: str) -> bool:
    if not target.startswith("/") or target.startswith("//"):
        return False
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return False  # a control character left in a header value is at best a 500
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def safe_next(target: str | None, default: str) -> str:
    """`target` as a same-site path the browser will read the same way, else `default`."""
    if not isinstance(target, str) or not target or len(target) > MAX_NEXT_CHARS:
        return default
    decoded = unquote(target)
    for form in (target, decoded):
        # Something the browser would rewrite is a hand-made link: refuse it, never repair it.
        if form != _as_browser_reads_it(form) or not _is_local_path(form):
            return default
    return target
