"""best_of through the official SDK: best_of candidates forked from one prefill, and the n with the highest
cumulative logprob come back, best first. The candidates are the branches an n = best_of request with the same
seed generates (branch b draws from the generation's RNG seeded (seed, b)), so they can be compared."""

from __future__ import annotations

import openai
import pytest

from tests.server.conftest import API_KEY, LiveServer

# a one-token prompt: no prefix-cache hit, so each request computes the same state the same way
ARGS = {"model": "rwkv", "prompt": "The", "max_tokens": 6, "temperature": 1.0, "seed": 7}


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def total(choice) -> float:
    return sum(choice.logprobs.token_logprobs)


def test_best_of_returns_the_candidates_with_the_highest_cumulative_logprob(client: openai.OpenAI):
    candidates = client.completions.create(**ARGS, n=4, logprobs=0).choices
    assert len({c.text for c in candidates}) > 1  # the candidates differ, so picking the wrong one would show
    ranked = sorted(candidates, key=lambda c: -total(c))
    best = client.completions.create(**ARGS, best_of=4, logprobs=0)
    assert [c.text for c in best.choices] == [ranked[0].text]
    assert total(best.choices[0]) == pytest.approx(total(ranked[0]), abs=1e-4)
    assert best.usage.completion_tokens == 4 * 6  # every candidate's tokens were generated
    two = client.completions.create(**ARGS, best_of=4, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.text for c in two.choices] == [c.text for c in ranked[:2]]
    assert all(c.logprobs is None for c in two.choices)  # ranked by logprobs, which were not asked for
    every = client.completions.create(**ARGS, best_of=4, n=4)
    assert [c.text for c in every.choices] == [c.text for c in ranked]  # best_of = n: all of them, best first


def test_best_of_below_n_or_streamed_is_a_400_naming_best_of(client: openai.OpenAI):
    for extra in ({"best_of": 1, "n": 2}, {"best_of": 2, "stream": True}):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**ARGS, **extra)
        assert e.value.body["param"] == "best_of"
