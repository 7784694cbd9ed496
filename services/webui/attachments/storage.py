"""Blobs on disk, named by their SHA-256: one file per distinct content, whoever uploaded it.

Layout: ATTACHMENTS_DIR/ab/abcdef…(64 hex). Folders are 0700 and files 0600 (like the database,
database.py), written to a temp file in ATTACHMENTS_DIR/tmp while hashing, then renamed into place,
so a blob is either whole or absent. A blob is removed (after the commit that dropped its last row)
by `remove_unreferenced`; a crash in between leaves an orphan that `flask attachments cleanup`
(and `sweep_orphans`) removes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flask import current_app

from ..database import PRIVATE_DIR, PRIVATE_FILE

CHUNK = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TooLarge(Exception):
    """The stream went past the byte limit while it was being stored."""


@dataclass
class Staged:
    """An upload written to a temp file and hashed, not yet in the store."""

    path: Path
    sha256: str
    size: int
    head: bytes  # the first bytes, to tell the type

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def root() -> Path:
    return Path(current_app.config["ATTACHMENTS_DIR"])


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)


def blob_path(sha256: str) -> Path:
    if not _SHA256.match(sha256):
        raise ValueError("not a SHA-256 hex digest")
    return root() / sha256[:2] / sha256


def stage(stream: BinaryIO, limit: int, head_bytes: int = 8192) -> Staged:
    """Copy `stream` to a private temp file, hashing as it goes; TooLarge past `limit` bytes."""
    tmp_dir = root() / "tmp"
    _private_dir(root())
    _private_dir(tmp_dir)
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")  # mkstemp makes it 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                if len(head) < head_bytes:
                    head += chunk[: head_bytes - len(head)]
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Staged(path, digest.hexdigest(), size, head)


def keep(staged: Staged) -> Path:
    """Move a staged upload into the store; if the content is already there, drop the copy."""
    target = blob_path(staged.sha256)
    if target.exists():
        staged.discard()
        return target
    _private_dir(target.parent)
    os.chmod(staged.path, PRIVATE_FILE)
    os.replace(staged.path, target)
    return target


def read_bytes(sha256: str) -> bytes:
    return blob_path(sha256).read_bytes()


def exists(sha256: str) -> bool:
    return blob_path(sha256).exists()


def remove(sha256s) -> int:
    """Delete these blobs (the caller checked that no row needs them); returns how many went."""
    removed = 0
    for sha256 in set(sha256s):
        try:
            blob_path(sha256).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def stored_hashes(older_than_seconds: float = 0.0) -> set[str]:
    folder = root()
    if not folder.is_dir():
        return set()
    cutoff = time.time() - older_than_seconds
    return {
        path.name
        for path in folder.glob("??/*")
        if _SHA256.match(path.name) and (not older_than_seconds or path.stat().st_mtime < cutoff)
    }


def stale_temp_files(older_than_seconds: float) -> list[Path]:
    folder = root() / "tmp"
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    return [path for path in folder.iterdir() if path.is_file() and path.stat().st_mtime < cutoff]
