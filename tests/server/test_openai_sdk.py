"""The official `openai` SDK (>= 1.x) against the live server; and the old 0.x-style /api/oai shape over HTTP."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest

from tests.server.conftest import API_KEY, MODEL_ID, LiveServer


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def test_models_lists_the_served_model(client: openai.OpenAI, live: LiveServer):
    models = client.models.list().data
    assert [m.id for m in models] == [live.server.model_id] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def both(first, second):
    """Run two blocking calls at once, so that they share engine steps (and the test takes half the time)."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        return a.result(), b.result()


def test_completion_stream_equals_non_streaming_and_deltas_concatenate(client: openai.OpenAI):
    args = {"model": "rwkv", "prompt": "The quick brown fox", "max_tokens": 5, "seed": 11, "temperature": 1.0}
    whole, chunks = both(
        lambda: client.completions.create(**args),
        lambda: list(client.completions.create(**args, stream=True, stream_options={"include_usage": True})),
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text and text
    assert whole.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 5
    assert whole.usage.prompt_tokens == len(live_tokens(client, "The quick brown fox"))


def live_tokens(client: openai.OpenAI, text: str) -> list[int]:
    from backend.tokenizer import Tokenizer

    return Tokenizer.from_file().encode(text)


def test_chat_stream_equals_non_streaming_and_next_turn_reuses_the_cached_prefix(client: openai.OpenAI):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    args = {"model": "rwkv", "messages": messages, "max_tokens": 4, "seed": 5}
    first, chunks = both(
        lambda: client.chat.completions.create(**args),
        lambda: list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})),
    )
    reply = first.choices[0].message
    assert reply.role == "assistant" and reply.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.content
    assert chunks[-1].usage.total_tokens == first.usage.total_tokens

    follow = [*messages, {"role": "assistant", "content": reply.content}, {"role": "user", "content": "Another."}]
    second = client.chat.completions.create(model="rwkv", messages=follow, max_tokens=2, seed=5)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens


def test_chat_with_ai00_fields_n_and_logprobs(client: openai.OpenAI):
    resp = client.chat.completions.create(
        model="rwkv", messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2, seed=3, logprobs=True,
        top_logprobs=2, extra_body={"names": {"user": "Bob", "assistant": "Alice"}, "half_life": 50, "top_k": 40,
                                    "min_p": 0.01},
    )
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.choices[0].message.content != resp.choices[1].message.content  # branches draw differently
    content = resp.choices[0].logprobs.content
    assert len(content) == 3 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    assert resp.usage.completion_tokens == 6


def test_embeddings_are_deterministic_unit_vectors(client: openai.OpenAI, live: LiveServer):
    resp = client.embeddings.create(model="rwkv", input=["hello world", "something else", "hello world"])
    vecs = [d.embedding for d in resp.data]
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert all(len(v) == live.server.n_embd for v in vecs)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vecs)
    assert vecs[0] == pytest.approx(vecs[2], abs=1e-5) and vecs[0] != pytest.approx(vecs[1], abs=1e-3)
    floats = client.embeddings.create(model="rwkv", input="hello world", encoding_format="float").data[0].embedding
    assert floats == pytest.approx(vecs[0], abs=1e-5)
    assert resp.usage.prompt_tokens > 0


def test_sdk_errors_carry_status_and_param(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="rwkv", prompt="x", max_tokens=5, temperature=9)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


def test_old_style_ai00_readme_request_on_the_v0_base(live: LiveServer):
    """The 0.x SDK posts to {api_base}/chat/completions with AI00's extra fields in the body."""
    body = {
        "model": "rwkv",
        "messages": [{"role": "user", "content": "how are you?"}],
        "names": {"user": "User", "assistant": "Assistant"},
        "max_tokens": 4, "temperature": 0.8, "top_p": 0.5, "presence_penalty": 0.4, "frequency_penalty": 0.4,
        "half_life": 400, "stop": ["\x00", "\n\n"],
    }
    r = httpx.post(f"{live.base}/api/oai/chat/completions", json=body, headers=live.headers, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["finish_reason"] in ("stop", "length")
    assert "\n\n" not in data["choices"][0]["message"]["content"]
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    models = httpx.get(f"{live.base}/api/oai/models", headers=live.headers).json()
    assert models["data"][0]["id"] == MODEL_ID
