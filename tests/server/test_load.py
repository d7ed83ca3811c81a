"""Load: 64 concurrent streams, half SSE and half WebSocket, each get exactly the text of the same seeded request
run alone (no token lost, duplicated or crossed between streams), and memory comes back to where it was."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2 as httpx
import orjson
import pytest

from backend.client import Client
from backend.config import Config
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server
from tests.server.test_cancel_frees_slot import wait_all_slots_free

CLIENTS = 64
TOKENS = 8
PARAMS = {"temperature": 1.0, "top_p": 0.95, "max_tokens": TOKENS}


@pytest.fixture(scope="module")
def wide() -> Iterator[LiveServer]:
    """A server with a slot for every client, so all 64 streams run in the same steps."""
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": CLIENTS, "token_chunk_size": 256},
              "limits": {**TEST_CONFIG["limits"], "max_queue": CLIENTS}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def request_of(i: int, tokens: int = TOKENS) -> tuple[str, dict]:
    """Client i's prompt and params: every client its own seed, prompts of different lengths."""
    return f"Story {i}:" + " and then" * (i % 5), {**PARAMS, "seed": 1000 + i, "max_tokens": tokens}


async def sse_text(http: httpx.AsyncClient, live: LiveServer, i: int, tokens: int) -> str:
    prompt, params = request_of(i, tokens)
    body = {"prompt": prompt, **params, "stream": True}
    text = ""
    async with http.stream("POST", f"{live.oai}/completions", json=body, headers=live.headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = orjson.loads(line[6:])
                assert "error" not in chunk, chunk
                text += chunk["choices"][0]["text"]
    return text


async def ws_text(live: LiveServer, i: int, tokens: int) -> str:
    prompt, params = request_of(i, tokens)
    async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
        gen = await c.generate(prompt, params=params)
        (done,) = await gen.wait()
    assert done["finish_reason"] in ("length", "stop") and done["text"] == gen.texts[0], done
    return gen.texts[0]


async def all_at_once(live: LiveServer, tokens: int = TOKENS) -> list[str]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as http:
        streams = [sse_text(http, live, i, tokens) if i % 2 else ws_text(live, i, tokens) for i in range(CLIENTS)]
        return list(await asyncio.wait_for(asyncio.gather(*streams), 120))


def alone(live: LiveServer, i: int, tokens: int = TOKENS) -> str:
    prompt, params = request_of(i, tokens)
    r = httpx.post(f"{live.oai}/completions", json={"prompt": prompt, **params}, headers=live.headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def rss_bytes() -> int:
    """This process's resident memory: the server, its engine and the clients all live here."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_64_mixed_streams_each_get_their_own_text_and_memory_returns(wide: LiveServer):
    expected = [alone(wide, i) for i in range(CLIENTS)]
    assert len(set(expected)) > CLIENTS // 2  # the seeds make the texts differ, so a crossed stream shows

    # warm-up, two tokens each (CI time): builds the prefill steps and the 64-row decode step; a seeded text's
    # first two tokens begin its whole text
    warm = asyncio.run(all_at_once(wide, tokens=2))
    assert all(text.startswith(start) for start, text in zip(warm, expected, strict=True)), (warm, expected)
    wait_all_slots_free(wide)
    before = rss_bytes()
    assert asyncio.run(all_at_once(wide)) == expected
    wait_all_slots_free(wide)
    after = rss_bytes()
    assert abs(after - before) <= 0.10 * before, f"RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB"
    assert wide.server.scheduler.alive
