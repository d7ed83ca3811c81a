"""The state cache through real servers (random model, CPU Vulkan): what chat traffic reuses, where it is
reported (usage, the WebSocket `done`, /metrics), and that it changes no answer: one server with the cache,
one without, the same requests, greedy and seeded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from backend.client import Client
from backend.config import Config
from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server

TOKENIZER = Tokenizer.from_file()


@pytest.fixture(scope="module")
def uncached() -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "prefix_cache": 0}, "cache": {"host_bytes": 0}}
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def chat(live: LiveServer, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    body = {"model": "rwkv", "messages": messages, "max_tokens": 3, "temperature": 0.0, **params}
    r = httpx.post(f"{live.v1}/chat/completions", json=body, headers=live.headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def cached_tokens(answer: dict[str, Any]) -> int:
    return answer["usage"]["prompt_tokens_details"]["cached_tokens"]


def n_tokens(text: str) -> int:
    return len(TOKENIZER.encode(text))


def fresh(text: str) -> str:
    """A text no other test sent (the session's server and its cache are shared by every test)."""
    return f"{text} ({uuid.uuid4().hex[:6]})"


def test_an_exact_repeat_reuses_all_but_the_last_prompt_token(live: LiveServer) -> None:
    messages = [{"role": "user", "content": fresh("Tell me about rivers.")}]
    first, again = chat(live, messages), chat(live, messages)
    assert cached_tokens(again) == again["usage"]["prompt_tokens"] - 1
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]


def test_a_shared_system_prompt_with_a_new_question_reuses_the_system_prompt(live: LiveServer) -> None:
    system = fresh("You are a patient teacher who answers in one short sentence.")
    chat(live, [{"role": "system", "content": system}, {"role": "user", "content": "What is rain?"}])
    other = chat(live, [{"role": "system", "content": system}, {"role": "user", "content": "Why is snow white?"}])
    assert cached_tokens(other) == n_tokens(f"System: {system}\n\n")


def test_a_multi_turn_follow_up_reuses_the_whole_last_turn(live: LiveServer) -> None:
    messages = [{"role": "user", "content": fresh("Name a colour.")}]
    first = chat(live, messages)
    reply = first["choices"][0]["message"]["content"]
    follow = chat(live, [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": "More."}])
    assert cached_tokens(follow) >= first["usage"]["prompt_tokens"] - 1


def test_editing_an_earlier_turn_reuses_the_turns_before_it(live: LiveServer) -> None:
    head = [{"role": "system", "content": fresh("Be brief.")}, {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi."}]  # fmt: skip
    chat(live, [*head, {"role": "user", "content": "What is a cat?"}, {"role": "assistant", "content": "A pet."},
                {"role": "user", "content": "And a dog?"}])  # fmt: skip
    edited = chat(live, [*head, {"role": "user", "content": "What is a fish?"}])
    before = f"System: {head[0]['content']}\n\nUser: Hello there.\n\nAssistant: Hi.\n\n"
    assert cached_tokens(edited) == n_tokens(before)


def test_the_websocket_done_and_the_metrics_report_what_the_cache_saved(live: LiveServer) -> None:
    prompt = fresh("Once upon a time, in a town by the sea,")

    async def go() -> list[dict[str, Any]]:
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            dones = []
            for _ in range(2):
                gen = await c.generate(prompt, params={"max_tokens": 2, "temperature": 0.0})
                dones.append([f async for f in gen][-1])
            return dones

    _, second = asyncio.run(asyncio.wait_for(go(), 120))
    assert second["type"] == "done" and second["usage"]["cached_tokens"] == second["usage"]["prompt_tokens"] - 1
    metrics = httpx.get(f"{live.base}/metrics", timeout=30).text
    saved = [line for line in metrics.splitlines() if line.startswith("ai00:state_cache_tokens_saved_total")]
    assert saved and float(saved[0].split()[-1]) > 0
    assert 'ai00:state_cache_bytes{tier="gpu"}' in metrics and 'ai00:state_cache_hits_total{tier=' in metrics


@pytest.mark.parametrize("params", [{"temperature": 0.0}, {"temperature": 1.0, "top_p": 1.0, "seed": 1234}],
                         ids=["greedy", "seeded"])  # fmt: skip
def test_the_same_answers_with_and_without_the_cache(live: LiveServer, uncached: LiveServer, params: dict) -> None:
    system = {"role": "system", "content": fresh("You write short poems about the weather.")}
    turns = [[system, {"role": "user", "content": "Rain."}], [system, {"role": "user", "content": "Wind."}]]
    turns.append([*turns[1], {"role": "assistant", "content": "It blows."}, {"role": "user", "content": "Snow."}])
    for messages in [*turns, turns[0]]:  # a shared system prompt, a follow-up, an exact repeat
        with_cache = chat(live, messages, max_tokens=12, **params)
        without = chat(uncached, messages, max_tokens=12, **params)
        assert cached_tokens(without) == 0
        assert with_cache["choices"][0]["message"]["content"] == without["choices"][0]["message"]["content"]
    assert cached_tokens(with_cache) == with_cache["usage"]["prompt_tokens"] - 1
