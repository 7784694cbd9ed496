"""What the reference agent says, and the @@directives that tests use to steer it.

A reply is plausible markdown (heading, intro, bullets, a fenced python block, a closing
paragraph) that names the agent and echoes the topic of the user's last message, cut into
word-sized tokens. Directives in that last message change the pace or the ending:

    @@tokens=40 @@delay_ms=20 @@first_token_ms=1500 @@stall_after=5 @@stall_ms=3000
    @@crash_after=10 @@malformed=1 @@echo @@status=awaiting_approval @@error=message
    @@usage=early|none @@filler=doc @@echo_context @@approval="what it wants to do"

`@@echo_context` answers with one line per message the agent received ("- role: first words",
directives left out), so tests can see exactly which messages, and which path of a branched
conversation, Switchboard sent.

`@@echo` answers with the message's text and, when it carries attachments (content parts,
native or OpenAI), one line per attachment: name, media type, size and the first line of its text.

A reply longer than the document is padded with a short paragraph repeated; `@@filler=doc`
repeats the whole document instead (headings, lists, code blocks), which is what a long,
realistic markdown reply looks like to the renderer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# @@name, @@name=value or @@name="value with spaces"
_DIRECTIVE = re.compile(r'[ \t]*@@([a-z_]+)(?:=("[^"\n]*"|\S*))?')
# Word-sized tokens that keep every character: joining them gives the text back exactly.
_TOKEN = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True)
class Knobs:
    tokens: int | None = None
    delay_ms: float = 18.0
    first_token_ms: float = 350.0
    stall_after: int | None = None
    stall_ms: float = 0.0
    crash_after: int | None = None
    malformed: bool = False
    echo: bool = False
    echo_context: bool = False
    status: str | None = None
    error: str | None = None
    usage: str = "normal"  # "early" sends usage before the tokens, "none" never sends it
    filler: str = "paragraph"  # "doc": pad a long reply with the whole document again
    approval: str | None = None  # ask a person for this before replying (agents/approvals.py)


# Per-model pace, so the fast model feels fast and the large one deliberate.
MODEL_PACE = {
    "ref-fast": Knobs(delay_ms=11.0, first_token_ms=150.0),
    "ref-standard": Knobs(delay_ms=16.0, first_token_ms=350.0),
    "ref-large": Knobs(delay_ms=19.0, first_token_ms=500.0),
}

_INT_KNOBS = ("tokens", "stall_after", "crash_after")
_MS_KNOBS = ("delay_ms", "first_token_ms", "stall_ms")


def parse_directives(text: str, model_id: str) -> tuple[Knobs, str]:
    """The knobs asked for in `text` (over the model's defaults), and text without them."""
    knobs = MODEL_PACE.get(model_id, Knobs())
    changes: dict = {}
    for match in _DIRECTIVE.finditer(text):
        name, value = match.group(1), match.group(2)
        if value is not None and value.startswith('"'):
            value = value[1:-1]
        if name in _INT_KNOBS and value is not None and value.isdigit():
            changes[name] = int(value)
        elif name in _MS_KNOBS and value is not None and _is_number(value):
            changes[name] = min(float(value), 600_000.0)
        elif name in ("malformed", "echo", "echo_context"):
            changes[name] = value in (None, "", "1", "true", "yes")
        elif name == "status" and value:
            changes["status"] = value
        elif name == "error":
            changes["error"] = value or "the reference agent was asked to fail"
        elif name == "usage" and value in ("early", "none", "normal"):
            changes["usage"] = value
        elif name == "filler" and value in ("doc", "paragraph"):
            changes["filler"] = value
        elif name == "approval" and value:
            changes["approval"] = value
    cleaned = _DIRECTIVE.sub("", text).strip()
    return replace(knobs, **changes), cleaned


def _is_number(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def topic_of(text: str) -> str:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first_line = re.sub(r"[#*`>\[\]]", "", first_line).strip()
    if len(first_line) > 70:
        first_line = first_line[:67].rsplit(" ", 1)[0] + "..."
    return first_line or "your request"


_FOCUS = {
    "code": ("the code paths it touches", "tests that pin the behaviour first", "a small, reviewable change set"),
    "data": (
        "the shape and volume of the data",
        "where the numbers come from",
        "a migration that can run twice safely",
    ),
    "ops": ("how it is deployed and rolled back", "the alerts that would page someone", "capacity on a two-core box"),
}
_DEFAULT_FOCUS = ("what each director owns", "the order the work can land in", "the risks worth a spike first")


def compose_reply(agent_name: str, agent_id: str, parent_name: str | None, topic: str) -> str:
    focus = next((v for k, v in _FOCUS.items() if k in agent_id), _DEFAULT_FOCUS)
    role = (
        f"the {agent_name}, reporting to the {parent_name}"
        if parent_name
        else f"the {agent_name}, at the head of this fleet"
    )
    slug = re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")[:30] or "request"
    return (
        f"## {agent_name}: {topic}\n\n"
        f"Here is how I, {role}, would approach **{topic}**. "
        "I will keep it short and concrete so you can push back early.\n\n"
        f"- Start with {focus[0]}.\n"
        f"- Then look at {focus[1]}.\n"
        f"- Finish with {focus[2]}.\n\n"
        "A first sketch of the plan in code:\n\n"
        "```python\n"
        f"def plan_{slug}(steps: list[str]) -> dict[str, str]:\n"
        "    # Each step gets an owner before anyone starts.\n"
        f'    return {{step: "{agent_id}" for step in steps}}\n'
        "```\n\n"
        "If this matches what you had in mind, tell me which step to start with; "
        "otherwise say what I missed and I will revise the plan.\n"
    )


_OPENAI_FILE_HEADER = re.compile(r"^\[attachment: (.+) \(([^()\n]+)\)\]\n")
_DATA_URL = re.compile(r"^data:([\w.+/-]+);base64,(.*)$", re.S)


@dataclass(frozen=True)
class Attached:
    """What the agent got of one attachment."""

    name: str
    media_type: str
    size: str  # "123 characters" or "456 bytes"
    first_line: str = ""


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:120]


def split_content(content) -> tuple[str, list[Attached]]:
    """A message's text and its attachments: `content` is a string, or a list of parts in the
    native shape (text, file, image) or OpenAI's (text, with a file's header line, and image_url)."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    attached: list[Attached] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            header = _OPENAI_FILE_HEADER.match(part.get("text", ""))
            if header:
                body = part["text"][header.end() :]
                attached.append(Attached(header[1], header[2], f"{len(body):,} characters", _first_line(body)))
            else:
                texts.append(part.get("text", ""))
        elif kind == "file":
            body = part.get("text", "")
            attached.append(
                Attached(
                    part.get("name", "?"), part.get("media_type", "?"), f"{len(body):,} characters", _first_line(body)
                )
            )
        elif kind == "image":
            size = _decoded_size(part.get("data", ""))
            attached.append(Attached(part.get("name", "image"), part.get("media_type", "?"), f"~{size:,} bytes"))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            found = _DATA_URL.match(url)
            media_type, size = (found[1], _decoded_size(found[2])) if found else ("a URL", 0)
            attached.append(Attached("image", media_type, f"~{size:,} bytes"))
    return "\n".join(texts), attached


def _decoded_size(data: str) -> int:
    data = data.strip()
    return len(data) * 3 // 4 - len(data) + len(data.rstrip("="))


def content_chars(content) -> int:
    """How long a message is, for a usage estimate: its text, and its files' text."""
    if isinstance(content, str):
        return len(content)
    return sum(len(part.get("text", "")) for part in content) + 1000 * sum(
        1 for part in content if part.get("type") in ("image", "image_url")
    )


def describe_attached(attached: list[Attached]) -> str:
    lines = [f"Received {len(attached)} attachment{'s' if len(attached) != 1 else ''}:", ""]
    for item in attached:
        line = f"- attachment `{item.name}` · {item.media_type} · {item.size}"
        if item.first_line:
            line += f" · first line: {item.first_line}"
        lines.append(line)
    return "\n".join(lines)


ECHO_CONTEXT_WORDS = 16


def context_lines(messages: list[dict]) -> str:
    """What @@echo_context answers: each received message as "- role: its first words"."""
    lines = []
    for message in messages:
        words = _DIRECTIVE.sub("", split_content(message.get("content", ""))[0]).split()
        lines.append(f"- {message.get('role')}: {' '.join(words[:ECHO_CONTEXT_WORDS])}")
    return "\n".join(lines) + "\n"


def reply_tokens(
    knobs: Knobs,
    cleaned_text: str,
    agent_name: str,
    agent_id: str,
    parent_name: str | None,
    messages: list[dict] | None = None,
    attached: list[Attached] | None = None,
) -> list[str]:
    if knobs.echo_context:
        return tokenize(context_lines(messages or []))
    if knobs.echo:
        if attached:
            return tokenize(f"{cleaned_text}\n\n{describe_attached(attached)}".strip())
        return tokenize(cleaned_text)
    tokens = tokenize(compose_reply(agent_name, agent_id, parent_name, topic_of(cleaned_text)))
    if knobs.tokens is None:
        return tokens
    if knobs.tokens <= len(tokens):
        return tokens[: knobs.tokens]
    if knobs.filler == "doc":
        # Each copy starts a new top-level block, so the markdown stays well-formed.
        filler = ["\n\n" + tokens[0], *tokens[1:]]
    else:
        filler = tokenize(
            "\n\nMore detail, since you asked for a longer answer: "
            "each step above can be split again until it fits in a day."
        )
    while len(tokens) < knobs.tokens:
        tokens.extend(filler)
    return tokens[: knobs.tokens]
