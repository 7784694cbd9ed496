"""Markdown of untrusted agent output, rendered on the server and sanitized after rendering.

    render_markdown(text, budget_seconds=…, max_chars=…) -> Markup

markdown-it-py (`js-default`: raw HTML off, tables on) → pygments highlighting with CSS classes
(never inline styles: the CSP forbids them) → nh3 with an allow-list (sanitize.py). Only after
sanitizing do we add our own markup (the copy button of code blocks), so nothing the agent
writes can reach the page unsanitized. The container the result goes into carries `hx-ignore` as a second fence.

    python -m services.webui.markdown --css > static/vendor/pygments.css

Rendering has a budget, because a gevent worker serves every request of its process on one
thread: some inputs cost markdown-it-py 25-35 µs a byte (40,000 "[" took 3.6 s). A text longer
than `max_chars` is not parsed at all, and every parser rule checks a deadline, so that no input
holds the worker much past `budget_seconds`; past it the text is shown escaped, as plain text
with a note. Code is highlighted only when the budget left covers it.

prints the highlighting stylesheet (light, and dark under prefers-color-scheme); `make assets`
generates it, so it is never committed.
"""

from __future__ import annotations

import functools
import html
import re
import sys
import time
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.utils import OptionsDict
from markupsafe import Markup
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from .sanitize import sanitize_rendered

# The rendered HTML of a message goes inside `.md`; pygments rules are scoped to its code blocks.
CSS_SCOPE = ".md pre"
LIGHT_STYLE = "default"
DARK_STYLE = "monokai"
# Bump when the output for the same text changes: rendered HTML is cached under this version.
RENDERER_VERSION = "2"
RENDER_BUDGET_SECONDS = 0.05
MAX_RENDER_CHARS = 40_000  # ~1.4 µs a byte for prose: longer texts could not make the budget
MAX_HIGHLIGHT_CHARS = 20_000
HIGHLIGHT_SECONDS_PER_CHAR = 5e-6  # pygments, measured on the slowest lexers we expect
# One call of the table rule builds the whole table (three tokens a cell) without coming back to a
# rule we could check the clock in: bigger tables are left as text (a paragraph with pipes).
MAX_TABLE_COLUMNS = 64
MAX_TABLE_CELLS = 1_000
_TABLE_SCAN_CHARS = 20_000
_CHECK_EVERY = 32  # rule calls between two looks at the clock (a look costs more than a call)

# What the renderer itself adds after sanitizing (code-block chrome, the plain-text fallback):
# tag -> attribute -> the values it may have. Tests check every output against this and sanitize's lists.
CHROME_MARKUP = {
    "div": {"class": {"code-block", "code-head"}},
    "span": {"class": {"code-lang"}},
    "button": {"type": {"button"}, "class": {"copy-code"}, "aria-label": {"Copy code"}},
    "p": {"class": {"md-note"}},
    "pre": {"class": {"md-plain"}},
}
PLAIN_CLASS = "md-plain"
PLAIN_NOTE = "Shown as plain text: this reply is too long or too complex to format."
_LANGUAGE = re.compile(r"^[A-Za-z0-9_+#.-]{1,32}$")
_ALIGN = re.compile(r"text-align:\s*(left|center|right)")


_formatter = HtmlFormatter(nowrap=True)  # spans with classes only; markdown-it adds <pre><code>


class RenderBudgetExceeded(Exception):
    """The render ran out of time; the caller shows the text plain."""


class _Budget:
    """A deadline the parser rules check as they go (kept in the parse's `env`)."""

    __slots__ = ("deadline", "calls")

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.calls % _CHECK_EVERY == 0 and time.perf_counter() > self.deadline:
            raise RenderBudgetExceeded

    def left(self) -> float:
        return self.deadline - time.perf_counter()


_BUDGET_KEY = "switchboard_budget"


def _budgeted(rule):
    """Wrap a markdown-it rule so that it checks the deadline first.

    Every costly path of the parser goes through rules (a link label is found by skipping
    tokens with the inline rules, nested blocks re-enter the block rules), so one check per
    rule call bounds them all without knowing which input is slow.
    """

    @functools.wraps(rule)
    def checked(state, *args):
        budget = state.env.get(_BUDGET_KEY)
        if budget is not None:
            budget.check()
        return rule(state, *args)

    return checked


def _bounded_table(rule):
    """The table rule, refusing tables whose single, unchecked call could outrun the budget."""

    @functools.wraps(rule)
    def table(state, start_line, end_line, silent):
        begin = state.bMarks[start_line] + state.tShift[start_line]
        first = state.src.count("|", begin, state.eMarks[start_line])
        if first == 0:
            return rule(state, start_line, end_line, silent)  # no table starts here: let it say so
        if first > MAX_TABLE_COLUMNS + 1:
            return False
        block_end = state.src.find("\n\n", begin, begin + _TABLE_SCAN_CHARS)
        cells = state.src.count("|", begin, block_end if block_end != -1 else begin + _TABLE_SCAN_CHARS)
        if cells > MAX_TABLE_CELLS or (block_end == -1 and len(state.src) > begin + _TABLE_SCAN_CHARS):
            return False
        return rule(state, start_line, end_line, silent)

    return table


