"""What an op is made of: weights on the GPU, bindings, the step's sizes, and the recorded dispatch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import wgpu


class StepDims(NamedTuple):
    T: int  # tokens
    R: int  # logit lines
    B: int  # rows


Grid = Callable[[StepDims], tuple[int, int, int]]
Binding = wgpu.GPUBuffer | tuple[wgpu.GPUBuffer, int, int]  # a whole buffer, or (buffer, offset, size) in bytes


@dataclass(frozen=True)
class Tensor:
    """A weight on the GPU: `shape` as the kernels see it; fp16, f32 or block-quantized storage."""

    buffer: wgpu.GPUBuffer
    shape: tuple[int, ...]
    f16: bool
    quant: str = ""  # "", "int8" or "nf4" (backend/gpu/quant.py)
    scales: wgpu.GPUBuffer | None = None  # [rows, K / 64] f32 when quantized


@dataclass(frozen=True)
class Dispatch:
    name: str
    pipeline: wgpu.GPUComputePipeline
    bind_group: wgpu.GPUBindGroup
    grid: Grid


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
