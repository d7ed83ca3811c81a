"""RWKV-5 "Eagle" (5.0, 5.1, 5.2): per-head matrix state with a constant decay per channel."""

from __future__ import annotations

import numpy as np

from backend.gpu.models.info import Version
from backend.gpu.models.layers import Layer, channel_mix_v4, flat, ln_params, prepare_ffn_v4
from backend.gpu.ops import Dispatch, Segment


def per_channel(a: np.ndarray, c: int) -> np.ndarray:
    """5.0/5.1 keep one decay and bonus per head; expand them to one per channel."""
    a = np.asarray(a, np.float32).reshape(-1)
    return np.repeat(a, c // a.size) if a.size != c else a


def prepare_layer(t: dict[str, np.ndarray], i: int, version: Version) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    c = t["emb.weight"].shape[1]
    gated = version is not Version.V5_0
    mixes = ("r", "k", "v", "g") if gated else ("r", "k", "v")
    out = prepare_ffn_v4(t, p, maa=False)
    out[f"{att}ln"] = ln_params(t, p, "ln1", [1.0 - flat(t[f"{att}time_mix_{m}"]) for m in mixes])
    names = ("receptance", "key", "value", "gate") if gated else ("receptance", "key", "value")
    out[f"{att}proj"] = np.concatenate([t[f"{att}{m}.weight"] for m in names])
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}decay"] = per_channel(t[f"{att}time_decay"], c)
    if f"{att}time_faaaa" in t:  # the bonus itself; older files store its log
        out[f"{att}u"] = per_channel(t[f"{att}time_faaaa"], c)
    else:
        out[f"{att}u"] = np.exp(per_channel(t[f"{att}time_first"], c))
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    """r, k, v (and the silu gate) in one dispatch from the token-shifted LayerNorm input; wkv with
    group norm and gate (long steps: the state update, then norm and gate for every token); output +
    residual."""
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    gated = layer.info.version is not Version.V5_0
    c, tc = layer.info.n_embd, ops.t_max * layer.info.n_embd
    proj = [Segment(c, g, g * tc, c) for g in range(3)] + ([Segment(c, 3, 3 * tc, c, "silu")] if gated else [])
    lo = layer.layout
    return [
        *ops.matmul(f"{i}.proj", ws.mix, w("att.proj"), ws.rkv, segments=proj, ln=layer.ln_input("att")),
        *ops.wkv6(
            i, w("att.decay"), None, w("att.u"), w("att.ln_x"), layer.state, lo.size, lo.recurrent,
            layer.info.head_size, gate=gated,
        ),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True, store_prev=layer.store_prev("att")),
    ]  # fmt: skip


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer)]
