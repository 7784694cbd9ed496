"""A message's `content`: a string, or a list of content parts when it carries attachments
(docs/agent-protocol.md)."""

from __future__ import annotations

# An image part counts as ~1,000 tokens, not as the length of its base64.
IMAGE_PART_CHARS = 4000


def content_chars(content) -> int:
    """Characters of a message's content, for a token estimate."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            IMAGE_PART_CHARS if part.get("type") == "image" else len(str(part.get("text", "")))
            for part in content
            if isinstance(part, dict)
        )
    return len(str(content))
