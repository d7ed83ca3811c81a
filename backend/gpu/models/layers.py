"""Pieces the model versions share: the per-layer build context, weight naming, RWKV-4/5/6 channel mix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import wgpu

from backend.gpu.models.info import ModelInfo, StateLayout
from backend.gpu.ops import Dispatch, LnInput, Ops, Segment, StorePrev, Tensor


@dataclass(frozen=True)
class Layer:
    """What a version's `layer_ops` needs to build layer `i`."""

    i: int
    ops: Ops
    info: ModelInfo
    layout: StateLayout
    state: wgpu.GPUBuffer  # [slots, layout.size] f32
    weights: dict[str, Tensor]
    shapes: dict[str, tuple[int, ...]]  # the file's (canonical) tensor shapes

    def w(self, name: str) -> Tensor:
        return self.weights[f"blocks.{self.i}.{name}"]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[f"blocks.{self.i}.{name}"]

    def ln_input(self, part: str, *, delta: bool = False) -> LnInput:
        """The token-shifted LayerNorm input of the time mix ("att") or channel mix ("ffn"); its xx goes
        to ln_att / ln_ffn (and prev - xx to `delta`), where the shift store and v6's mix read it."""
        ws = self.ops.ws
        prev = self.layout.att_x_prev if part == "att" else self.layout.ffn_x_prev
        out = ws.ln_att if part == "att" else ws.ln_ffn
        return LnInput(self.w(f"{part}.ln"), self.state, self.layout.size, prev, out, ws.delta if delta else None)

    def store_prev(self, part: str) -> StorePrev:
        """Epilogue of the matmul that ends the time mix / channel mix: keep each row's last xx."""
        ws = self.ops.ws
        prev = self.layout.att_x_prev if part == "att" else self.layout.ffn_x_prev
        return StorePrev(self.state, self.layout.size, prev, ws.ln_att if part == "att" else ws.ln_ffn)


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


def ln_params(t: dict[str, np.ndarray], p: str, ln: str, mus: list[np.ndarray]) -> np.ndarray:
    """[2 + G, C]: the layer norm's weight and bias, then the token-shift mixes it feeds."""
    return np.stack([flat(t[f"{p}{ln}.weight"]), flat(t[f"{p}{ln}.bias"]), *(flat(m) for m in mus)])


def pad_rows(a: np.ndarray, multiple: int = 64) -> np.ndarray:
    """Zero rows up to a multiple of 64, so stacked projections keep the GEMM's tiles apart."""
    extra = (-a.shape[0]) % multiple
    return np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) if extra else a


def prepare_ffn_v4(t: dict[str, np.ndarray], p: str, maa: bool) -> dict[str, np.ndarray]:
    """RWKV-4/5 mix as x*m + prev*(1-m), i.e. mu = 1 - m; RWKV-6 uses maa directly."""
    if maa:
        mus = [t[f"{p}ffn.time_maa_k"], t[f"{p}ffn.time_maa_r"]]
    else:
        mus = [1.0 - flat(t[f"{p}ffn.time_mix_k"]), 1.0 - flat(t[f"{p}ffn.time_mix_r"])]
    return {
        f"{p}ffn.ln": ln_params(t, p, "ln2", mus),
        f"{p}ffn.kr": np.concatenate([t[f"{p}ffn.key.weight"], t[f"{p}ffn.receptance.weight"]]),
        f"{p}ffn.value": t[f"{p}ffn.value.weight"],
    }


def channel_mix_v4(layer: Layer) -> list[Dispatch]:
    """x += sigmoid(xr @ R) * (relu(xk @ K)^2 @ V)   (RWKV-4, 5 and 6): key and receptance in one
    dispatch that computes its LayerNorm input itself, then the value with the gate and the residual."""
    ops, ws, i = layer.ops, layer.ops.ws, layer.i
    f, c, tf = layer.info.n_ffn, layer.info.n_embd, ops.t_max * layer.info.n_ffn
    kr = [Segment(f, 0, 0, f, "relu_sq"), Segment(c, 1, tf, c, "sigmoid")]  # ffn_k holds [t_max, F] then r
    return [
        *ops.matmul(f"{i}.ffn.kr", ws.mix, layer.w("ffn.kr"), ws.ffn_k, segments=kr, ln=layer.ln_input("ffn")),
        *ops.matmul(
            f"{i}.ffn.value", ws.ffn_k, layer.w("ffn.value"), ws.x, x_row=f, mul=ws.ffn_k, mul_base=tf, add=True,
            store_prev=layer.store_prev("ffn"),
        ),
    ]  # fmt: skip


# Weights stored as fp16 in the fp16 path: the big matrices. Everything else stays f32.
MATRIX_SUFFIXES = (
    "emb", "head", ".proj", ".kr", ".key", ".value", ".output",
)  # fmt: skip


def is_matrix(name: str) -> bool:
    return name.endswith(MATRIX_SUFFIXES)
