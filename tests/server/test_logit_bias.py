"""OpenAI's `logit_bias` through the official SDK: applied by the GPU sampler, ids checked against the vocabulary,
values clamped to +-100 (+100 makes a token certain, -100 bans it)."""

from __future__ import annotations

import openai
import pytest

from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, LiveServer


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def test_a_bias_of_plus_100_makes_every_sampled_token_that_id(client: openai.OpenAI):
    (forced,) = Tokenizer.from_file().encode(" apple")
    resp = client.completions.create(model="rwkv", prompt="Once upon a time", max_tokens=12, temperature=1.0,
                                     seed=3, logprobs=0, logit_bias={str(forced): 100})  # fmt: skip
    assert resp.choices[0].logprobs.tokens == [" apple"] * 12
    assert resp.choices[0].text == " apple" * 12


def test_a_bias_above_100_is_clamped_and_chat_takes_it_too(client: openai.OpenAI):
    (forced,) = Tokenizer.from_file().encode(" apple")
    resp = client.chat.completions.create(model="rwkv", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          logit_bias={str(forced): 1e6}, seed=1)  # fmt: skip
    assert resp.choices[0].message.content == " apple" * 4


def test_a_bias_of_minus_100_bans_the_token_greedy_decoding_picks(client: openai.OpenAI):
    tokenizer = Tokenizer.from_file()
    args = {"model": "rwkv", "prompt": "The sky is", "max_tokens": 8, "temperature": 0.0, "logprobs": 0}
    plain = client.completions.create(**args)
    banned = tokenizer.encode(plain.choices[0].logprobs.tokens[0])
    assert len(banned) == 1
    resp = client.completions.create(**args, logit_bias={str(banned[0]): -100})
    tokens = resp.choices[0].logprobs.tokens
    assert len(tokens) == 8 and plain.choices[0].logprobs.tokens[0] not in tokens


@pytest.mark.parametrize("bias", [{"65536": 1}, {"-1": 1}, {"x": 1}])
def test_a_bias_on_a_token_outside_the_vocabulary_is_a_400_naming_logit_bias(client: openai.OpenAI, bias):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="rwkv", prompt="hi", max_tokens=1, logit_bias=bias)
    assert e.value.body["param"].startswith("logit_bias")
