"""Activation buffers of one engine, sized once for the largest step so bind groups never change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import wgpu

from backend.gpu.device import UNIFORM, Gpu
from backend.gpu.models.info import ModelInfo, Version

F32 = 4
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
    dims: wgpu.GPUBuffer  # uniform Dims {T, R, B, pad}
    tokens: wgpu.GPUBuffer  # [t_max] Token
    rows: wgpu.GPUBuffer  # [b_max] Row
    positions: wgpu.GPUBuffer  # [r_max] u32 token index of each logit line
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
    head_x: wgpu.GPUBuffer  # [r_max, C]
    logits: wgpu.GPUBuffer  # [r_max, V]

    @staticmethod
    def allocate(
        gpu: Gpu, info: ModelInfo, t_max: int, r_max: int, b_max: int, lora_width: int, hidden_width: int
    ) -> Workspace:
        c, f = info.n_embd, info.n_ffn

        def floats(n: int, label: str) -> wgpu.GPUBuffer:
            return gpu.empty(n * F32, label)

        return Workspace(
            t_max=t_max,
            r_max=r_max,
            b_max=b_max,
            lora_width=lora_width,
            hidden_width=hidden_width,
            lora_base=4 * t_max * c,
            dims=gpu.empty(16, "dims", usage=UNIFORM),
            tokens=floats(t_max * TOKEN_FIELDS, "tokens"),
            rows=floats(b_max * ROW_FIELDS, "rows"),
            positions=floats(r_max, "positions"),
            x=floats(t_max * c, "x"),
            ln_att=floats(t_max * c, "ln_att"),
            ln_ffn=floats(t_max * c, "ln_ffn"),
            mix=floats(6 * t_max * c, "mix"),
            delta=floats(t_max * c if info.version is Version.V6 else 4, "delta"),
            rkv=floats(4 * t_max * c + t_max * hidden_width, "rkv"),
            lora=floats(t_max * max(lora_width, 4), "lora"),
            v_first=floats(t_max * c, "v_first"),
            att_out=floats(t_max * c, "att_out"),
            ffn_k=floats(t_max * (f + c), "ffn_k"),
            deep=floats(t_max * 32 if info.deep_embed else 4, "deep"),
            ffn_scale=floats(t_max * f if info.deep_embed else 4, "ffn_scale"),
            head_x=floats(r_max * c, "head_x"),
            logits=floats(r_max * info.n_vocab, "logits"),
        )

    def write_inputs(self, gpu: Gpu, tokens: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> None:
        """tokens [T, 4] u32, rows [B, 4] u32, positions [R] u32: the only per-step uploads."""
        dims = np.array([len(tokens), len(positions), len(rows), 0], np.uint32)
        gpu.write(self.dims, dims)
        gpu.write(self.tokens, tokens)
        gpu.write(self.rows, rows)
        if len(positions):
            gpu.write(self.positions, positions)
