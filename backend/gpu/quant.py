"""Block quantization of weight matrices, dequantized inside the matmul kernels (weights.wgsl).

int8: each block of 64 consecutive weights of a row keeps its absmax; q = round(127 w / absmax),
      four q per u32, read back with unpack4x8snorm (q / 127) * absmax.
nf4:  each block of 64 keeps its absmax; every weight becomes the index (4 bits, eight per u32)
      of the nearest NormalFloat-4 level of w / absmax (QLoRA's 16-value code book).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BLOCK = 64
QUANT_TYPES = ("int8", "nf4")

# NormalFloat-4: quantiles of N(0, 1) scaled to [-1, 1], with an exact zero (Dettmers et al., 2023)
NF4_LEVELS = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    np.float32,
)  # fmt: skip


@dataclass(frozen=True)
class Quantized:
    packed: np.ndarray  # u32 words, row-major over [rows, K]
    scales: np.ndarray  # [rows, K / BLOCK] f32 absmax per block
    kind: str


def quantize(w: np.ndarray, kind: str) -> Quantized:
    """[rows, K] float matrix (K % 64 == 0) -> packed codes and per-block scales. Row bands are
    quantized on all cores (numpy lets go of the GIL): one thread took ~1.7 s per 4096 x 4096 matrix,
    i.e. minutes for a 7B model at load time."""
    if kind not in QUANT_TYPES:
        raise ValueError(f"quant_type: must be one of {QUANT_TYPES}, got {kind!r}")
    rows, k = w.shape
    if k % BLOCK:
        raise ValueError(f"quantize: K = {k} is not a multiple of {BLOCK}")
    band = max(64, -(-rows // _WORKERS))
    if rows <= band:
        return _quantize_rows(w, kind)
    parts = list(_pool().map(lambda r: _quantize_rows(w[r : r + band], kind), range(0, rows, band)))
    packed = np.concatenate([p.packed for p in parts])
    return Quantized(packed, np.concatenate([p.scales for p in parts]), kind)


_WORKERS = min(16, os.cpu_count() or 1)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_WORKERS, thread_name_prefix="quantize")


def _quantize_rows(w: np.ndarray, kind: str) -> Quantized:
    rows, k = w.shape
    blocks = w.astype(np.float32).reshape(rows, k // BLOCK, BLOCK)
    absmax = np.abs(blocks).max(-1, keepdims=True)
    absmax[absmax == 0] = 1.0
    unit = blocks / absmax
    if kind == "int8":
        codes = np.clip(np.rint(unit * 127), -127, 127).astype(np.int8)
        packed = codes.reshape(rows, k).view(np.uint32)
    else:
        mids = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2
        codes = np.searchsorted(mids, unit).astype(np.uint32).reshape(rows, k // 8, 8)
        packed = np.zeros((rows, k // 8), np.uint32)
        for j in range(8):
            packed |= codes[:, :, j] << np.uint32(4 * j)
    return Quantized(np.ascontiguousarray(packed), absmax.reshape(rows, k // BLOCK), kind)


def dequantize(q: Quantized, k: int) -> np.ndarray:
    """The matrix the kernels see (for tests and error reports)."""
    rows = q.scales.shape[0]
    if q.kind == "int8":
        unit = q.packed.view(np.int8).reshape(rows, k).astype(np.float32) / 127
    else:
        codes = (q.packed[:, :, None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
        unit = NF4_LEVELS[codes.reshape(rows, k)]
    return (unit.reshape(rows, k // BLOCK, BLOCK) * q.scales[:, :, None]).reshape(rows, k)
