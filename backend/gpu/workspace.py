"""Activation buffers of one engine, sized once for the largest step so bind groups never change."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import wgpu

from backend.gpu.device import UNIFORM, Gpu
from backend.gpu.models.info import ModelInfo, Version
from backend.gpu.op_types import Binding

F32 = 4
INPUT_ALIGN = 256  # minimum storage/uniform binding offset alignment in WebGPU
TOKEN_FIELDS = 4  # Token struct in common.wgsl: id, slot, flags, row
ROW_FIELDS = 4  # Row struct: slot, start, len, pad


@dataclass
class Workspace:
    t_max: int  # tokens per step
    r_max: int  # logit lines per step
    b_max: int  # rows per step (= state slots)
    lora_width: int  # f32 per token of `lora` (v6's mix LoRA hidden layer, v7 DeepEmbed's s1 output)
    hidden_width: int  # f32 per token of the projections' LoRA hidden layers in `rkv` (v6 decay, v7 w/a/v/g)
    lora_base: int  # where those hidden layers start in `rkv`, in floats
    inputs: wgpu.GPUBuffer  # the four below, written together by one write per step
    dims: Binding  # uniform Dims {T, R, B, pad}
    tokens: Binding  # [t_max] Token
    rows: Binding  # [b_max] Row
    positions: Binding  # [r_max] u32 token index of each logit line
    draws: Binding  # [b_max] the sampler's Draw table (sampler.py)
    x: wgpu.GPUBuffer  # [t_max, C] residual stream
    ln_att: wgpu.GPUBuffer  # [t_max, C] ln1 output (next x_prev)
    ln_ffn: wgpu.GPUBuffer  # [t_max, C] ln2 output
    mix: wgpu.GPUBuffer  # [6, t_max, C] token-shifted inputs (where a kernel does not compute its own)
    delta: wgpu.GPUBuffer  # [t_max, C] prev - xx (v6)
    rkv: wgpu.GPUBuffer  # [4, t_max, C] r, k, v, gate; then [t_max, hidden_width] LoRA hidden layers
    lora: wgpu.GPUBuffer  # [t_max, lora_width]
    v_first: wgpu.GPUBuffer  # [t_max, C]
    att_out: wgpu.GPUBuffer  # [t_max, C]
    ffn_k: wgpu.GPUBuffer  # [t_max, F] relu(k)^2, then [t_max, C] sigmoid(r) (v4-v6)
    deep: wgpu.GPUBuffer  # [t_max, 32] v7 DeepEmbed per-token mix
    ffn_scale: wgpu.GPUBuffer  # [t_max, F] v7 DeepEmbed scale of the channel-mix key
    wkv_chunks: wgpu.GPUBuffer  # [chunks, H, N N + N] v5/v6 chunked recurrence: dS then S0, and D (wkv_chunk.py)
    head_x: wgpu.GPUBuffer  # [r_max, C]
    logits: wgpu.GPUBuffer  # [r_max, V]

    @staticmethod
    def allocate(
        gpu: Gpu, info: ModelInfo, t_max: int, r_max: int, b_max: int, lora_width: int, hidden_width: int,
        draw_bytes: int, wkv_chunk_floats: int = 4,
    ) -> Workspace:  # fmt: skip
        """`wkv_chunk_floats`: the chunked recurrence's scratch (wkv_chunk.chunk_scratch_floats; 4 where unused)."""
        c = info.n_embd

        def floats(n: int, label: str) -> wgpu.GPUBuffer:
            return gpu.empty(n * F32, label)

        # one buffer for the per-step inputs, each part at a 256-byte aligned offset (binding offsets)
        parts = {"dims": 16, "tokens": t_max * TOKEN_FIELDS * 4, "rows": b_max * ROW_FIELDS * 4, "positions": r_max * 4,
                 "draws": b_max * draw_bytes}  # fmt: skip
        offsets, end = {}, 0
        for name, size in parts.items():
            offsets[name] = end
            end = _align(end + size, INPUT_ALIGN)
        inputs = gpu.empty(end, "step_inputs", usage=UNIFORM | wgpu.BufferUsage.STORAGE)

        per_token = floats_per_token(info, lora_width, hidden_width)
        buffers = {name: floats(max(t_max * n, 4), name) for name, n in per_token.items()}
        return Workspace(
            t_max=t_max,
            r_max=r_max,
            b_max=b_max,
            lora_width=lora_width,
            hidden_width=hidden_width,
            lora_base=4 * t_max * c,
            inputs=inputs,
            dims=(inputs, offsets["dims"], parts["dims"]),
            tokens=(inputs, offsets["tokens"], parts["tokens"]),
            rows=(inputs, offsets["rows"], parts["rows"]),
            positions=(inputs, offsets["positions"], parts["positions"]),
            draws=(inputs, offsets["draws"], parts["draws"]),
            **buffers,
            wkv_chunks=floats(wkv_chunk_floats, "wkv_chunks"),
            head_x=floats(r_max * c, "head_x"),
            logits=floats(r_max * info.n_vocab, "logits"),
        )

    def write_inputs(
        self, gpu: Gpu, tokens: Sequence[int], rows: Sequence[int], positions: Sequence[int], draws: bytes = b""
    ) -> None:
        """tokens [T, 4] u32 and rows [B, 4] u32 (flat), positions [R] u32 and the draw table: a step's only
        uploads, in one write from the start of the buffer to the end of what is used. Packed with struct
        into one bytearray: numpy's per-call costs, and a second write for the draws, were ~150 us of a
        decode step's ~300 on this 2-CPU machine's host (bench.step_cost)."""
        end = self.draws[1] + len(draws) if draws else self.positions[1] + 4 * max(1, len(positions))
        data = bytearray(end)
        struct.pack_into("4I", data, self.dims[1], len(tokens) // 4, len(positions), len(rows) // 4, 0)
        struct.pack_into(f"{len(tokens)}I", data, self.tokens[1], *tokens)
        struct.pack_into(f"{len(rows)}I", data, self.rows[1], *rows)
        struct.pack_into(f"{len(positions)}I", data, self.positions[1], *positions)
        if draws:
            data[self.draws[1] : end] = draws
        gpu.queue.write_buffer(self.inputs, 0, data)


def floats_per_token(info: ModelInfo, lora_width: int, hidden_width: int) -> dict[str, int]:
    """Floats each token of a step's room costs in each buffer sized by t_max (0: a version without it)."""
    c, f = info.n_embd, info.n_ffn
    v6, deep = info.version is Version.V6, info.deep_embed
    return {
        "x": c,
        "ln_att": c,
        "ln_ffn": c,
        "mix": 6 * c,
        "delta": c if v6 else 0,
        "rkv": 4 * c + hidden_width,
        "lora": max(lora_width, 4),
        "v_first": c,
        "att_out": c,
        "ffn_k": f + c,
        "deep": 32 if deep else 0,
        "ffn_scale": f if deep else 0,
    }


def _align(n: int, m: int) -> int:
    return -(-n // m) * m
