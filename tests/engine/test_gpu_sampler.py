"""The GPU sampler against the numpy specification (backend/sampling/cpu.py) on known logits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backend.gpu.sampler import GpuSampler
from backend.gpu.step_types import Draw
from backend.sampling.cpu import choose_token, race_scores, record_token, token_logprobs
from backend.sampling.params import SamplerParams
from tests.engine.conftest import Device

VOCAB = 1002  # not a multiple of the workgroup (256), mask words (32) or vec4s: the edges get exercised
ROW = -(-VOCAB // 4) * 4  # GPU rows of counts are padded to whole vec4s
SLOTS = 8


def make_sampler(device: Device, logits: np.ndarray, slots: int = SLOTS) -> GpuSampler:
    buffer = device.gpu.upload(np.ascontiguousarray(logits, np.float32))
    return GpuSampler(device.gpu, device.pipelines, buffer, logits.shape[1], slots)


def draw_of(p: SamplerParams, slot: int, key: int, fresh: bool, mask: np.ndarray | None = None) -> Draw:
    """The server's Draw for these settings (SamplerParams.draw), with the race's key fixed to `key`."""
    return replace(p.draw(0, slot, np.random.default_rng(), fresh, mask), key=key)


def keys(n: int, seed: int) -> list[int]:
    return [int(k) for k in np.random.default_rng(seed).integers(0, 1 << 64, n, dtype=np.uint64)]


def pack(allowed: np.ndarray) -> np.ndarray:
    bits = np.packbits(np.pad(allowed, (0, -len(allowed) % 32)).astype(np.uint8), bitorder="little")
    return bits.view(np.uint32)


def race_margin(logits, counts, p: SamplerParams, key: int, allowed=None) -> float:
    """How close the reference's two best scores (p / E) come, relative to the best: the GPU's f32 p and E may
    order a pair closer than ~1e-6 the other way."""
    _, scores = race_scores(logits, counts, p, key, allowed)
    second, first = np.sort(scores)[-2:]
    return float((first - second) / first)


def test_greedy_with_penalties_and_half_life_follows_the_reference_token_by_token(device: Device):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4, VOCAB)) * 0.5).astype(np.float32)
    sampler = make_sampler(device, logits)
    p = SamplerParams(temperature=0.0, presence_penalty=0.3, frequency_penalty=0.4, half_life=3)
    counts = np.zeros(VOCAB, np.float32)
    gpu_tokens, ref_tokens = [], []
    for step in range(40):
        line = step % 4
        ref = choose_token(logits[line], counts, p, 0)
        record_token(counts, ref, p)
        ref_tokens.append(ref)
        (drawn,) = sampler.run([draw_of(p, 3, 0, fresh=step == 0)], [line])
        gpu_tokens.append(drawn.token)
    assert gpu_tokens == ref_tokens
    assert len(set(ref_tokens)) > 4  # the penalties really moved the choice around
    gpu_counts = device.gpu.read(sampler.counts, VOCAB * 4, offset=3 * ROW * 4)
    np.testing.assert_allclose(gpu_counts, counts, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        SamplerParams(),
        SamplerParams(temperature=0.7, top_k=20),
        SamplerParams(temperature=1.3, top_p=0.6),
        SamplerParams(min_p=0.05),
        SamplerParams(temperature=0.9, top_k=50, top_p=0.8, min_p=0.02, presence_penalty=0.5, frequency_penalty=0.3),
    ],
    ids=["plain", "top_k", "top_p", "min_p", "all"],
)
def test_draw_picks_the_reference_token_for_the_same_key(device: Device, params: SamplerParams):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((1, VOCAB)) * 2.5).astype(np.float32)
    counts = np.zeros(VOCAB, np.float32)
    counts[rng.integers(0, VOCAB, 30)] = 1.0
    sampler = make_sampler(device, logits)
    mismatches, tokens = 0, set()
    for key in keys(60, seed=1):
        device.gpu.write(sampler.counts, counts, 2 * ROW * 4)  # the GPU's counts row = the reference's
        (drawn,) = sampler.run([draw_of(params, 2, key, fresh=False)], [0])
        ref = choose_token(logits[0], counts, params, key)
        tokens.add(ref)
        if drawn.token != ref:
            assert race_margin(logits[0], counts, params, key) < 1e-5, (key, drawn.token, ref)
            mismatches += 1
    assert mismatches <= 1
    assert len(tokens) >= 3  # the keys really draw different tokens (min_p keeps 4)


def test_grammar_mask_leaves_only_allowed_tokens_and_the_cuts_act_on_them(device: Device):
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((1, VOCAB)) * 2).astype(np.float32)
    allowed = np.zeros(VOCAB, bool)
    allowed[[3, 31, 32, 500, 1001]] = True  # word edges and the last, partial word
    sampler = make_sampler(device, logits)
    params = SamplerParams(temperature=1.0, top_k=3)
    ks = keys(SLOTS, seed=2)
    draws = [draw_of(params, i, k, fresh=True, mask=pack(allowed)) for i, k in enumerate(ks)]
    got = [d.token for d in sampler.run(draws, [0] * len(draws))]
    want = [choose_token(logits[0], np.zeros(VOCAB, np.float32), params, k, allowed) for k in ks]
    assert got == want
    assert set(got) <= set(np.flatnonzero(allowed))
    top3 = set(np.flatnonzero(allowed)[np.argsort(-logits[0][allowed])[:3]])
    assert set(got) <= top3


def test_draws_sharing_a_line_keep_their_own_counts(device: Device):
    logits = np.zeros((1, VOCAB), np.float32)
    logits[0, [10, 20]] = (5.0, 4.9)
    sampler = make_sampler(device, logits)
    p = SamplerParams(temperature=0.0, frequency_penalty=1.0)
    first = sampler.run([draw_of(p, 0, 0, True), draw_of(p, 1, 0, True)], [0, 0])
    assert [d.token for d in first] == [10, 10]
    second = sampler.run([draw_of(p, 0, 0, False), draw_of(p, 1, 0, True)], [0, 0])
    assert [d.token for d in second] == [20, 10]  # slot 0 is penalised for its 10, a fresh slot 1 is not


def test_logprobs_are_the_raw_log_softmax_and_its_best_alternatives(device: Device):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((2, VOCAB)) * 3).astype(np.float32)
    sampler = make_sampler(device, logits)
    p = SamplerParams(temperature=0.5, presence_penalty=2.0, logprobs=5)
    drawn = sampler.run([draw_of(p, 0, k, True) for k in keys(2, seed=3)], [1, 0])
    for d, line in zip(drawn, [1, 0], strict=True):
        lp, top = token_logprobs(logits[line], d.token, 5)
        assert d.logprob == pytest.approx(lp, abs=1e-4)
        assert [t for t, _ in d.top] == [t for t, _ in top]
        np.testing.assert_allclose([v for _, v in d.top], [v for _, v in top], atol=1e-4)


def test_full_world_vocabulary_line(device: Device):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((1, 65536)) * 4).astype(np.float32)
    sampler = make_sampler(device, logits, slots=2)
    p = SamplerParams(temperature=0.8, top_p=0.9, logprobs=3)
    counts = np.zeros(65536, np.float32)
    for key in keys(3, seed=4):
        (d,) = sampler.run([draw_of(p, 1, key, True)], [0])
        ref = choose_token(logits[0], counts, p, key)
        assert d.token == ref or race_margin(logits[0], counts, p, key) < 1e-5
        assert d.top[0][0] == int(np.argmax(logits[0]))


def test_logit_bias_moves_the_draw_as_the_reference_does(device: Device):
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((1, VOCAB)) * 2).astype(np.float32)
    bias = ((4, 8.0), (5, 7.5), (6, -1.0), (7, 9.0), (int(np.argmax(logits[0])), -5.0), (1001, 8.5))  # 4..7: one vec4
    counts = np.zeros(VOCAB, np.float32)
    sampler = make_sampler(device, logits)
    for params in (SamplerParams(temperature=0.0, logit_bias=bias), SamplerParams(top_k=10, logit_bias=bias)):
        ks = keys(SLOTS, seed=5)
        drawn = sampler.run([draw_of(params, i, k, True) for i, k in enumerate(ks)], [0] * SLOTS)
        want = [choose_token(logits[0], counts, params, k) for k in ks]
        got = [d.token for d in drawn]
        assert sum(g != w and race_margin(logits[0], counts, params, k) >= 1e-5
                   for g, w, k in zip(got, want, ks, strict=True)) == 0, (got, want)
        assert set(got) & {4, 5, 7, 1001}  # the biased tokens, unlikely without their bias, are drawn


def test_a_bias_of_100_forces_a_token_and_minus_100_bans_it(device: Device):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((1, VOCAB)) * 3).astype(np.float32)
    best = int(np.argmax(logits[0]))
    sampler = make_sampler(device, logits)
    forced = SamplerParams(temperature=1.5, logit_bias=((999, 100.0),))
    assert [d.token for d in sampler.run([draw_of(forced, i, k, True) for i, k in enumerate(keys(SLOTS, 6))],
                                         [0] * SLOTS)] == [999] * SLOTS  # fmt: skip
    banned = SamplerParams(temperature=0.0, logit_bias=((best, -100.0),))
    (d,) = sampler.run([draw_of(banned, 0, 0, True)], [0])
    assert d.token != best and d.token == int(np.argsort(-logits[0])[1])


def test_a_bias_cannot_bring_back_a_token_the_grammar_excludes(device: Device):
    logits = np.zeros((1, VOCAB), np.float32)
    allowed = np.zeros(VOCAB, bool)
    allowed[[40, 41]] = True
    sampler = make_sampler(device, logits)
    p = SamplerParams(temperature=0.0, logit_bias=((12, 100.0), (41, 1.0)))
    (d,) = sampler.run([draw_of(p, 0, 0, True, pack(allowed))], [0])
    assert d.token == 41
