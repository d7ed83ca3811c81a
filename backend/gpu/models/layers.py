"""Pieces the model versions share: the per-layer build context, weight naming, RWKV-4/5/6 channel mix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import wgpu

from backend.gpu.models.info import ModelInfo, StateLayout
from backend.gpu.ops import Dispatch, Ops, Tensor


@dataclass(frozen=True)
class Layer:
    """What a version's `layer_ops` needs to build layer `i`."""

    i: int
    ops: Ops
    info: ModelInfo
    layout: StateLayout
    state: wgpu.GPUBuffer  # [slots, layout.size] f32
    weights: dict[str, Tensor]

    def w(self, name: str) -> Tensor:
        return self.weights[f"blocks.{self.i}.{name}"]

    def ln_mix(self, part: str, mu: str, *, delta: bool = False) -> Dispatch:
        ws = self.ops.ws
        ln = "ln1" if part == "att" else "ln2"
        prev = self.layout.att_x_prev if part == "att" else self.layout.ffn_x_prev
        return self.ops.ln_mix(
            f"{self.i}.{part}.ln_mix",
            self.w(f"{ln}.weight"),
            self.w(f"{ln}.bias"),
            self.w(mu),
            self.state,
            self.layout.size,
            prev,
            ws.ln_att if part == "att" else ws.ln_ffn,
            ws.delta if delta else None,
        )

    def group(self, g: int) -> int:
        """Float offset of group g in a [G, t_max, C] buffer."""
        return g * self.ops.t_max * self.info.n_embd


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    var = x64.var(-1, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def prepare_common(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Embedding (with ln0 folded in, as the reference does at load), final norm and head."""
    return {
        "emb": layer_norm(t["emb.weight"], t["blocks.0.ln0.weight"], t["blocks.0.ln0.bias"]),
        "ln_out.weight": flat(t["ln_out.weight"]),
        "ln_out.bias": flat(t["ln_out.bias"]),
        "head": t["head.weight"],
    }


def prepare_norms(t: dict[str, np.ndarray], p: str) -> dict[str, np.ndarray]:
    return {f"{p}{n}.{k}": flat(t[f"{p}{n}.{k}"]) for n in ("ln1", "ln2") for k in ("weight", "bias")}


def prepare_ffn_v4(t: dict[str, np.ndarray], p: str, maa: bool) -> dict[str, np.ndarray]:
    """RWKV-4/5 mix as x*m + prev*(1-m), i.e. mu = 1 - m; RWKV-6 uses maa directly."""
    if maa:
        mu = np.stack([flat(t[f"{p}ffn.time_maa_k"]), flat(t[f"{p}ffn.time_maa_r"])])
    else:
        mu = 1.0 - np.stack([flat(t[f"{p}ffn.time_mix_k"]), flat(t[f"{p}ffn.time_mix_r"])])
    return {
        f"{p}ffn.mu": mu,
        f"{p}ffn.key": t[f"{p}ffn.key.weight"],
        f"{p}ffn.receptance": t[f"{p}ffn.receptance.weight"],
        f"{p}ffn.value": t[f"{p}ffn.value.weight"],
    }


def channel_mix_v4(layer: Layer) -> list[Dispatch]:
    """x += sigmoid(xr @ R) * (relu(xk @ K)^2 @ V)   (RWKV-4, 5 and 6)."""
    ops, ws, i = layer.ops, layer.ops.ws, layer.i
    f = layer.info.n_ffn
    return [
        layer.ln_mix("ffn", "ffn.mu"),
        *ops.matmul(f"{i}.ffn.key", ws.mix, layer.w("ffn.key"), ws.ffn_k, act="relu_sq"),
        *ops.matmul(
            f"{i}.ffn.receptance", ws.mix, layer.w("ffn.receptance"), ws.ffn_r, x_base=layer.group(1), act="sigmoid"
        ),
        *ops.matmul(f"{i}.ffn.value", ws.ffn_k, layer.w("ffn.value"), ws.x, x_row=f, mul=ws.ffn_r, add=True),
    ]


def finish_layer(layer: Layer) -> Dispatch:
    return layer.ops.store_shift(layer.i, layer.state, layer.info.n_embd, layer.layout.size)


# Weights stored as fp16 in the fp16 path: the big matrices. Everything else stays f32.
MATRIX_SUFFIXES = (
    "emb", "head", ".rkv", ".kv", ".receptance", ".key", ".value", ".output", ".gate",
)  # fmt: skip


def is_matrix(name: str) -> bool:
    return name.endswith(MATRIX_SUFFIXES)
