"""REST and the WebSocket go through one conversion (api/edge.py): the same request gets the same prompt, the
same effective params and the same refusal, naming the same field, whichever door it came through."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import pytest

from backend.client import Client, GenerationError
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer

MAX_TOKENS = TEST_CONFIG["limits"]["max_tokens"]
MAX_N = TEST_CONFIG["limits"]["max_n"]


def ws_generate(live: LiveServer, **kwargs: Any) -> dict[str, Any]:
    """The generation's `generation.started` frame, or the `error` frame that refused it."""

    async def go() -> dict[str, Any]:
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            gen = await c.generate(**kwargs)
            try:
                await gen.wait()
            except GenerationError as e:
                return e.frame
            assert gen.started is not None
            return gen.started

    return asyncio.run(asyncio.wait_for(go(), 120))


def rest(live: LiveServer, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{live.oai}/{route}", json=body, headers=live.headers, timeout=120)


def test_an_empty_prompt_is_one_end_of_text_token_through_both_doors(live: LiveServer):
    r = rest(live, "completions", {"prompt": "", "max_tokens": 1})
    started = ws_generate(live, prompt="", params={"max_tokens": 1})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 1 == started["prompt_tokens"]


def test_a_chat_prompt_has_the_same_tokens_and_stop_strings_through_both_doors(live: LiveServer):
    messages, names = [{"role": "user", "content": "hi there"}], {"user": "Bob", "assistant": "Ann"}
    r = rest(live, "chat/completions", {"messages": messages, "names": names, "max_tokens": 1, "stop": ["zz"]})
    started = ws_generate(live, messages=messages, names=names, params={"max_tokens": 1, "stop": ["zz"]})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == started["prompt_tokens"]
    assert started["params"]["stop"][0] == "zz" and "\n\nBob:" in started["params"]["stop"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": MAX_TOKENS + 1}, "max_tokens"),  # over [limits] max_tokens
        ({"top_k": 70_000}, "top_k"),  # over the sampler field's bound
        ({"temperature": -1}, "temperature"),
        ({"stop": ["s"] * 17}, "stop"),
        ({"bnf_schema": "<start> ::= <nowhere>"}, "bnf_schema"),  # a grammar that does not compile
    ],
)
def test_the_same_bad_params_are_refused_naming_the_same_field(live: LiveServer, fields: dict, param: str):
    r = rest(live, "completions", {"prompt": "x", **fields})
    error = ws_generate(live, prompt="x", params=fields)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert (error["type"], error["code"], error["param"]) == ("error", "invalid_request", f"params.{param}")


def test_too_many_branches_are_refused_naming_n_through_both_doors(live: LiveServer):
    r = rest(live, "completions", {"prompt": "x", "n": MAX_N + 1})
    error = ws_generate(live, prompt="x", n=MAX_N + 1)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" == error["param"]
    assert str(MAX_N) in r.json()["error"]["message"] and str(MAX_N) in error["message"]
