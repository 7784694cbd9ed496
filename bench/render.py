"""Worst-case markdown rendering times: how long one message can hold a worker.

    .venv/bin/python bench/render.py

Renders a pathological corpus (the inputs that are slowest per byte for markdown-it-py and
pygments) at several sizes and prints the median and worst wall time of `render_markdown` for
each, and whether the result fell back to plain text. Figures only: nothing is asserted.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.webui.markdown import PLAIN_CLASS, render_markdown  # noqa: E402

REPEAT = 5


def corpus(size: int) -> dict[str, str]:
    """Each input cut to `size` characters."""
    row = "| a | b | c | d | e | f | g | h |\n"
    texts = {
        "brackets [": "[" * size,
        "brackets [a](": "[a](" * (size // 4),
        "emphasis *a": "*a" * (size // 2),
        "emphasis _a": "_a" * (size // 2),
        "backticks": "`a``" * (size // 4),
        "table": "| a | b |\n|---|---|\n" + row * (size // len(row)),
        "wide table": "|" + "a|" * (size // 6) + "\n|" + "-|" * (size // 6) + "\n",
        "deep quotes": ">" * size,
        "deep lists": "".join("  " * i + "- a\n" for i in range(math.isqrt(size) + 2)),
        "deep mixed": "> - " * size,
        "long code": "```python\n" + "def f(x):\n    return [x * 2 for x in range(10)]  # c\n" * (size // 40 + 1),
        "links <a>": "<a@b.c>" * (size // 7),
        "entities": "&amp;" * (size // 5),
        "prose": "Some *plain* text with a [link](https://example.com) and `code`.\n\n" * (size // 60 + 1),
    }
    return {name: text[:size] for name, text in texts.items()}


def measure(text: str) -> tuple[float, float, bool]:
    times, plain = [], False
    for _ in range(REPEAT):
        start = time.perf_counter()
        html = render_markdown(text)
        times.append(time.perf_counter() - start)
        plain = PLAIN_CLASS in html
    return statistics.median(times), max(times), plain


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [4_000, 40_000, 400_000]
    print(f"{'input':<16}{'chars':>9}{'median ms':>11}{'worst ms':>10}  shown as")
    for size in sizes:
        for name, text in corpus(size).items():
            median, worst, plain = measure(text)
            print(
                f"{name:<16}{len(text):>9,}{median * 1000:>11.1f}{worst * 1000:>10.1f}  {'plain' if plain else 'markdown'}"
            )
        print()


if __name__ == "__main__":
    main()
