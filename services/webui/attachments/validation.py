"""What a file is, decided by the server from its bytes (and, for text, its extension).

Accepted: UTF-8 text (code, logs, Markdown, CSV, JSON…), PDFs (text extracted with pypdf, bounded
in pages and characters, off the serving thread), and PNG, JPEG, GIF and WebP images (sent only to
models marked `vision = true`). Everything else — HTML, SVG, binaries — is refused with a sentence.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import RequestError

ACCEPTED = (
    "Switchboard accepts text files (code, logs, Markdown, CSV, JSON), PDFs, and PNG, JPEG, GIF or "
    "WebP images (for models that take images)."
)
FILENAME_MAX = 255
PDF_MAX_PAGES = 300
PDF_MAX_CHARS = 2_000_000
# Markup a browser would render: refused whatever the bytes, so it can never be served as a page.
MARKUP_EXTENSIONS = {"html", "htm", "xhtml", "xht", "shtml", "svg", "svgz", "mht", "mhtml", "hta"}
TEXT_TYPES = {"md": "text/markdown", "markdown": "text/markdown", "csv": "text/csv", "json": "application/json"}
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class AttachmentError(RequestError):
    """A file that cannot be attached, and why."""


@dataclass
class Detected:
    kind: str  # text, pdf or image
    media_type: str
    text_chars: int = 0
    extracted_text: str | None = None  # PDFs only


def clean_filename(raw) -> str:
    """A name safe to show and to put in a header: no folders, no control characters, ≤ 255."""
    name = raw if isinstance(raw, str) else ""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = " ".join(_UNSAFE_NAME.sub("_", _UNSTORABLE.sub("", name)).split()).strip(". ")
    if not name:
        return "attachment"
    if len(name) > FILENAME_MAX:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: FILENAME_MAX - len(ext) - 1] + (f".{ext}" if ext else "")
    return name


def extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def image_type(head: bytes) -> str | None:
    for magic, media_type in IMAGE_MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _looks_like_markup(text: str) -> bool:
    start = text.lstrip("\ufeff \t\r\n")[:1024].lower()
    if start.startswith(("<!doctype html", "<html", "<svg", "<head", "<body", "<script")):
        return True
    return start.startswith("<?xml") and "<svg" in start


def detect(path: Path, head: bytes, filename: str) -> Detected:
    """The kind and media type of the staged file at `path`, or AttachmentError (422)."""
    ext = extension(filename)
    if ext in MARKUP_EXTENSIONS:
        raise AttachmentError(422, f"{filename} is HTML or SVG, which cannot be attached. {ACCEPTED}")
    media_type = image_type(head)
    if media_type:
        return Detected("image", media_type)
    if head.startswith(b"%PDF-"):
        from ..auth import off_the_hub

        text = off_the_hub(extract_pdf_text, str(path), filename)
        return Detected("pdf", "application/pdf", len(text), text)
    text_chars = _text_chars(path)
    if text_chars is None:
        raise AttachmentError(422, f"{filename} is not a text file, a PDF or a supported image. {ACCEPTED}")
    with open(path, encoding="utf-8-sig") as handle:
        if _looks_like_markup(handle.read(2048)):
            raise AttachmentError(422, f"{filename} is HTML or SVG, which cannot be attached. {ACCEPTED}")
    return Detected("text", TEXT_TYPES.get(ext, "text/plain"), text_chars)


def _text_chars(path: Path) -> int | None:
    """How many characters the file holds as UTF-8 text, or None if it is not text."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    chars = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(64 * 1024):
                text = decoder.decode(chunk)
                if "\x00" in text:
                    return None
                chars += len(text)
            chars += len(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        return None
    return chars


def extract_pdf_text(path: str, filename: str) -> str:
    """A PDF's text, page by page, at most PDF_MAX_PAGES pages and PDF_MAX_CHARS characters."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        with open(path, "rb") as handle:
            reader = PdfReader(io.BytesIO(handle.read()))
            if reader.is_encrypted and not reader.decrypt(""):
                raise AttachmentError(422, f"{filename} is an encrypted PDF; attach an unprotected copy.")
            pages, total = [], 0
            for page in reader.pages[:PDF_MAX_PAGES]:
                text = _UNSTORABLE.sub("", page.extract_text() or "")
                pages.append(text)
                total += len(text)
                if total >= PDF_MAX_CHARS:
                    break
    except AttachmentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError):
        raise AttachmentError(422, f"{filename} could not be read as a PDF.") from None
    return "\n\n".join(pages)[:PDF_MAX_CHARS]
