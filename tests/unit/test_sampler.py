import numpy as np
import pytest

from backend.sampling.cpu import apply_penalties, record_token, sample_token, token_logprobs
from backend.sampling.params import SamplerParams

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], np.float32))


def draws(params: SamplerParams, n: int = 2000, counts=None) -> np.ndarray:
    rng = np.random.default_rng(0)
    counts = np.zeros(5, np.float32) if counts is None else counts
    return np.bincount([sample_token(LOGITS, counts, params, rng) for _ in range(n)], minlength=5) / n


def test_temperature_zero_is_greedy_even_against_the_rng():
    p = SamplerParams(temperature=0.0)
    assert {sample_token(LOGITS, np.zeros(5, np.float32), p, np.random.default_rng(s)) for s in range(20)} == {0}


def test_top_k_top_p_min_p_cut_the_tail():
    assert np.all(draws(SamplerParams(top_k=2))[2:] == 0)
    # top_p 0.6: 0.5 alone is not enough, 0.5 + 0.2 is -> tokens 0 and 1 only
    freq = draws(SamplerParams(top_p=0.6))
    assert freq[0] > 0 and freq[1] > 0 and np.all(freq[2:] == 0)
    # min_p 0.25: keep p >= 0.125 -> tokens 0, 1, 2
    freq = draws(SamplerParams(min_p=0.25))
    assert np.all(freq[:3] > 0) and np.all(freq[3:] == 0)


def test_full_distribution_is_followed_at_temperature_one():
    assert np.allclose(draws(SamplerParams(), n=20000), np.exp(LOGITS), atol=0.02)


def test_same_seed_same_tokens():
    p = SamplerParams()
    a = [sample_token(LOGITS, np.zeros(5, np.float32), p, np.random.default_rng(7)) for _ in range(5)]
    b = [sample_token(LOGITS, np.zeros(5, np.float32), p, np.random.default_rng(7)) for _ in range(5)]
    assert a == b


def test_penalties_subtract_presence_plus_frequency_times_count():
    p = SamplerParams(presence_penalty=0.5, frequency_penalty=0.25)
    counts = np.array([0, 1, 2, 0, 0.5], np.float32)
    out = apply_penalties(LOGITS, counts, p)
    assert np.allclose(out - LOGITS, [0, -0.75, -1.0, 0, -0.625])


def test_half_life_halves_a_count_after_that_many_tokens():
    p = SamplerParams(half_life=4)
    counts = np.zeros(5, np.float32)
    record_token(counts, 1, p)
    for _ in range(4):
        record_token(counts, 0, p)
    assert counts[1] == pytest.approx(0.5, rel=1e-5)
    assert counts[0] == pytest.approx(sum(0.5 ** (i / 4) for i in range(4)), rel=1e-5)


def test_logprobs_are_the_models_log_softmax():
    lp, top = token_logprobs(LOGITS, 3, 2)
    assert lp == pytest.approx(np.log(0.1), abs=1e-5)
    assert [t for t, _ in top] == [0, 1] and top[0][1] == pytest.approx(np.log(0.5), abs=1e-5)


def test_params_precedence_request_over_config_over_openai():
    p = SamplerParams.resolve({"temperature": 0.3, "top_p": None}, {"temperature": 0.9, "top_p": 0.5, "top_k": 7})
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (0.3, 0.5, 7, 0.0)
    assert p.updated({"top_k": 1, "seed": 3, "stop": ["x"]}) == SamplerParams(
        temperature=0.3, top_p=0.5, top_k=1, seed=3, stop=("x",))


def test_greedy_draws_follow_the_decayed_penalty_exactly():
    # frequency 0.2, half-life 1 token: a count halves with every later token
    p = SamplerParams(temperature=0.0, frequency_penalty=0.2, half_life=1)
    logits = np.array([1.0, 0.9, 0.0], np.float32)
    counts = np.zeros(3, np.float32)
    drawn = []
    for _ in range(4):
        token = sample_token(logits, counts, p, np.random.default_rng(0))
        record_token(counts, token, p)
        drawn.append(token)
    # 0 (1.0 > 0.9); then 0 pays 0.2 -> 0.8 < 0.9: 1; then 0 pays 0.1 -> 0.9 > 1 pays 0.2 -> 0.7: 0; ...
    assert drawn == [0, 1, 0, 1]
    assert np.allclose(counts, [0.5 + 0.125, 1.0 + 0.25, 0.0])
