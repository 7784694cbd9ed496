"""Attachments: upload (limits, dedupe, quota), picking them for a message, and forgetting them.

A row per upload and user; the bytes are shared by hash (storage.py). A user's quota counts each
distinct content they own once. Rows linked to no message are "unsent": the composer's chips.
When the last message using an attachment goes (its session deleted or purged), the row goes,
and the blob goes once no row of anyone needs it (after the commit; `flask attachments cleanup`
removes what a crash left behind).
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, delete, func, insert, select

from services.gateway.registry import Model

from ..extensions import db
from ..models import Attachment, ConversationSession, Message, MessageAttachment, new_id, utcnow
from . import storage
from .validation import AttachmentError, clean_filename, detect

A = Attachment
L = MessageAttachment
ID_MAX = 36
# Unsent uploads (chips never sent) older than this are removed by `flask attachments cleanup`.
UNSENT_GRACE = timedelta(hours=24)
ORPHAN_GRACE = timedelta(hours=1)


def megabytes(size: int) -> str:
    value = size / 1_048_576
    return f"{value:.1f} MB" if value < 10 else f"{value:.0f} MB"


def vision_refusal(filename: str, model: Model) -> AttachmentError:
    return AttachmentError(
        422,
        f"{filename} is an image, and model {model.model_id} does not take images. "
        "Pick a model that does, or attach text or a PDF.",
    )


def quota_used(user_id: int) -> int:
    """Bytes the user's attachments hold: each distinct content counted once."""
    sizes = select(A.sha256, func.max(A.size).label("size")).where(A.user_id == user_id).group_by(A.sha256).subquery()
    return int(db.session.scalar(select(func.coalesce(func.sum(sizes.c.size), 0))) or 0)


def upload(user, file_storage, model: Model | None = None, *, commit: bool = True) -> Attachment:
    """Store one uploaded file for `user` (a werkzeug FileStorage), or AttachmentError.

    With commit=False (an import) the row is only flushed: the caller's transaction decides."""
    config = current_app.config
    filename = clean_filename(getattr(file_storage, "filename", None))
    limit = config["ATTACHMENT_MAX_BYTES"]
    try:
        staged = storage.stage(file_storage.stream, limit)
    except storage.TooLarge:
        raise AttachmentError(413, f"{filename} is larger than {megabytes(limit)}, the limit for one file.") from None
    try:
        if staged.size == 0:
            raise AttachmentError(422, f"{filename} is empty.")
        found = detect(staged.path, staged.head, filename)
        if found.kind == "image" and model is not None and not model.vision:
            raise vision_refusal(filename, model)
        same = db.session.scalars(
            select(A).where(A.user_id == user.id, A.sha256 == staged.sha256, A.filename == filename).limit(1)
        ).first()
        if same is not None:  # the same file again: one row, one blob
            staged.discard()
            return same
        owned = db.session.scalar(select(A.id).where(A.user_id == user.id, A.sha256 == staged.sha256).limit(1))
        quota = config["ATTACHMENT_QUOTA_BYTES"]
        used = quota_used(user.id)
        if owned is None and used + staged.size > quota:
            raise AttachmentError(
                413,
                f"{filename} ({megabytes(staged.size)}) does not fit: your attachments use {megabytes(used)} "
                f"of your {megabytes(quota)}. Delete sessions whose files you no longer need.",
            )
        storage.keep(staged)  # before the row: a row never names a missing blob
    except BaseException:
        staged.discard()
        raise
    row = A(
        id=new_id(),
        user_id=user.id,
        sha256=staged.sha256,
        filename=filename,
        media_type=found.media_type,
        kind=found.kind,
        size=staged.size,
        text_chars=found.text_chars,
        extracted_text=found.extracted_text,
        created_at=utcnow(),
    )
    db.session.add(row)
    if commit:
        db.session.commit()
    else:
        db.session.flush()
    return row


def owned_attachment(user, attachment_id) -> Attachment:
    row = db.session.get(A, attachment_id) if isinstance(attachment_id, str) and len(attachment_id) <= ID_MAX else None
    if row is None or row.user_id != user.id:
        raise AttachmentError(404, "There is no such attachment.")
    return row


def readable_attachment(user, attachment_id: str) -> Attachment:
    """The uploader's, or — for an admin reviewing sessions — one that a message carries; else 404."""
    row = db.session.get(A, attachment_id) if len(attachment_id) <= ID_MAX else None
    if row is not None and row.user_id == user.id:
        return row
    if row is not None and user.is_admin:
        if db.session.scalar(select(L.message_id).where(L.attachment_id == row.id).limit(1)) is not None:
            return row
    raise AttachmentError(404, "There is no such attachment.")


