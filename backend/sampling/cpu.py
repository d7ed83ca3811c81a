"""The sampler's specification in numpy, one row at a time: the reference the GPU sampler
(shaders/sample.wgsl) is tested against, and the sampler of the offline tools.

Cuts are thresholds on the probability (top-k keeps p >= the k-th largest, top-p keeps p >= the
smallest value of the most-likely set that reaches top_p of the mass, min-p keeps p >= min_p * max p),
so tokens tied at a cut are all kept; the draw is then an exponential race among the kept tokens
(sampling/race.py)."""

from __future__ import annotations

import numpy as np

from backend.sampling.params import SamplerParams
from backend.sampling.race import draw_key, race_noise


def apply_penalties(logits: np.ndarray, counts: np.ndarray, p: SamplerParams) -> np.ndarray:
    """AI00's penalties: every token seen pays `presence`, plus `frequency` times its decayed count."""
    if not (p.presence_penalty or p.frequency_penalty):
        return logits
    seen = counts > 0
    return logits - (p.presence_penalty * seen + p.frequency_penalty * counts).astype(np.float32)


def apply_bias(logits: np.ndarray, p: SamplerParams) -> np.ndarray:
    """OpenAI's logit_bias: each listed token's logit moves by its (clamped) bias."""
    if not p.logit_bias:
        return logits
    x = logits.copy()
    ids, bias = zip(*p.logit_bias, strict=True)
    x[list(ids)] += np.asarray(bias, np.float32)
    return x


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
    """Draw with the generation's `rng` (one key per token unless greedy): see `choose_token`."""
    return choose_token(logits, counts, p, draw_key(rng) if p.temperature > 0 else 0, allowed)


def choose_token(
    logits: np.ndarray, counts: np.ndarray, p: SamplerParams, key: int, allowed: np.ndarray | None = None
) -> int:
    """Penalties -> logit_bias -> grammar mask -> temperature (0: greedy) -> top-k -> top-p -> min-p -> the token
    that `key`'s exponential race draws (sampling/race.py).

    `allowed` ([vocab] bool) keeps only the tokens a grammar accepts next; the cuts then act on those."""
    ids, scores = race_scores(logits, counts, p, key, allowed)
    return int(ids[int(np.argmax(scores))])  # the first of equals: the lowest id


def race_scores(
    logits: np.ndarray, counts: np.ndarray, p: SamplerParams, key: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' ids (ascending) and scores: p / E for kept tokens, -1 for cut ones; greedy: the logits."""
    x = apply_bias(apply_penalties(logits.astype(np.float32, copy=False), counts, p), p)
    ids = np.arange(len(x))
    if allowed is not None:
        ids = np.flatnonzero(allowed)
        if not len(ids):
            raise ValueError("the grammar allows no next token")
        x = x[ids]
    if p.temperature == 0.0:
        return ids, x
    probs = softmax(x.astype(np.float64) / p.temperature)
    kept = (probs >= _cut(probs, p)) & (probs > 0)
    return ids, np.where(kept, probs / race_noise(key, ids), -1.0)


def _cut(probs: np.ndarray, p: SamplerParams) -> float:
    """The threshold tau (keep p >= tau) of top-k, top-p and min-p together."""
    tau = 0.0
    if 0 < p.top_k < np.count_nonzero(probs):
        tau = np.partition(probs, -p.top_k)[-p.top_k]
    if p.top_p < 1.0:
        kept = np.sort(probs[probs >= tau])[::-1]
        cut = min(int(np.searchsorted(np.cumsum(kept), p.top_p * kept.sum())), len(kept) - 1)
        tau = max(tau, kept[cut])
    return max(tau, p.min_p * probs.max())


def token_logprobs(logits: np.ndarray, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` and its `k` most likely alternatives (before sampling settings)."""
    lp = log_softmax(logits)
    top = np.argsort(-lp, kind="stable")[:k] if k > 0 else []
    return float(lp[token]), [(int(t), float(lp[t])) for t in top]
