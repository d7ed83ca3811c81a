"""One builder per kernel: checks shapes, binds buffers, picks the pipeline variant.

An op is data (`Dispatch`): the model is a list of them, recorded again each step with
only the workgroup counts depending on the step's sizes. No wgpu calls happen here at run time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import wgpu

from backend.gpu.device import Gpu
from backend.gpu.pipelines import Defines, PipelineCache
from backend.gpu.quant import quantize
from backend.gpu.workspace import Workspace

VEC_MAX_TOKENS = 64  # steps up to this many tokens use the GEMV-shaped kernels, larger ones the GEMM


@dataclass(frozen=True)
class MatmulKernel:
    shader: str
    rows: int  # output rows per workgroup
    tokens: int  # tokens per workgroup
    min_count: int = 0  # used when the step's count lies in [min_count, max_count]
    max_count: int = 1 << 30


# tiled: 64 lanes share a row (coalesced, portable); vec: a 32-wide subgroup per row (GPUs with
# 32-lane subgroups); gemm: 64 x 64 tiles through workgroup memory; rows: one invocation per row
# (CPU drivers such as lavapipe: no barriers, sequential reads).
KERNELS = {
    "tiled": MatmulKernel("matmul.wgsl", 4, 8),
    "vec": MatmulKernel("matmul_vec.wgsl", 8, 8),
    "gemm": MatmulKernel("matmul_gemm.wgsl", 64, 64),
    "rows": MatmulKernel("matmul_rows.wgsl", 64, 8),
}


def matmul_plan(gpu: Gpu) -> list[MatmulKernel]:
    """Which kernels serve which token counts on this adapter (AI00_MATMUL overrides: one kernel)."""
    forced = os.environ.get("AI00_MATMUL")
    if forced:
        if forced not in KERNELS:
            raise ValueError(f"AI00_MATMUL: must be one of {sorted(KERNELS)}, got {forced!r}")
        return [KERNELS[forced]]
    if gpu.is_cpu:
        return [KERNELS["rows"]]
    small = KERNELS["vec"] if gpu.subgroup_size == 32 else KERNELS["tiled"]
    return [replace(small, max_count=VEC_MAX_TOKENS), replace(KERNELS["gemm"], min_count=VEC_MAX_TOKENS + 1)]


class StepDims(NamedTuple):
    T: int  # tokens
    R: int  # logit lines
    B: int  # rows


Grid = Callable[[StepDims], tuple[int, int, int]]


@dataclass(frozen=True)
class Tensor:
    """A weight on the GPU: `shape` as the kernels see it; fp16, f32 or block-quantized storage."""

    buffer: wgpu.GPUBuffer
    shape: tuple[int, ...]
    f16: bool
    quant: str = ""  # "", "int8" or "nf4" (backend/gpu/quant.py)
    scales: wgpu.GPUBuffer | None = None  # [rows, K / 64] f32 when quantized


Binding = wgpu.GPUBuffer | tuple[wgpu.GPUBuffer, int, int]  # a whole buffer, or (buffer, offset, size) in bytes


@dataclass(frozen=True)
class Dispatch:
    name: str
    pipeline: wgpu.GPUComputePipeline
    bind_group: wgpu.GPUBindGroup
    grid: Grid


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _resource(binding: Binding) -> dict:
    if isinstance(binding, tuple):
        buffer, offset, size = binding
        return {"buffer": buffer, "offset": offset, "size": size}
    return {"buffer": binding}


@dataclass(frozen=True)
class RowSlice:
    """Rows [row0, row0 + rows) of a weight, bound on their own (weight and scales)."""

    row0: int
    rows: int
    weight: Binding
    scales: Binding | None


def row_slices(w: Tensor, max_bytes: int) -> list[RowSlice]:
    """A matrix larger than one binding may hold (128 MiB on some drivers: a World-vocab head or
    embedding of a 1.6B model) is bound in slices of whole 64-row blocks; smaller ones in one piece."""
    rows, k = w.shape
    row_bytes = {"int8": k, "nf4": k // 2}.get(w.quant, k * (2 if w.f16 else 4))
    if rows * row_bytes <= max_bytes:
        return [RowSlice(0, rows, w.buffer, w.scales)]
    step = max_bytes // row_bytes // 64 * 64
    if step == 0:
        raise ValueError(f"weight {w.shape}: one 64-row block exceeds the {max_bytes}-byte binding limit")
    scale_bytes = k // 64 * 4
    out = []
    for row0 in range(0, rows, step):
        n = min(step, rows - row0)
        weight = (w.buffer, row0 * row_bytes, n * row_bytes)
        scales = None if w.scales is None else (w.scales, row0 * scale_bytes, n * scale_bytes)
        out.append(RowSlice(row0, n, weight, scales))
    return out


def _matmul_grid(kernel: MatmulKernel, rows: int, count: str) -> Grid:
    groups_x = _ceil(rows, kernel.rows)

    def grid(d: StepDims) -> tuple[int, int, int]:
        n = d.T if count == "T" else d.R
        if not kernel.min_count <= n <= kernel.max_count:
            return (0, 0, 0)
        return (groups_x, _ceil(n, kernel.tokens), 1)

    return grid


class Ops:
    def __init__(self, gpu: Gpu, cache: PipelineCache, ws: Workspace, t_max: int) -> None:
        self.gpu, self.cache, self.ws, self.t_max = gpu, cache, ws, t_max
        self.matmul_kernels = matmul_plan(gpu)

    def upload(self, array: np.ndarray, f16: bool, label: str, quant: str = "") -> Tensor:
        if quant:
            q = quantize(array, quant)
            return Tensor(self.gpu.upload(q.packed, label), tuple(array.shape), False, quant,
                          self.gpu.upload(q.scales, f"{label}.scales"))  # fmt: skip
        data = array.astype(np.float16 if f16 else np.float32, copy=False)
        return Tensor(self.gpu.upload(data, label), tuple(array.shape), f16)

    def _dispatch(self, name: str, shader: str, defines: Defines, bindings: dict[int, Binding], grid: Grid) -> Dispatch:
        pipeline = self.cache.get(shader, defines)
        if set(bindings) != pipeline.bindings:
            raise ValueError(f"{name}: bindings {sorted(bindings)} != shader's {sorted(pipeline.bindings)}")
        entries = [{"binding": b, "resource": _resource(buf)} for b, buf in sorted(bindings.items())]
        bind_group = self.gpu.device.create_bind_group(layout=pipeline.layout, entries=entries, label=name)
        return Dispatch(name, pipeline.pipeline, bind_group, grid)

    def embed(self, emb: Tensor) -> list[Dispatch]:
        """x[t] = emb[id]: one dispatch per bound slice of the table, each copying the ids it holds."""
        c4 = emb.shape[1] // 4
        return [
            self._dispatch(
                "embed",
                "embed.wgsl",
                {"C4": c4, "W_F16": emb.f16, "ROW0": part.row0, "ROWS": part.rows},
                {0: self.ws.dims, 1: self.ws.tokens, 2: part.weight, 3: self.ws.x},
                lambda d: (_ceil(c4, 64), d.T, 1),
            )
            for part in row_slices(emb, self.gpu.max_binding_bytes)
        ]

    def matmul(
        self,
        name: str,
        x: wgpu.GPUBuffer,
        w: Tensor,
        y: wgpu.GPUBuffer,
        *,
        groups: int = 1,
        x_base: int = 0,
        x_group: int | None = None,
        x_row: int | None = None,
        y_base: int = 0,
        y_group: int | None = None,
        y_row: int | None = None,
        count: str = "T",
        act: str | None = None,
        bias: Tensor | None = None,
        mul: wgpu.GPUBuffer | None = None,
        add: bool = False,
    ) -> list[Dispatch]:
        """y[g, t, :] = epilogue(x[g, t, :] @ w[g].T); strides in floats, defaulting to [G, t_max, dim].
        One dispatch per kernel of the plan; each runs only for the token counts it serves."""
        rows, k = w.shape
        if rows % groups or k % 16:
            raise ValueError(f"{name}: weight {w.shape} does not split into {groups} groups of K%16==0")
        n = rows // groups
        x_row = k if x_row is None else x_row
        x_group = self.t_max * x_row if x_group is None else x_group
        y_row = n if y_row is None else y_row
        y_group = self.t_max * y_row if y_group is None else y_group
        if (x_base | x_group | x_row) % 4:
            raise ValueError(f"{name}: x offsets must be multiples of 4 floats")
        defines = {
            "K4": k // 4, "N": n, "G": groups,
            "X_BASE": x_base // 4, "X_GROUP": x_group // 4, "X_ROW": x_row // 4,
            "Y_BASE": y_base, "Y_GROUP": y_group, "Y_ROW": y_row,
            "COUNT": count, "W_F16": w.f16, "W_INT8": w.quant == "int8", "W_NF4": w.quant == "nf4",
            "BIAS": bias is not None, "MUL": mul is not None, "ADD": add,
            f"ACT_{(act or 'none').upper()}": True,
        }  # fmt: skip
        slices = row_slices(w, self.gpu.max_binding_bytes)
        if len(slices) > 1 and (groups > 1 or bias is not None):
            raise ValueError(f"{name}: a weight bound in slices must have one group and no bias")
        out = []
        for part in slices:
            bindings: dict[int, Binding] = {0: self.ws.dims, 1: x, 2: part.weight, 3: y}
            if bias is not None:
                bindings[4] = bias.buffer
            if mul is not None:
                bindings[5] = mul
            if part.scales is not None:
                bindings[6] = part.scales
            sliced = defines | {"N": n if len(slices) == 1 else part.rows, "Y_BASE": y_base + part.row0}
            for kernel in self.matmul_kernels:
                straddles = kernel.shader == "matmul_gemm.wgsl" and groups > 1 and n % kernel.rows
                # matmul_vec reads fp16/f32 rows 16 bytes at a time; quantized rows go through w4()
                if straddles or (kernel.shader == "matmul_vec.wgsl" and w.quant):
                    kernel = replace(KERNELS["tiled"], min_count=kernel.min_count, max_count=kernel.max_count)
                grid = _matmul_grid(kernel, part.rows if len(slices) > 1 else rows, count)
                out.append(self._dispatch(name, kernel.shader, sliced, bindings, grid))
        return out

    def ln_mix(
        self,
        name: str,
        ln_w: Tensor,
        ln_b: Tensor,
        mu: Tensor,
        state: wgpu.GPUBuffer,
        slot_floats: int,
        prev_offset: int,
        ln_out: wgpu.GPUBuffer,
        delta: wgpu.GPUBuffer | None = None,
    ) -> Dispatch:
        """LayerNorm + token shift: mix[g] = xx + (prev - xx) * mu[g] for the G rows of `mu`."""
        groups, c = mu.shape
        defines = {
            "C4": c // 4, "G": groups, "T_MAX": self.t_max,
            "S4": slot_floats // 4, "PREV4": prev_offset // 4, "DELTA": delta is not None,
        }  # fmt: skip
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.tokens, 2: ws.x, 3: ln_w.buffer, 4: ln_b.buffer, 5: mu.buffer}
        bindings |= {6: state, 7: ln_out, 8: ws.mix}
        if delta is not None:
            bindings[9] = delta
        return self._dispatch(name, "ln_mix.wgsl", defines, bindings, lambda d: (d.T, 1, 1))

    def mix6(self, maa: Tensor) -> Dispatch:
        c4 = maa.shape[1] // 4
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.ln_att, 2: ws.delta, 3: maa.buffer, 4: ws.m6, 5: ws.mix}
        return self._dispatch(
            "mix6", "mix6.wgsl", {"C4": c4, "T_MAX": self.t_max}, bindings, lambda d: (_ceil(c4, 64), d.T, 1)
        )

    def wkv7(
        self, layer: int, params: Tensor, ln_x: Tensor, state: wgpu.GPUBuffer, slot_floats: int, rec: int
    ) -> Dispatch:
        c = params.shape[1]
        n = 64
        ws = self.ws
        defines = {"N": 64, "C": c, "T_MAX": self.t_max, "S": slot_floats, "REC": rec, "MIX_V": layer > 0}
        bindings = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: ws.decay, 4: ws.a, 5: ws.gate, 6: ws.v_first}
        bindings |= {7: params.buffer, 8: ln_x.buffer, 9: state, 10: ws.att_out}
        if layer > 0:
            bindings[11] = ws.v_gate
        return self._dispatch(f"{layer}.wkv7", "wkv7.wgsl", defines, bindings, lambda d: (c // n, d.B, 1))

    def wkv6(
        self,
        layer: int,
        decay: wgpu.GPUBuffer,
        decay_per_token: bool,
        u: Tensor,
        ln_x: Tensor,
        state: wgpu.GPUBuffer,
        slot_floats: int,
        rec: int,
        head_size: int,
        gate: bool,
    ) -> Dispatch:
        c = u.shape[0]
        ws = self.ws
        defines = {
            "N": head_size, "C": c, "T_MAX": self.t_max, "S": slot_floats, "REC": rec,
            "DECAY_PER_TOKEN": decay_per_token, "GATE": gate,
        }  # fmt: skip
        bindings = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: decay, 4: u.buffer, 5: ln_x.buffer}
        bindings |= {6: state, 7: ws.att_out}
        if gate:
            bindings[8] = ws.gate
        grid: Grid = lambda d: (c // head_size, d.B, 1)  # noqa: E731
        return self._dispatch(f"{layer}.wkv6", "wkv6.wgsl", defines, bindings, grid)

    def wkv4(
        self, layer: int, decay: Tensor, u: Tensor, state: wgpu.GPUBuffer, slot_floats: int, rec: int
    ) -> Dispatch:
        c = u.shape[0]
        ws = self.ws
        defines = {"C": c, "T_MAX": self.t_max, "S": slot_floats, "REC": rec}
        bindings = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: decay.buffer, 4: u.buffer, 6: state, 7: ws.att_out}
        return self._dispatch(f"{layer}.wkv4", "wkv4.wgsl", defines, bindings, lambda d: (_ceil(c, 64), d.B, 1))

    def store_shift(self, layer: int, state: wgpu.GPUBuffer, c: int, slot_floats: int) -> Dispatch:
        c4 = c // 4
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.rows, 2: ws.ln_att, 3: ws.ln_ffn, 4: state}
        return self._dispatch(
            f"{layer}.store_shift",
            "store_shift.wgsl",
            {"C4": c4, "S4": slot_floats // 4},
            bindings,
            lambda d: (_ceil(c4, 64), d.B, 1),
        )

    def deep_embed(self, layer: int, s_emb: Tensor) -> Dispatch:
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.tokens, 2: s_emb.buffer, 3: ws.lora, 4: ws.deep}
        defines = {"W_F16": s_emb.f16, "W_INT8": s_emb.quant == "int8", "W_NF4": s_emb.quant == "nf4"}
        if s_emb.scales is not None:
            bindings[6] = s_emb.scales
        grid: Grid = lambda d: (_ceil(8 * d.T, 64), 1, 1)  # noqa: E731  (8 invocations per token)
        return self._dispatch(f"{layer}.deep_embed", "deep_embed.wgsl", defines, bindings, grid)

    def head_norm(self, ln_w: Tensor, ln_b: Tensor) -> Dispatch:
        c4 = ln_w.shape[0] // 4
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.positions, 2: ws.x, 3: ln_w.buffer, 4: ln_b.buffer, 5: ws.head_x}
        return self._dispatch("head_norm", "head_norm.wgsl", {"C4": c4}, bindings, lambda d: (d.R, 1, 1))
