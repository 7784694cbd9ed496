"""Attachments kept and moved: export/import round trips, housekeeping of unsent uploads and
orphan files, and where the files live. (Same app settings as test_attachments.py.)"""

from __future__ import annotations

import os
import time

from sqlalchemy import select

from services.webui.attachments import service as attachments
from services.webui.attachments import storage
from services.webui.extensions import db
from services.webui.models import Attachment, Message

from .attachment_files import pdf_with_text
from .test_attachments import agents_file, app_config, send, uploaded, wait_final  # noqa: F401 (fixtures)


def test_export_carries_the_files_and_import_restores_them_for_the_importer(app, alice, bob):
    notes = uploaded(alice, b"exported notes\n", "notes.txt")
    pdf = uploaded(alice, pdf_with_text("Exported PDF"), "doc.pdf")
    sent = send(alice, [notes["id"], pdf["id"]]).json
    wait_final(app, sent["message_id"])
    export = alice.get(f"/api/chat/sessions/{sent['session_id']}/export").json
    listed = export["messages"][0]["attachments"]
    assert [item["filename"] for item in listed] == ["notes.txt", "doc.pdf"]
    assert all(item["content_base64"] for item in listed)
    markdown = alice.get(f"/api/chat/sessions/{sent['session_id']}/export?format=md").text
    assert "Attachments: notes.txt (15 B), doc.pdf" in markdown
    detail = alice.get(f"/api/chat/sessions/{sent['session_id']}").json
    assert "content_base64" not in detail["messages"][0]["attachments"][0]  # the API lists, never inlines

    imported = bob.post("/api/chat/sessions/import", json=export)
    assert imported.status_code == 201, imported.text
    with app.app_context():
        user_message = db.session.scalars(
            select(Message).where(Message.session_id == imported.json["session_id"], Message.role == "user")
        ).one()
        rows = attachments.by_message([user_message.id])[user_message.id]
        assert [row.filename for row in rows] == ["notes.txt", "doc.pdf"]
        assert rows[1].extracted_text == "Exported PDF"
        bob_id = rows[0].id
    download = bob.get(f"/attachments/{bob_id}")
    assert download.status_code == 200 and download.data == b"exported notes\n"
    assert alice.get(f"/attachments/{bob_id}").status_code == 404  # bob's copy is bob's
    with app.app_context():
        assert len(storage.stored_hashes()) == 2  # one blob per content, shared by both users

    export["messages"][0]["attachments"][0]["sha256"] = "0" * 64
    tampered = bob.post("/api/chat/sessions/import", json=export)
    assert tampered.status_code == 422 and "does not match its sha256" in tampered.json["message"]
    export["messages"][0]["attachments"][0].update(sha256=None, content_base64="PGh0bWw+PC9odG1sPg==")  # <html></html>
    export["messages"][0]["attachments"][0]["filename"] = "x.html"
    refused = bob.post("/api/chat/sessions/import", json=export)
    assert refused.status_code == 422 and "x.html is HTML or SVG" in refused.json["message"]


def test_cleanup_removes_old_unsent_uploads_and_orphan_files(app, alice, runner):
    body = uploaded(alice, b"forgotten\n", "forgotten.txt")
    with app.app_context():
        orphan = storage.root() / ("ab" * 32)[:2] / ("ab" * 32)
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"left by a crash")
        os.utime(orphan, (time.time() - 7200, time.time() - 7200))  # older than the orphan grace
        fresh = storage.root() / "cd" / ("cd" * 32)
        fresh.parent.mkdir(exist_ok=True)
        fresh.write_bytes(b"an upload not yet committed")
        row = db.session.get(Attachment, body["id"])
        row.created_at = row.created_at - attachments.UNSENT_GRACE * 2
        db.session.commit()
    result = runner.invoke(args=["attachments", "cleanup"])
    assert result.exit_code == 0 and "Removed 1 unsent upload(s), 2 blob file(s)" in result.output
    with app.app_context():
        assert storage.stored_hashes() == {"cd" * 32}


def test_attachments_live_beside_their_sqlite_database_unless_told(tmp_path, monkeypatch):
    from services.webui.config import load_config

    monkeypatch.delenv("ATTACHMENTS_DIR", raising=False)
    config = load_config(
        str(tmp_path), {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", "SECRET_KEY": "k" * 20}
    )
    assert config["ATTACHMENTS_DIR"] == str(tmp_path.resolve() / "attachments")
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "elsewhere"))
    config = load_config(
        str(tmp_path), {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", "SECRET_KEY": "k" * 20}
    )
    assert config["ATTACHMENTS_DIR"] == str(tmp_path / "elsewhere")
