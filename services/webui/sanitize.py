"""What agent output may still contain once rendered: the allow-list, and the pass that enforces it.

markdown.py renders untrusted markdown and runs its output through `sanitize_rendered`; only
then does it add its own markup (markdown.CHROME_MARKUP). Tests hold every rendered reply to
these lists and to that one.
"""

from __future__ import annotations

import nh3
from pygments.token import STANDARD_TYPES

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "span",
}
# The contents of these go too, not just the tags (markdown-it escapes raw HTML anyway; this is
# for defence in depth should the renderer ever let a tag through).
CLEAN_CONTENT_TAGS = {"script", "style", "template", "iframe", "object", "embed", "noscript", "svg", "math"}
ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
TOKEN_CLASSES = {cls for cls in STANDARD_TYPES.values() if cls}
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
ALLOWED_CLASSES = {"span": TOKEN_CLASSES, "th": ALIGN_CLASSES, "td": ALIGN_CLASSES}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"


def _attribute_filter(element: str, attribute: str, value: str) -> str | None:
    # Serialized attribute values keep a literal "<" and ">"; htmx rewrites "<hx-…" tags in the
    # raw response text before parsing, so such a value could be turned into markup. Drop them.
    return value.replace("<", "").replace(">", "")


_ALLOW_LIST = dict(
    tags=ALLOWED_TAGS,
    clean_content_tags=CLEAN_CONTENT_TAGS,
    # An empty "*" entry: without one nh3 keeps its generic `title` and `lang` on every tag.
    attributes={**ALLOWED_ATTRIBUTES, "*": set()},
    strip_comments=True,
    link_rel=LINK_REL,
    url_schemes=URL_SCHEMES,
    url_relative="deny",
    allowed_classes=ALLOWED_CLASSES,
    set_tag_attribute_values={"a": {"target": "_blank"}},
)
_cleaner = nh3.Cleaner(**_ALLOW_LIST, attribute_filter=_attribute_filter)
# The same allow-list without the attribute filter, which costs a call into Python per attribute
# (half the cleaning time of a highlighted block). Only used on HTML that cannot hold a "<" or
# ">" in an attribute value: markdown-it escapes every value it writes, so one can only come
# from an entity it wrote, and _ANGLE_ENTITIES are every entity that could decode to one.
_cleaner_unfiltered = nh3.Cleaner(**_ALLOW_LIST)
# Substring tests, not a regex: a regex without a literal prefix tried at every position cost
# as much as the cleaning it was saving, on a long highlighted reply.
_ANGLE_ENTITIES = ("&lt", "&gt", "&LT", "&GT", "&#")


def sanitize_html(raw_html: str) -> str:
    """The allow-list pass alone (exposed for tests): what survives is inert."""
    return _cleaner.clean(raw_html)


def sanitize_rendered(rendered: str) -> str:
    """The allow-list pass over markdown-it's own output, skipping the attribute filter when no
    attribute value can hold an angle bracket (see _cleaner_unfiltered)."""
    if any(entity in rendered for entity in _ANGLE_ENTITIES):
        return _cleaner.clean(rendered)
    return _cleaner_unfiltered.clean(rendered)
