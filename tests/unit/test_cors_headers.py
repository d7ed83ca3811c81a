"""CORS answers for the configured origins: a page there may send the headers our API and deploy/ rely on."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from backend.api.middleware import cors_headers


def answer_to(origin: str) -> web.Response:
    response = web.Response(status=204)
    request = make_mocked_request("OPTIONS", "/v1/chat/completions", headers={"Origin": origin})
    asyncio.run(cors_headers(("https://app.example",))(request, response))
    return response


def test_an_allowed_origin_may_send_the_session_header_haproxy_hashes_on() -> None:
    response = answer_to("https://app.example")
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"Authorization", "Content-Type", "X-Session-Id"} <= allowed


def test_another_origin_gets_no_cors_headers() -> None:
    response = answer_to("https://elsewhere.example")
    assert "Access-Control-Allow-Origin" not in response.headers
