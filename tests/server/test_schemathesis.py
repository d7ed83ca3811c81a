"""schemathesis against /api-docs/openapi.json: generated requests (valid and invalid) never get a 5xx, and every
answer matches the documented status codes, content types and schemas. Bounded: a few examples per operation on
a server whose generations are two tokens long; routes that write files or swap the model are left out."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi import checks as oa

from backend.config import Config
from tests.server.conftest import TEST_CONFIG, LiveServer, start_server, stop_server

EXPLORE = os.environ.get("AI00_SCHEMATHESIS_EXPLORE")  # set: fresh random examples each run (default: the same)
SKIPPED = "^/api/(files/config/save|models/load)$"  # they write Config.toml / swap the model: not for fuzzing
CHECKS = [
    schemathesis.checks.not_a_server_error,
    oa.status_code_conformance,
    oa.content_type_conformance,
    oa.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "sampler": {"max_tokens": 2},
              "limits": {**TEST_CONFIG["limits"], "max_tokens": 4, "max_n": 2, "max_prompt_tokens": 256}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def test_api_never_5xx_and_answers_as_documented(fuzzed: LiveServer):
    spec = httpx.get(f"{fuzzed.base}/api-docs/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec).exclude(path_regex=SKIPPED)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
                  derandomize=EXPLORE is None, suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case) -> None:
            case.call_and_validate(base_url=fuzzed.base, headers=fuzzed.headers, checks=CHECKS, timeout=60)

        try:
            check()
        except (Exception, BaseExceptionGroup) as e:
            failures[operation.label] = str(e)[:2000]
    assert len(operations) >= 20
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
