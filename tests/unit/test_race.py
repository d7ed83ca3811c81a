"""The draw's exponential race (backend/sampling/race.py): its noise, and what a seeded draw depends on."""

import numpy as np

from backend.sampling.cpu import choose_token
from backend.sampling.params import SamplerParams
from backend.sampling.race import draw_key, race_noise

VOCAB = 1000
WORLD_VOCAB = 65536


def keys(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [draw_key(rng) for _ in range(n)]


def test_race_noise_is_exp_one_over_tokens_and_keys():
    e = np.concatenate([race_noise(k, np.arange(VOCAB)) for k in keys(200)])
    assert abs(e.mean() - 1.0) < 0.01 and abs(e.var() - 1.0) < 0.03
    for x in (0.001, 0.05, 0.5, 1.0, 3.0, 8.0):  # the tail a likely winner sits in (small E) most of all
        assert abs(np.mean(e < x) - (1 - np.exp(-x))) < 4 * np.sqrt(np.exp(-x) / len(e)) + 1e-4, x


def test_race_noise_of_neighbouring_keys_and_ids_is_uncorrelated():
    ids = np.arange(VOCAB)
    a, b = race_noise(5, ids), race_noise(6, ids)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.1


def test_a_seeded_draw_survives_small_changes_of_the_logits():
    """Over a World-sized vocabulary, logits nudged by up to 1e-4 of themselves (more than another prefill split
    or batch moves them) change none of 300 draws; the inverse-CDF draw this replaced (one uniform number a token)
    flipped 3 to 9 of 300 under the same nudges."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(WORLD_VOCAB).astype(np.float32)
    nudged = logits * (1 + rng.uniform(-1e-4, 1e-4, WORLD_VOCAB)).astype(np.float32)
    counts, p = np.zeros(WORLD_VOCAB, np.float32), SamplerParams(temperature=1.0)
    draws = [(choose_token(logits, counts, p, k), choose_token(nudged, counts, p, k)) for k in keys(300, 1)]
    assert sum(a != b for a, b in draws) == 0
    assert len({a for a, _ in draws}) > 250  # draws spread over the vocabulary


def test_cutting_candidates_keeps_a_drawn_token_that_survives_the_cut():
    """A token's noise depends on its id, not its rank among the kept: a grammar mask or top-k that keeps the
    token drawn without it draws that same token."""
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal(VOCAB) * 2).astype(np.float32)
    counts = np.zeros(VOCAB, np.float32)
    allowed = rng.random(VOCAB) < 0.5
    checked = 0
    for k in keys(300, 2):
        free = choose_token(logits, counts, SamplerParams(), k)
        if allowed[free]:
            assert choose_token(logits, counts, SamplerParams(), k, allowed) == free
            checked += 1
        if logits[free] >= np.sort(logits)[-50]:
            assert choose_token(logits, counts, SamplerParams(top_k=50), k) == free
    assert checked > 100
