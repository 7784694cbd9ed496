"""The API contract under the real server: gunicorn's gevent worker, the reference agents.

The in-process suite (tests/webui/test_input_contract.py, test_api_fuzz.py) covers the input
layer and the contract in depth; this checks the two things only a real worker can show: that the
JSON depth bound holds on a greenlet's stack, and that Schemathesis finds no 5xx or contract
breach when replies really stream from agents.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ..servers import LiveStack

pytestmark = pytest.mark.slow

# Every answer: not a 5xx, a documented status, the documented content type, the documented schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 8  # per operation: a smoke run; the in-process fuzz is the thorough one
STREAM_SECONDS = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LiveStack(tmp_path_factory.mktemp("contract")) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def test_deep_json_and_unstorable_text_are_400_and_the_worker_lives_on(stack, api):
    deep = "[" * 100_000 + "]" * 100_000
    for url, method in (("/api/chat/message", "post"), ("/api/chat/sessions/import", "post")):
        response = api.request(method, url, data=deep, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "nested" in response.json()["message"], response.text
    lone = '{"agent_id": "dir-code", "content": "hi \\ud800"}'
    response = api.post("/api/chat/message", data=lone, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "surrogate" in response.json()["message"]
    sent = api.post("/api/chat/message", json={"agent_id": "dir-code", "content": "still here?"})
    assert sent.status_code == 202, sent.text
    assert "Traceback" not in stack.server_log()


def test_schemathesis_finds_nothing_against_gunicorn(stack, api):
    schema = schemathesis.openapi.from_url(stack.base_url + "/api/openapi.json", cookies=api.cookies)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            case.call_and_validate(session=api, base_url=stack.base_url, timeout=STREAM_SECONDS, checks=CHECKS)

        fuzz()
    assert "Traceback" not in stack.server_log()
