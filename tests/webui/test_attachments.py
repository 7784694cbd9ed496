"""Attachments through the API, with the Flask test client: upload, types, limits, dedupe, quota,
ownership, downloads that are never rendered, what the agent is sent, and deletion with sessions.
(The live agents — the reference agent's @@echo, and LiteLLM — are in test_attachments_live.py.)"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from services.gateway.openai_adapter import openai_content
from services.webui.attachments import storage
from services.webui.chat.context import conversation_for_agent
from services.webui.extensions import db
from services.webui.fleet import registry
from services.webui.models import Attachment, ConversationSession, Message, MessageAttachment

from ..support import free_port, write_registry
from .attachment_files import ELF, HTML, PNG, SVG, pdf_with_text

MAX_BYTES = 64 * 1024
QUOTA = 200 * 1024


@pytest.fixture
def agents_file(tmp_path) -> Path:
    return write_registry(
        tmp_path / "agents.toml",
        [
            {
                "agent_id": "architect",
                "port": free_port(),
                "models": [("ref-standard", 32768), ("ref-vision", 32768, True), ("ref-tiny", 100)],
            }
        ],
    )


@pytest.fixture
def app_config(app_config):
    return {
        **app_config,
        "ATTACHMENT_MAX_BYTES": MAX_BYTES,
        "ATTACHMENT_MAX_FILES": 3,
        "ATTACHMENT_QUOTA_BYTES": QUOTA,
    }


def upload(client, data: bytes, name: str, **form):
    return client.post(
        "/api/attachments",
        data={"file": (io.BytesIO(data), name, "text/html"), **form},  # the client's type is ignored
        content_type="multipart/form-data",
    )


def uploaded(client, data: bytes, name: str, **form) -> dict:
    response = upload(client, data, name, **form)
    assert response.status_code == 201, response.text
    return response.json


def send(client, ids, content="@@echo here are the files", **body):
    body.setdefault("agent_id", "architect")
    return client.post("/api/chat/message", json={"content": content, "attachment_ids": ids, **body})


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_text_file_is_stored_by_hash_privately_and_typed_by_the_server(app, alice):
    body = uploaded(alice, b"line one\nline two\n", "notes.log")
    assert body["kind"] == "text" and body["media_type"] == "text/plain"
    assert body["size"] == 18 and body["text_chars"] == 18 and body["filename"] == "notes.log"
    with app.app_context():
        path = storage.blob_path(body["sha256"])
        assert path.read_bytes() == b"line one\nline two\n"
        assert mode(path) == 0o600 and mode(path.parent) == 0o700 and mode(storage.root()) == 0o700
    assert uploaded(alice, b"a,b\n1,2\n", "t.csv")["media_type"] == "text/csv"
    assert uploaded(alice, b'{"a": 1}', "d.json")["media_type"] == "application/json"


def test_a_pdf_has_its_text_extracted(app, alice):
    body = uploaded(alice, pdf_with_text("Quarterly numbers: revenue up"), "report.pdf")
    assert body["kind"] == "pdf" and body["media_type"] == "application/pdf"
    with app.app_context():
        row = db.session.get(Attachment, body["id"])
        assert row.extracted_text == "Quarterly numbers: revenue up" and row.text_chars == len(row.extracted_text)
    broken = upload(alice, b"%PDF-1.4\nthis is not really a pdf", "broken.pdf")
    assert broken.status_code == 422 and "could not be read as a PDF" in broken.json["message"]


@pytest.mark.parametrize(
    "data, name, says",
    [
        (HTML, "page.html", "HTML or SVG"),
        (HTML, "innocent.txt", "HTML or SVG"),
        (SVG, "logo.svg", "HTML or SVG"),
        (SVG, "logo.xml", "HTML or SVG"),
        (ELF, "tool.bin", "not a text file"),
        ("Grüße".encode("latin-1"), "latin1.txt", "not a text file"),
        (b"", "empty.txt", "is empty"),
    ],
)
def test_disallowed_files_are_refused_with_a_sentence(alice, data, name, says):
    response = upload(alice, data, name)
    assert response.status_code == 422
    assert says in response.json["message"]
    if "not a text file" in says or "HTML" in says:
        assert "accepts text files" in response.json["message"]


def test_an_image_is_refused_for_a_model_without_vision_at_upload_and_at_send(alice):
    refused = upload(alice, PNG, "dot.png", agent_id="architect", model_id="ref-standard")
    assert refused.status_code == 422 and "does not take images" in refused.json["message"]
    image = uploaded(alice, PNG, "dot.png", agent_id="architect", model_id="ref-vision")
    assert image["kind"] == "image" and image["media_type"] == "image/png"
    at_send = send(alice, [image["id"]], model_id="ref-standard")
    assert at_send.status_code == 422 and "does not take images" in at_send.json["message"]
    sent = send(alice, [image["id"]], model_id="ref-vision")
    assert sent.status_code == 202
    page = alice.get(f"/chat/{sent.json['session_id']}").text  # a raster image gets a thumbnail
    assert f'<img class="attachment-thumb" src="/attachments/{image["id"]}"' in page
    download = alice.get(image["url"])
    assert download.headers["Content-Type"] == "image/png" and download.data == PNG


def test_size_count_and_quota_limits_each_say_what_is_wrong(app, alice):
    too_big = upload(alice, b"x" * (MAX_BYTES + 1), "big.log")
    assert too_big.status_code == 413 and "limit for one file" in too_big.json["message"]
    way_too_big = upload(alice, b"x" * (MAX_BYTES + 200 * 1024), "huge.log")  # past the body limit
    assert way_too_big.status_code == 413 and "limit for one file" in way_too_big.json["message"]
    ids = [uploaded(alice, f"file {i}\n".encode(), f"f{i}.txt")["id"] for i in range(4)]
    four = send(alice, ids)
    assert four.status_code == 422 and "at most 3 files" in four.json["message"]
    for i in range(3):  # 3 × 63 KB fit the 200 KB quota, a fourth does not
        uploaded(alice, bytes([65 + i]) * (63 * 1024), f"chunk{i}.txt")
    over = upload(alice, b"Z" * (63 * 1024), "one-more.txt")
    assert over.status_code == 413 and "does not fit" in over.json["message"]
    # The same content again costs nothing: it is stored once.
    assert uploaded(alice, b"A" * (63 * 1024), "same-bytes-new-name.txt")["sha256"]
    listing = alice.get("/api/attachments").json
    assert listing["quota"]["limit_bytes"] == QUOTA and listing["quota"]["used_bytes"] <= QUOTA
    with app.app_context():
        assert len(storage.stored_hashes()) == 4 + 3  # f0..f3 and three chunks; no copy


def test_dedupe_one_blob_per_content_one_row_per_name(app, alice, bob):
    first = uploaded(alice, b"same bytes\n", "a.txt")
    again = uploaded(alice, b"same bytes\n", "a.txt")
    renamed = uploaded(alice, b"same bytes\n", "b.txt")
    bobs = uploaded(bob, b"same bytes\n", "a.txt")
    assert again["id"] == first["id"] and renamed["id"] != first["id"] and bobs["id"] != first["id"]
    assert len({first["sha256"], renamed["sha256"], bobs["sha256"]}) == 1
    with app.app_context():
        assert storage.stored_hashes() == {first["sha256"]}


def test_another_user_gets_404_on_every_attachment_url(app, alice, bob):
    body = uploaded(alice, b"secret plans\n", "plans.txt")
    urls = [f"/api/attachments/{body['id']}", f"/api/attachments/{body['id']}/content", f"/attachments/{body['id']}"]
    for url in urls:
        assert alice.get(url).status_code == 200, url
        assert bob.get(url).status_code == 404, url
    assert bob.delete(f"/api/attachments/{body['id']}").status_code == 404
    assert send(bob, [body["id"]]).status_code == 404
    assert body["id"] not in {a["id"] for a in bob.get("/api/attachments").json["attachments"]}
    assert bob.get("/api/attachments/" + "x" * 300).status_code == 404


def test_downloads_are_attachments_never_rendered(alice):
    checks = [
        (b"# Title\n", "readme.md", "text/plain; charset=utf-8"),
        (pdf_with_text("hello"), "doc.pdf", "application/pdf"),
    ]
    for data, name, content_type in checks:
        body = uploaded(alice, data, name)
        response = alice.get(body["url"])
        assert response.status_code == 200 and response.data == data
        assert response.headers["Content-Type"] == content_type
        assert response.headers["Content-Disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
    unicode_name = uploaded(alice, b"data\n", "résumé <b>.txt")
    disposition = alice.get(unicode_name["url"]).headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20_b_.txt" in disposition


def test_an_unsent_upload_can_be_removed_a_sent_one_cannot(app, alice):
    loose = uploaded(alice, b"draft\n", "draft.txt")
    assert alice.delete(f"/api/attachments/{loose['id']}").json == {"id": loose["id"], "deleted": True}
    assert alice.get(f"/api/attachments/{loose['id']}").status_code == 404
    with app.app_context():
        assert loose["sha256"] not in storage.stored_hashes()
    kept = uploaded(alice, b"final\n", "final.txt")
    assert send(alice, [kept["id"]]).status_code == 202
    refused = alice.delete(f"/api/attachments/{kept['id']}")
    assert refused.status_code == 409 and "sent message" in refused.json["message"]


def test_the_agent_gets_content_parts_and_openai_gets_text_and_image_url(app, alice):
    text = uploaded(alice, b"first line of the log\nsecond\n", "app.log")
    pdf = uploaded(alice, pdf_with_text("PDF words"), "doc.pdf")
    image = uploaded(alice, PNG, "dot.png")
    sent = send(alice, [text["id"], pdf["id"], image["id"]], content="Look at these", model_id="ref-vision").json
    with app.app_context():
        model = registry().get("architect").model("ref-vision")
        new = db.session.get(Message, sent["user_message_id"])
        turns = conversation_for_agent(sent["session_id"], {"id": new.id, "content": new.content}, model)
    content = turns[-1]["content"]
    assert content[0] == {"type": "text", "text": "Look at these"}
    assert content[1] == {
        "type": "file",
        "name": "app.log",
        "media_type": "text/plain",
        "text": "first line of the log\nsecond\n",
    }
    assert content[2] == {"type": "file", "name": "doc.pdf", "media_type": "application/pdf", "text": "PDF words"}
    assert content[3]["type"] == "image" and content[3]["media_type"] == "image/png" and content[3]["data"]
    mapped = openai_content(content)
    assert mapped[1] == {"type": "text", "text": "[attachment: app.log (text/plain)]\nfirst line of the log\nsecond\n"}
    assert mapped[3]["type"] == "image_url" and mapped[3]["image_url"]["url"].startswith("data:image/png;base64,")
    assert openai_content("plain") == "plain"


def test_files_alone_are_a_message_and_name_the_session(app, alice):
    body = uploaded(alice, b"only a file\n", "only.txt")
    sent = send(alice, [body["id"]], content="")
    assert sent.status_code == 202
    with app.app_context():
        assert db.session.get(ConversationSession, sent.json["session_id"]).title == "only.txt"
    assert send(alice, [], content="").status_code == 422


def test_files_larger_than_the_model_takes_are_refused(alice):
    body = uploaded(alice, b"word " * 1000, "long.txt")
    response = send(alice, [body["id"]], model_id="ref-tiny")
    message = response.json["message"]
    # 5,000 characters of file at ~4 a token, plus the message's framing: far past ref-tiny's 75
    assert response.status_code == 422 and "its files come to about 1,2" in message and "at most 75" in message


def test_deleting_the_last_session_using_a_file_deletes_it_and_its_blob(app, alice, bob):
    shared = uploaded(alice, b"used twice\n", "twice.txt")
    only = uploaded(alice, b"used once\n", "once.txt")
    bobs_copy = uploaded(bob, b"used once\n", "once.txt")  # same content: the blob must survive for bob
    first = send(alice, [shared["id"], only["id"]]).json
    second = send(alice, [shared["id"]]).json
    for sent in (first, second):
        wait_final(app, sent["message_id"])
    assert alice.delete(f"/api/chat/sessions/{first['session_id']}").status_code == 200
    with app.app_context():
        ids = set(db.session.scalars(select(Attachment.id)).all())
        assert shared["id"] in ids and only["id"] not in ids and bobs_copy["id"] in ids
        assert storage.exists(shared["sha256"]) and storage.exists(only["sha256"])
    assert alice.delete(f"/api/chat/sessions/{second['session_id']}").status_code == 200
    bob.delete(f"/api/attachments/{bobs_copy['id']}")
    with app.app_context():
        assert db.session.scalars(select(MessageAttachment)).all() == []
        assert not storage.exists(shared["sha256"]) and not storage.exists(only["sha256"])


def test_user_messages_show_their_files_as_download_chips(app, alice):
    body = uploaded(alice, b"chip me\n", "chip.txt")
    sent = send(alice, [body["id"]]).json
    page = alice.get(f"/chat/{sent['session_id']}").text
    assert f'href="/attachments/{body["id"]}"' in page and "chip.txt" in page and "download" in page


def wait_final(app, message_id, timeout=10.0):
    from .test_chat_api import wait_final as wait

    return wait(app, message_id, timeout)


def test_an_image_counts_as_a_fixed_estimate_not_its_base64():
    from services.gateway.content import IMAGE_PART_CHARS, content_chars

    parts = [{"type": "text", "text": "abc"}, {"type": "image", "data": "A" * 100_000}, {"type": "file", "text": "xy"}]
    assert content_chars(parts) == 3 + IMAGE_PART_CHARS + 2
    assert content_chars("plain") == 5


def test_an_admin_reviewing_a_session_may_download_its_files_but_not_unsent_uploads(app, alice, make_user):
    admin = make_user("root", role="admin")
    sent_file = uploaded(alice, b"reviewed\n", "reviewed.txt")
    unsent = uploaded(alice, b"private draft\n", "draft.txt")
    sent = send(alice, [sent_file["id"]]).json
    wait_final(app, sent["message_id"])
    review = admin.get(f"/sessions/{sent['session_id']}").text
    assert f'href="/attachments/{sent_file["id"]}"' in review
    assert admin.get(f"/attachments/{sent_file['id']}").status_code == 200
    assert admin.get(f"/attachments/{unsent['id']}").status_code == 404
    assert admin.delete(f"/api/attachments/{sent_file['id']}").status_code == 404  # reading only


def test_the_reference_agent_reads_native_and_openai_parts():
    from services.agents.replies import split_content

    text, attached = split_content(
        [
            {"type": "text", "text": "hello"},
            {"type": "text", "text": "[attachment: a.csv (text/csv)]\nx,y\n1,2\n"},
            {"type": "file", "name": "b.log", "media_type": "text/plain", "text": "\n first \nsecond"},
            {"type": "image", "name": "c.png", "media_type": "image/png", "data": "AAAA"},
            {"type": "image_url", "image_url": {"url": "data:image/gif;base64,AAAAAAAA"}},
        ]
    )
    assert text == "hello"
    assert [(a.name, a.media_type, a.size, a.first_line) for a in attached] == [
        ("a.csv", "text/csv", "8 characters", "x,y"),
        ("b.log", "text/plain", "15 characters", "first"),
        ("c.png", "image/png", "~3 bytes", ""),
        ("image", "image/gif", "~6 bytes", ""),  # AAAAAAAA: 8 characters of base64, 6 bytes
    ]
    assert split_content("just text") == ("just text", [])


def test_a_file_missing_from_the_store_is_said_not_a_crash(app, alice):
    body = uploaded(alice, b"soon gone\n", "gone.txt")
    with app.app_context():
        storage.remove([body["sha256"]])
    sent = send(alice, [body["id"]])
    assert sent.status_code == 202
    assert alice.get(body["url"]).status_code == 404
    with app.app_context():
        model = registry().get("architect").model("ref-standard")
        new = db.session.get(Message, sent.json["user_message_id"])
        turns = conversation_for_agent(sent.json["session_id"], {"id": new.id, "content": new.content}, model)
    assert turns[-1]["content"][1]["text"] == "(this file is missing from Switchboard's store)"


def test_a_session_page_loads_all_its_attachments_in_one_query(app, alice):
    from sqlalchemy import event

    ids = [uploaded(alice, f"file {i}\n".encode(), f"f{i}.txt")["id"] for i in range(3)]
    first = send(alice, ids[:2]).json
    wait_final(app, first["message_id"])
    second = send(alice, ids[2:], session_id=first["session_id"]).json
    wait_final(app, second["message_id"])
    statements = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        if "message_attachments" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        page = alice.get(f"/chat/{first['session_id']}").text
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert all(f'href="/attachments/{i}"' in page for i in ids)
    # One query for the messages' chips and one for the context plan's file tokens: never one
    # per message.
    assert len(statements) == 2 and all(" IN (" in statement for statement in statements)


def test_earlier_files_count_in_the_context_plan_and_are_sent_again(app, alice):
    """A files-only message stays in the history: the plan counts its file, the next turn sends it."""
    big = uploaded(alice, b"x" * 4000, "big.txt")
    first = send(alice, [big["id"]], content="").json
    wait_final(app, first["message_id"])
    follow = send(alice, [], content="and now?", session_id=first["session_id"]).json
    wait_final(app, follow["message_id"])
    plan = alice.get(f"/api/chat/sessions/{first['session_id']}/context").json
    tokens = {item["id"]: item["tokens"] for item in plan["messages"]}
    assert tokens[first["user_message_id"]] >= 1000  # 4,000 characters of file at ~4 a token
    assert tokens[follow["user_message_id"]] < 20
    with app.app_context():
        model = registry().get("architect").model("ref-standard")
        new = db.session.get(Message, follow["user_message_id"])
        turns = conversation_for_agent(first["session_id"], {"id": new.id, "content": new.content}, model)
    assert [turn["role"] for turn in turns] == ["user", "user"]  # the failed replies have no text
    assert turns[0]["content"] == [{"type": "file", "name": "big.txt", "media_type": "text/plain", "text": "x" * 4000}]
    assert turns[1]["content"] == "and now?"
