"""Bad REST input gets the documented status and an OpenAI-shaped error naming the field."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from tests.server.conftest import LiveServer


def post(live: LiveServer, path: str, **kwargs) -> httpx.Response:
    kwargs.setdefault("headers", live.headers)
    return httpx.post(f"{live.oai}{path}", timeout=60, **kwargs)


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "top_p": "high"}, "top_p"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens"),  # over the configured limit (64)
        ({"prompt": "x", "n": 5}, "n"),  # over limits.max_n (4)
        ({"prompt": "x", "stop": ["a"] * 17}, "stop"),
        ({"prompt": "x", "seed": "abc"}, "seed"),
        ({"prompt": ["a", 5]}, "prompt"),  # a list of prompts is fine; a list mixing text and ids is not
        ({"prompt": "x", "bnf_schema": "<start> ::= <a>"}, "bnf_schema"),  # <a> is never defined
        ({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
         "response_format"),
        ({"prompt": "x", "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_bad_completion_field_is_400_naming_it(live: LiveServer, body: dict, param: str):
    r = post(live, "/completions", json=body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"].split(".")[0] == param and err["type"] == "invalid_request_error"


def test_chat_needs_messages_with_known_roles(live: LiveServer):
    assert error_of(post(live, "/chat/completions", json={"model": "x"}))["param"] == "messages"
    err = error_of(post(live, "/chat/completions", json={"messages": [{"role": "wizard", "content": "hi"}]}))
    assert err["param"] == "messages.0.role"
    err = error_of(post(live, "/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                         "names": {"robot": "R2"}}))
    assert err["param"].startswith("names")


def test_invalid_json_auth_unknown_route_and_huge_body(live: LiveServer):
    r = post(live, "/completions", content=b"{not json", headers={**live.headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    r = post(live, "/completions", json={"prompt": "x"}, headers={})
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    r = post(live, "/completions", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = httpx.get(f"{live.oai}/nothing-here", headers=live.headers)
    assert r.status_code == 404 and error_of(r)["message"]
    r = post(live, "/completions", json={"prompt": "x" * 100_000})  # limit: 64 KiB
    assert r.status_code == 413 and error_of(r)["code"] == "too_large"
    r = post(live, "/embeddings", json={"input": ""})
    assert r.status_code == 400 and error_of(r)["param"].startswith("input")


def test_health_metrics_and_docs(live: LiveServer):
    health = httpx.get(f"{live.base}/health")  # open without a key
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = httpx.get(f"{live.base}/metrics")  # open by default, like /health ([listen] metrics_key closes it)
    assert metrics.status_code == 200 and "ai00:step_rows_bucket" in metrics.text
    spec = httpx.get(f"{live.base}/api-docs/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/api/oai/v1/completions", "/api/oai/v1/chat/completions", "/api/oai/v1/embeddings"} <= set(spec["paths"])
    temperature = spec["components"]["schemas"]["CompletionRequest"]["properties"]["temperature"]
    assert {"minimum": 0.0, "maximum": 5.0}.items() <= temperature["anyOf"][0].items()
    page = httpx.get(f"{live.base}/api-docs")
    assert page.status_code == 200 and "/api/oai/v1/chat/completions" in page.text
