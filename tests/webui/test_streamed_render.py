"""The final render of a streamed reply reuses the blocks the page stream rendered as they
finished, and still equals the whole render (what a reload shows), whatever the text and
however it arrived."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.webui import markdown
from services.webui.chat.page_stream import IncrementalReply
from services.webui.markdown import render_markdown

BUDGET = {"budget_seconds": 30.0, "max_chars": 100_000}  # time never decides here

# Lines that start, end, interrupt or continue blocks, and some that only look as if they might.
LINES = [
    "",
    "#",
    "# Title",
    "#foo",
    "Some *text* with `code` and **bold**",
    "more words",
    "- item",
    "-",
    "  - nested",
    "1. first",
    "2) second",
    "> quote",
    "```python",
    "```",
    "    indented code",
    "| a | b |",
    "|---|:-:|",
    "---",
    "===",
    "[ref]: https://example.com/x",
    "see [ref] and [link](https://example.com)",
    "def f(x): return x",
]


def streamed(text: str, cuts: list[int]) -> IncrementalReply:
    """The page's record of a reply that arrived in pieces ending at `cuts`."""
    page = IncrementalReply(BUDGET["budget_seconds"], BUDGET["max_chars"])
    for end in [*sorted(cuts), len(text)]:
        page.split(text[:end])
    return page


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from(LINES), min_size=1, max_size=14),
    newline=st.sampled_from(["\n", "\r\n"]),
    cut_fractions=st.lists(st.floats(0, 1), max_size=12),
)
def test_the_final_render_of_a_streamed_reply_is_the_whole_render(lines, newline, cut_fractions):
    text = newline.join(lines)
    page = streamed(text, [int(f * len(text)) for f in cut_fractions])
    assert render_markdown(text, streamed=page.streamed, **BUDGET) == render_markdown(text, **BUDGET)


REPLY = (
    "# Plan\n\nIntro with **bold** and `code`.\n\n- one\n- two\n\n```python\ndef f():\n    return 1\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\nClosing words, still being"
)


def test_the_blocks_a_stream_rendered_are_not_rendered_again(monkeypatch):
    page = streamed(REPLY, list(range(1, len(REPLY))))  # one character at a time
    assert page.streamed and page.committed == REPLY.index("Closing")
    rendered = []
    real = markdown._render_tokens
    monkeypatch.setattr(
        markdown, "_render_tokens", lambda tokens, *a, **k: rendered.append(tokens) or real(tokens, *a, **k)
    )
    html = render_markdown(REPLY, streamed=page.streamed, **BUDGET)
    assert html == render_markdown(REPLY, **BUDGET)
    # Once for the final (the open paragraph only: three tokens), once for the whole render.
    assert [len(tokens) for tokens in rendered[:1]] == [3]
    assert '<span class="k">def</span>' in html  # the code block highlighted, by the stream


def test_blocks_that_no_longer_hold_are_rendered_again():
    # "#" alone is an empty heading, so the stream finished "para" as a block of its own; "#foo"
    # is not a heading, and the whole text is one paragraph.
    page = streamed("para\n#foo", [6])
    assert page.streamed and page.streamed[0].end == 5
    assert render_markdown("para\n#foo", streamed=page.streamed, **BUDGET) == render_markdown("para\n#foo", **BUDGET)
    # A reference defined above: the block that uses it was parsed on its own as it finished
    # (without the definition), so it showed "[x]"; the whole text makes it a link.
    text = "[x]: https://example.com/\n\npara\n\nsee [x]\n\nend"
    page = streamed(text, list(range(1, len(text))))
    assert "[x]" in "".join(blocks.html for blocks in page.streamed)
    assert '<a href="https://example.com/"' in render_markdown(text, streamed=page.streamed, **BUDGET)
    # The reply ended with another text than the one streamed (the stored one, after a crash).
    page = streamed("# One\n\ntwo", [8])
    assert render_markdown("# Uno\n\ndos", streamed=page.streamed, **BUDGET) == render_markdown(
        "# Uno\n\ndos", **BUDGET
    )


def test_the_blocks_kept_for_the_final_render_are_bounded(monkeypatch):
    from services.webui.chat import page_stream

    monkeypatch.setattr(page_stream, "STREAMED_MAX_CHARS", 200)
    page = streamed(REPLY, list(range(1, len(REPLY))))
    assert page.streamed is None and page.committed == REPLY.index("Closing")  # still streamed
    assert render_markdown(REPLY, streamed=page.streamed, **BUDGET) == render_markdown(REPLY, **BUDGET)
