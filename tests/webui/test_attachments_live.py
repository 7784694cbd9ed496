"""Attachments reach real agents: the reference agent (native protocol) echoes what it got
(`@@echo`), and so does one behind LiteLLM's proxy (OpenAI protocol, parts mapped to text parts).

The LiteLLM model forwards to the architect's own /v1/chat/completions, so the echo proves the
parts went Switchboard → LiteLLM → agent intact.
"""

from __future__ import annotations

import time

import pytest

from services.webui.models import LIVE_STATUSES

from ..litellm_server import KEY_ENV, MASTER_KEY, forwarding_model, litellm_proxy
from ..servers import LiveStack
from ..support import free_port
from .attachment_files import pdf_with_text

pytestmark = pytest.mark.slow

LOG = b"ERROR disk full on /var\nsecond line\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    litellm_port = free_port()
    via_litellm = {
        "agent_id": "via-litellm",
        "name": "Via LiteLLM",
        "parent_role": "architect",
        "port": litellm_port,
        "protocol": "openai",
        "api_key_env": KEY_ENV,
        "models": [("ref-standard", 32768)],
    }
    live = LiveStack(
        tmp_path_factory.mktemp("attachments-live"), extra_agents=[via_litellm], env_overrides={KEY_ENV: MASTER_KEY}
    )
    architect = live.agent("architect")["port"]
    extra = forwarding_model("ref-standard", "ref-standard", architect)
    with litellm_proxy(tmp_path_factory.mktemp("litellm"), extra_models=extra, port=litellm_port):
        with live:
            assert live.agent("architect")["port"] == architect, "the fleet moved; LiteLLM points elsewhere"
            yield live


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def upload(api, data: bytes, name: str) -> dict:
    response = api.post("/api/attachments", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 201, response.text
    return response.json()


def reply_to(api, agent_id: str, ids: list[str], text: str = "@@echo @@delay_ms=0 Files for you") -> str:
    sent = api.post("/api/chat/message", json={"agent_id": agent_id, "content": text, "attachment_ids": ids})
    assert sent.status_code == 202, sent.text
    body = sent.json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        messages = api.get(f"/api/chat/sessions/{body['session_id']}").json()["messages"]
        reply = next(m for m in messages if m["id"] == body["message_id"])
        if reply["status"] not in LIVE_STATUSES:
            assert reply["status"] == "complete", reply
            return reply["content"]
        time.sleep(0.2)
    raise AssertionError("the reply did not end")


def test_the_reference_agent_gets_the_files_as_parts(api):
    ids = [
        upload(api, LOG, "app.log")["id"],
        upload(api, pdf_with_text("Invoice 42 total 17 EUR"), "invoice.pdf")["id"],
    ]
    text = reply_to(api, "architect", ids)
    assert text.startswith("Files for you")
    assert "Received 2 attachments" in text
    assert f"`app.log` · text/plain · {len(LOG)} characters · first line: ERROR disk full on /var" in text
    assert "`invoice.pdf` · application/pdf · 23 characters · first line: Invoice 42 total 17 EUR" in text


def test_an_agent_behind_litellm_gets_the_files_as_text_parts(api):
    ids = [upload(api, b"name,qty\nbolts,12\n", "stock.csv")["id"]]
    text = reply_to(api, "via-litellm", ids)
    assert "Received 1 attachment" in text
    assert "`stock.csv` · text/csv · 18 characters · first line: name,qty" in text
