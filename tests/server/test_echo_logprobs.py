"""echo with logprobs through the official SDK (what lm-eval style harnesses read): the prompt's tokens and their
logprobs come before the completion's, the first prompt token's null; each equals the logprob the model gives
that token when it generates it."""

from __future__ import annotations

import openai
import pytest

from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, LiveServer

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def test_echo_logprobs_give_the_prompt_tokens_logprobs_with_the_first_null(client: openai.OpenAI):
    n_prompt = len(Tokenizer.from_file().encode(PROMPT))
    resp = client.completions.create(model="rwkv", prompt=PROMPT, max_tokens=2, temperature=0.0, echo=True,
                                     logprobs=2)  # fmt: skip
    lp = resp.choices[0].logprobs
    assert resp.choices[0].text.startswith(PROMPT)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n_prompt + 2
    assert "".join(lp.tokens[:n_prompt]) == PROMPT
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for got, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert got < 0 and len(top) == 2 and max(top.values()) >= got - 1e-6
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[n_prompt] == len(PROMPT)


def test_a_prompt_tokens_echoed_logprob_is_the_one_it_had_when_generated(client: openai.OpenAI):
    """Generate greedily, then echo prompt + the generated tokens: the scored positions are the generated ones (an
    off-by-one in the alignment fails this)."""
    tokenizer = Tokenizer.from_file()
    prompt = tokenizer.encode(PROMPT)
    gen = client.completions.create(model="rwkv", prompt=prompt, max_tokens=3, temperature=0.0, logprobs=0)
    made = [tokenizer.encode(t) for t in gen.choices[0].logprobs.tokens]
    assert all(len(t) == 1 for t in made)
    echo = client.completions.create(model="rwkv", prompt=prompt + [t[0] for t in made], max_tokens=1,
                                     temperature=0.0, echo=True, logprobs=0)  # fmt: skip
    scored = echo.choices[0].logprobs.token_logprobs[len(prompt) : len(prompt) + 3]
    assert scored == pytest.approx(gen.choices[0].logprobs.token_logprobs, abs=2e-3)


def test_streamed_echo_logprobs_come_with_the_first_chunk(client: openai.OpenAI):
    args = {"model": "rwkv", "prompt": PROMPT, "max_tokens": 2, "temperature": 0.0, "echo": True, "logprobs": 1}
    whole = client.completions.create(**args).choices[0]
    chunks = [c for c in client.completions.create(**args, stream=True) if c.choices]
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    lps = [v for c in chunks if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert chunks[0].choices[0].text.startswith(PROMPT)
    assert tokens == whole.logprobs.tokens
    assert lps[0] is None and lps[1:] == pytest.approx(whole.logprobs.token_logprobs[1:], abs=1e-5)


def test_echo_without_logprobs_only_puts_the_prompt_first(client: openai.OpenAI):
    resp = client.completions.create(model="rwkv", prompt=PROMPT, max_tokens=2, temperature=0.0, echo=True)
    assert resp.choices[0].text.startswith(PROMPT) and resp.choices[0].logprobs is None
