"""A numpy sampler for one row of logits (the GPU sampler of the sampling issue replaces it in the hot path)."""

from __future__ import annotations

import numpy as np

from backend.sampling.params import SamplerParams


def apply_penalties(logits: np.ndarray, counts: np.ndarray, p: SamplerParams) -> np.ndarray:
    """AI00's penalties: every token seen pays `presence`, plus `frequency` times its decayed count."""
    if not (p.presence_penalty or p.frequency_penalty):
        return logits
    seen = counts > 0
    return logits - (p.presence_penalty * seen + p.frequency_penalty * counts).astype(np.float32)


def record_token(counts: np.ndarray, token: int, p: SamplerParams) -> None:
    """Decay every count by one token's worth of half-life, then count the new token."""
    counts *= p.penalty_decay
    counts[token] += 1.0


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def sample_token(
    logits: np.ndarray,
    counts: np.ndarray,
    p: SamplerParams,
    rng: np.random.Generator,
    allowed: np.ndarray | None = None,
) -> int:
    """Penalties -> grammar mask -> temperature (0: greedy) -> top-k -> top-p -> min-p -> draw with `rng`.

    `allowed` ([vocab] bool) keeps only the tokens a grammar accepts next; the cuts then act on those."""
    x = apply_penalties(logits.astype(np.float32, copy=False), counts, p)
    ids = None
    if allowed is not None:
        ids = np.flatnonzero(allowed)
        if not len(ids):
            raise ValueError("the grammar allows no next token")
        x = x[ids]
    i = _draw(x, p, rng)
    return int(ids[i]) if ids is not None else i


def _draw(x: np.ndarray, p: SamplerParams, rng: np.random.Generator) -> int:
    """Index into `x` of the drawn candidate."""
    if p.temperature == 0.0:
        return int(np.argmax(x))
    probs = softmax(x.astype(np.float64) / p.temperature)
    if p.top_k == 0 and p.top_p >= 1.0 and p.min_p == 0.0:  # no cut: no sort needed
        order, kept = None, probs
    else:
        order = np.argsort(-probs, kind="stable")  # most likely first, ties by id
        if 0 < p.top_k < len(order):
            order = order[: p.top_k]
        kept = probs[order]
        if p.top_p < 1.0:
            cut = int(np.searchsorted(np.cumsum(kept), p.top_p * kept.sum())) + 1
            order, kept = order[:cut], kept[:cut]
        if p.min_p > 0.0:
            keep = kept >= p.min_p * kept[0]
            order, kept = order[keep], kept[keep]
    cdf = np.cumsum(kept)
    i = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(kept) - 1)
    return int(order[i]) if order is not None else i


def token_logprobs(logits: np.ndarray, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` and its `k` most likely alternatives (before sampling settings)."""
    lp = log_softmax(logits)
    top = np.argsort(-lp, kind="stable")[:k] if k > 0 else []
    return float(lp[token]), [(int(t), float(lp[t])) for t in top]
