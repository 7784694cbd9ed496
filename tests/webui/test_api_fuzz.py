"""Schemathesis against the live app (in-process, through WSGI), logged in as a user.

Every operation of the OpenAPI description gets generated requests, valid and invalid, and every
answer must be no 5xx, with a documented status, content type and schema. Examples are
derandomized and few, so a run is the same on every machine and fits the suite's time budget; the
agents of the test registry are unreachable, so sending a message exercises the "agent down" path.

Driven through Hypothesis directly (`operation.as_strategy`), not Schemathesis' pytest plugin,
whose lazy loader does not run under pytest 9. The description is the one the app serves
(test_openapi.py proves they are the same). The reply streams are fuzzed too: they end on their
own here (the replies they follow have ended or never reach an agent), and STREAM_SECONDS bounds
how long one is read if a future change makes one stay open.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.webui.openapi import document

from .test_sessions import add_session, conversation

# Every answer: not a 5xx, a documented status, the documented content type, the documented schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 60  # per operation and mode: about 40 s for all of them on this 2-core machine
STREAM_SECONDS = 5
OPERATIONS = {
    operation.label: operation
    for operation in (result.ok() for result in schemathesis.openapi.from_dict(document()).get_all_operations())
}


def takes_input(operation) -> bool:
    """Anything to make invalid, besides the login cookie (which the test always sets itself)."""
    return any(map(len, (operation.path_parameters, operation.headers, operation.query, operation.body)))


RUNS = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label, operation in sorted(OPERATIONS.items())
    for mode in GenerationMode
    if mode == GenerationMode.POSITIVE or takes_input(operation)
]


class Fuzzing:
    """The app, the logged-in user's credentials, and real sessions to aim generated ids at."""

    def __init__(self, app, user):
        self.app = app
        self.user = user
        name = app.config["SESSION_COOKIE_NAME"]
        self.cookies = {name: user.client.get_cookie(name).value}
        self.headers = {"X-CSRFToken": user.csrf}

    def fresh_session(self) -> str:
        # A new one each time: a generated DELETE or archive must not change what the next case sees.
        return add_session(self.app, self.user.username, title="Fuzzed", messages=conversation())

    def aim(self, case) -> None:
        """Generated ids never exist; half are swapped for a real session of the user, so that
        every route is also fuzzed past its 404."""
        session_id = (case.path_parameters or {}).get("session_id")
        if isinstance(session_id, str) and len(session_id) % 2 == 0:
            case.path_parameters["session_id"] = self.fresh_session()


@pytest.fixture
def fuzzing(app, alice) -> Fuzzing:
    return Fuzzing(app, alice)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label, mode", RUNS)
def test_no_input_makes_the_api_fail_or_break_its_contract(fuzzing, label, mode):
    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        fuzzing.aim(case)
        case.call_and_validate(
            app=fuzzing.app,  # in-process, through WSGI
            headers=fuzzing.headers,
            cookies=fuzzing.cookies,
            timeout=STREAM_SECONDS,
            checks=CHECKS,
        )

    fuzz()