def pick_for_message(user, ids, model: Model) -> list[Attachment]:
    """The attachments a send names (`attachment_ids`), checked: the user's own, within the count
    limit, and images only for a vision model."""
    if ids is None or ids == [] or ids == "":
        return []
    if isinstance(ids, str):
        ids = [part for part in ids.split(",") if part]
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise AttachmentError(400, "attachment_ids must be a list of attachment ids.")
    limit = current_app.config["ATTACHMENT_MAX_FILES"]
    if len(ids) > limit:
        raise AttachmentError(422, f"A message can carry at most {limit} files; this one has {len(ids)}.")
    if len(set(ids)) != len(ids):
        raise AttachmentError(422, "The same attachment is listed twice.")
    picked = [owned_attachment(user, item) for item in ids]
    for row in picked:
        if row.kind == "image" and not model.vision:
            raise vision_refusal(row.filename, model)
    return picked


def link(message_id: str, attachments: list[Attachment]) -> None:
    """Attach them to a message, in this transaction (the caller commits)."""
    if attachments:
        db.session.execute(
            insert(L.__table__),
            [{"message_id": message_id, "position": i, "attachment_id": a.id} for i, a in enumerate(attachments)],
        )


# Built once: each send and reply end asks (building a statement costs more than running it).
_BY_MESSAGE = (
    select(L.message_id, A)
    .join(A, A.id == L.attachment_id)
    .where(L.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(L.position)
)


def by_message(message_ids) -> dict[str, list[Attachment]]:
    """Each message's attachments, in order, in one query."""
    ids = list(message_ids)
    if not ids:
        return {}
    rows = db.session.execute(_BY_MESSAGE, {"ids": ids}).all()
    found: dict[str, list[Attachment]] = {}
    for message_id, attachment in rows:
        found.setdefault(message_id, []).append(attachment)
    return found


def unsent(user) -> list[Attachment]:
    linked = select(L.attachment_id)
    return db.session.scalars(select(A).where(A.user_id == user.id, A.id.not_in(linked)).order_by(A.created_at)).all()


def is_linked(attachment_id: str) -> bool:
    return db.session.scalar(select(L.message_id).where(L.attachment_id == attachment_id).limit(1)) is not None


# ---- forgetting ---------------------------------------------------------------------------------


def used_by_sessions(session_ids) -> set[str]:
    """Attachment ids the sessions' messages carry (read before the sessions are deleted)."""
    ids = list(session_ids)
    if not ids:
        return set()
    return set(
        db.session.scalars(
            select(L.attachment_id)
            .distinct()
            .join(Message, Message.id == L.message_id)
            .where(Message.session_id.in_(select(ConversationSession.id).where(ConversationSession.id.in_(ids))))
        ).all()
    )


def drop_unused(attachment_ids) -> set[str]:
    """Delete the rows among these that no message carries any more (in this transaction);
    returns their hashes, for `remove_blobs` after the commit."""
    ids = list(attachment_ids)
    if not ids:
        return set()
    gone = db.session.execute(select(A.id, A.sha256).where(A.id.in_(ids), A.id.not_in(select(L.attachment_id)))).all()
    if gone:
        db.session.execute(delete(A).where(A.id.in_([row.id for row in gone])))
    return {row.sha256 for row in gone}


def remove_blobs(sha256s) -> int:
    """After the commit: delete the blobs of these hashes that no row (of anyone) names."""
    candidates = set(sha256s)
    if not candidates:
        return 0
    still = set(db.session.scalars(select(A.sha256).distinct().where(A.sha256.in_(candidates))).all())
    return storage.remove(candidates - still)


def cleanup(now=None) -> dict:
    """Housekeeping: unsent uploads past their grace, then blobs no row names, then stale temp files."""
    cutoff = (now or utcnow()) - UNSENT_GRACE
    stale = db.session.scalars(select(A.id).where(A.created_at < cutoff, A.id.not_in(select(L.attachment_id)))).all()
    hashes = drop_unused(stale)
    db.session.commit()
    removed = remove_blobs(hashes)
    known = set(db.session.scalars(select(A.sha256).distinct()).all())
    # Only files older than the grace: a fresh one may belong to an upload not yet committed.
    orphans = storage.stored_hashes(older_than_seconds=ORPHAN_GRACE.total_seconds()) - known
    removed += storage.remove(orphans)
    temps = storage.stale_temp_files(UNSENT_GRACE.total_seconds())
    for path in temps:
        path.unlink(missing_ok=True)
    return {"unsent_rows": len(stale), "blobs": removed, "temp_files": len(temps)}


def mine(user, limit: int = 500) -> list[tuple[Attachment, bool]]:
    """The user's attachments, newest first, each with whether a message carries it."""
    rows = db.session.scalars(select(A).where(A.user_id == user.id).order_by(A.created_at.desc()).limit(limit)).all()
    linked = set(db.session.scalars(select(L.attachment_id).where(L.attachment_id.in_([r.id for r in rows]))).all())
    return [(row, row.id in linked) for row in rows]


def delete_unsent(row: Attachment) -> None:
    if is_linked(row.id):
        raise AttachmentError(
            409, f"{row.filename} is part of a sent message; it goes when the sessions that carry it are deleted."
        )
    hashes = drop_unused([row.id])
    db.session.commit()
    remove_blobs(hashes)