def _highlight(code: str, lang: str, _attrs, budget: _Budget | None = None) -> str:
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it escapes the code itself
    if budget is not None and budget.left() < len(code) * HIGHLIGHT_SECONDS_PER_CHAR:
        return ""  # not enough time left: the block is shown plain
    try:
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return pygments_highlight(code, lexer, _formatter)


def _render_image_as_link(_renderer, tokens, idx, _options, _env):
    """Images in model output are an exfiltration channel: show a link the person may follow."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = token.content or "image"
    return f'<a href="{html.escape(str(src))}">image: {html.escape(alt)}</a>'


def _make_parser() -> MarkdownIt:
    md = MarkdownIt("js-default", {"html": False, "highlight": _highlight}).enable("table")
    md.add_render_rule("image", _render_image_as_link)
    for ruler in (md.core.ruler, md.block.ruler, md.inline.ruler, md.inline.ruler2):
        for rule in ruler.__rules__:
            if rule.name == "table" and ruler is md.block.ruler:
                rule.fn = _bounded_table(rule.fn)
            rule.fn = _budgeted(rule.fn)
        ruler.__cache__ = None  # the chains are cached lists of the old functions
    return md


_md = _make_parser()


def _alignment_to_classes(tokens) -> None:
    """Table alignment comes as style="text-align:…", which the CSP would block: use classes."""
    for token in tokens:
        if token.type in ("th_open", "td_open") and token.attrs.get("style"):
            match = _ALIGN.search(str(token.attrs.pop("style")))
            if match:
                token.attrSet("class", f"align-{match.group(1)}")


def _code_languages(tokens) -> list[str]:
    """The language of every code block, in document order ("" for none or indented code)."""
    return [
        (token.info.split()[0] if token.type == "fence" and token.info.strip() else "")
        for token in tokens
        if token.type in ("fence", "code_block")
    ]


def _add_code_chrome(clean: str, languages: list[str]) -> str:
    """Wrap each code block with a language label and a copy button (wired by static/js/app.js).

    Runs on sanitized output, where a literal "<pre>" can only be a real tag: text is escaped and
    attribute values have no "<" left. nh3 drops the language class, so blocks are labelled from
    the token stream, in order; the label is shown only when the counts agree.
    """
    labels = iter(languages if clean.count("<pre>") == len(languages) else [])

    def head(_match: re.Match) -> str:
        lang = next(labels, "")
        label = lang if _LANGUAGE.match(lang) else ""
        return (
            '<div class="code-block"><div class="code-head">'
            f'<span class="code-lang">{html.escape(label)}</span>'
            '<button type="button" class="copy-code" aria-label="Copy code">Copy</button>'
            "</div><pre><code>"
        )

    return re.sub(r"<pre><code>", head, clean).replace("</pre>", "</pre></div>")


def render_plain(text: str) -> Markup:
    """The fallback past the budget: the text escaped, as the agent wrote it, with a note."""
    return Markup(
        f'<p class="md-note">{html.escape(PLAIN_NOTE)}</p>'
        f'<pre class="{PLAIN_CLASS}">{html.escape(text, quote=False)}</pre>'
    )


def render_markdown(
    text: str | None,
    budget_seconds: float = RENDER_BUDGET_SECONDS,
    max_chars: int = MAX_RENDER_CHARS,
    streamed: list[RenderedBlocks] | None = None,
) -> Markup:
    """Untrusted markdown → safe HTML for a `.md` container that carries hx-ignore.

    Takes about `budget_seconds` at most (plus the linear sanitizing of what was rendered);
    a text longer than `max_chars`, or one the parser cannot finish in time, comes back plain.

    `streamed`: the blocks a page stream rendered as they finished, reused where they still
    hold (see _reusable_up_to); the result is the same as without them.
    """
    if not text:
        return Markup("")
    if len(text) > max_chars:
        return render_plain(text)
    budget = _Budget(budget_seconds)
    env: dict = {_BUDGET_KEY: budget}
    try:
        tokens = _md.parse(text, env)
    except (RenderBudgetExceeded, RecursionError):
        return render_plain(text)
    rest = _reusable_up_to(text, tokens, env, streamed)
    if rest is None:
        return _render_tokens(tokens, env, budget)
    reused = Markup("").join(blocks.html for blocks in streamed)
    return reused + _render_tokens(tokens[rest:], env, budget)


def _render_tokens(tokens, env: dict, budget: _Budget, highlight: bool = True) -> Markup:
    _alignment_to_classes(tokens)
    options = OptionsDict(
        {**_md.options, "highlight": functools.partial(_highlight, budget=budget) if highlight else None}
    )
    rendered = _md.renderer.render(tokens, options, env)
    return Markup(_add_code_chrome(sanitize_rendered(rendered), _code_languages(tokens)))


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _block_starts(text: str, tokens) -> list[tuple[int, int]]:
    """(character offset, token index) of each top-level block: where its first line starts,
    counting line breaks as markdown-it does (CRLF, CR, LF)."""
    line_starts = [0]
    line_starts.extend(match.end() for match in _LINE_BREAK.finditer(text))
    return [
        (line_starts[token.map[0]], index)
        for index, token in enumerate(tokens)
        if token.level == 0 and token.nesting >= 0 and token.map is not None
    ]


@dataclass(frozen=True)
class RenderedBlocks:
    """Top-level blocks of a reply that a stream rendered once finished: their text (from the
    previous blocks' end), where each began, where the last one ends (the next block's start),
    and their HTML."""

    text: str
    starts: tuple[int, ...]
    end: int
    html: Markup


def _reusable_up_to(text: str, tokens, env: dict, streamed: list[RenderedBlocks] | None) -> int | None:
    """The index of the first token not covered by `streamed`, when the streamed blocks still
    hold, else None.

    The whole parse is what tells: a line that began a block may have stopped doing so as the
    text grew ("#" is a heading, "#foo" is not), a reference definition written later changes
    the links above it, and a reply may end with a text other than the one streamed (the stored
    one, after a crash). So they hold only when the text begins with the streamed one, the whole
    parse has exactly the same top-level blocks up to its end, and there are no reference
    definitions; the stream's tests hold the result to the whole render.
    """
    if not streamed or env.get("references"):
        return None
    end = streamed[-1].end
    if "".join(blocks.text for blocks in streamed) != text[:end]:
        return None
    expected = [start for blocks in streamed for start in blocks.starts]
    found, rest = [], None
    for offset, index in _block_starts(text, tokens):
        if offset >= end:
            rest = index if offset == end else None
            break
        found.append(offset)
    return rest if found == expected else None


class GrowingText:
    """A reply still being written, parsed once and split at its last top-level block.

    In markdown only the last top-level block can still change as text is appended, so a stream
    renders everything before it once (`finished` characters, `finished_html()`) and re-renders
    only the open tail (`tail_html()`). The cut is at the start of the last block's first line
    (markdown-it's block `map`), counting line breaks as markdown-it does (CRLF, CR, LF). Past
    the budget, or the length limit, nothing counts as finished and the tail is plain text.
    """

    def __init__(self, text: str, budget_seconds: float = RENDER_BUDGET_SECONDS, max_chars: int = MAX_RENDER_CHARS):
        self.text = text
        self.finished = 0
        self._tokens, self._split, self._plain = [], 0, False
        self._finished_starts: tuple[int, ...] = ()
        if not text:
            return
        if len(text) > max_chars:
            self._plain = True
            return
        self._budget = _Budget(budget_seconds)
        self._env: dict = {_BUDGET_KEY: self._budget}
        try:
            self._tokens = _md.parse(text, self._env)
        except (RenderBudgetExceeded, RecursionError):
            self._plain = True
            return
        blocks = _block_starts(text, self._tokens)
        if len(blocks) < 2 or blocks[-1][0] == 0:
            return
        self.finished, self._split = blocks[-1]
        self._finished_starts = tuple(offset for offset, _ in blocks[:-1])

    def finished_html(self) -> Markup:
        if not self._split:
            return Markup("")
        return _render_tokens(self._tokens[: self._split], self._env, self._budget)

    def finished_blocks(self, offset: int) -> RenderedBlocks | None:
        """The finished blocks rendered, for a text that starts `offset` characters into the reply."""
        if not self._split:
            return None
        starts = tuple(offset + start for start in self._finished_starts)
        return RenderedBlocks(self.text[: self.finished], starts, offset + self.finished, self.finished_html())

    def tail_html(self, highlight: bool = True) -> Markup:
        """The open block. A stream passes highlight=False: a code block still being written
        would be lexed again at every render; it is highlighted once, when it is finished."""
        if self._plain:
            return render_plain(self.text)
        if not self._tokens:
            return Markup("")
        return _render_tokens(self._tokens[self._split :], self._env, self._budget, highlight)


def pygments_css() -> str:
    light = HtmlFormatter(style=LIGHT_STYLE).get_style_defs(CSS_SCOPE)
    dark = HtmlFormatter(style=DARK_STYLE).get_style_defs(CSS_SCOPE)

    # Background and line-number rules come from app.css; keep only token colours.
    def tokens_only(css: str) -> str:
        return "\n".join(
            line
            for line in css.splitlines()
            if line.startswith(CSS_SCOPE + " .") and not line.startswith(CSS_SCOPE + " .hll")
        )

    dark_block = "\n".join("  " + line for line in tokens_only(dark).splitlines())
    return (
        "/* Generated by `python -m services.webui.markdown --css` (make assets). */\n"
        f"{tokens_only(light)}\n"
        f"@media (prefers-color-scheme: dark) {{\n{dark_block}\n}}\n"
    )


def main(argv: list[str]) -> int:
    if argv[1:] == ["--css"]:
        sys.stdout.write(pygments_css())
        return 0
    sys.stderr.write("usage: python -m services.webui.markdown --css\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
