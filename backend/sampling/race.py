"""The draw's randomness: an exponential race.

Each drawn token takes one 64-bit key from the generation's RNG. From the key and a token's id comes that token's
Exp(1) number E; the draw is the kept token with the largest p / E, which is token i with probability
p_i / (sum of the kept p). E depends on nothing but (key, id), so logits that differ in their last bits (another
batch, another prefill split, a state-cache hit) change a seeded draw only where two candidates' p / E nearly
tie (about as often as that difference in relative size), not wherever the one uniform number of an inverse-CDF
draw falls near a step of the running sum, which over a 65k vocabulary is every few parts in a hundred thousand.

shaders/sample.wgsl computes the same numbers in f32 (`race_noise`); this is their float64 specification.
"""

from __future__ import annotations

import numpy as np

TWO_M32 = 2.0**-32


def draw_key(rng: np.random.Generator) -> int:
    """The next token's key: the next 64 bits of the generation's RNG (its raw output: 0.4 us, where
    `rng.integers(0, 2**64, dtype=np.uint64)` takes 2.3, and a decode step makes one per stream)."""
    return int(rng.bit_generator.random_raw())


def mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash with full avalanche (the "lowbias32" constants published by C. Wellons)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def token_bits(key: int, ids: np.ndarray) -> np.ndarray:
    """32 random bits for each token id: the key's low word offsets the id, its high word keys a second round."""
    lo, hi = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
    with np.errstate(over="ignore"):
        return mix32(mix32(np.asarray(ids, np.uint32) + lo) ^ hi)


def race_noise(key: int, ids: np.ndarray) -> np.ndarray:
    """Each token's Exp(1) number, -ln v with v = (bits + 0.5) / 2^32 in (0, 1). Where v > 1/2 it is computed
    from w = 1 - v (as the shader must: f32 holds w exactly near 0 but not v near 1, and a small E is a likely
    winner)."""
    h = token_bits(key, ids).astype(np.float64)
    low = h < 2.0**31
    v = (h + 0.5) * TWO_M32
    w = (2.0**32 - 1.0 - h + 0.5) * TWO_M32
    return np.where(low, -np.log(np.where(low, v, 0.5)), -np.log1p(-np.where(low, 0.5, w)))
