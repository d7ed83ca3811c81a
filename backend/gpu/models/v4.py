"""RWKV-4 "Dove": per-channel WKV with an exponential decay, kept stable as (aa, bb, pp)."""

from __future__ import annotations

import numpy as np

from backend.gpu.models.layers import Layer, channel_mix_v4, flat, ln_params, prepare_ffn_v4
from backend.gpu.ops import Dispatch, Segment


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = prepare_ffn_v4(t, p, maa=False)
    out[f"{att}ln"] = ln_params(t, p, "ln1", [1.0 - flat(t[f"{att}time_mix_{m}"]) for m in ("r", "k", "v")])
    out[f"{att}proj"] = np.concatenate([t[f"{att}{m}.weight"] for m in ("receptance", "key", "value")])
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}decay"] = -np.exp(flat(t[f"{att}time_decay"]))
    out[f"{att}u"] = flat(t[f"{att}time_first"])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    """sigmoid(r), k, v in one dispatch from the token-shifted LayerNorm input; wkv; output + residual."""
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    c, tc = layer.info.n_embd, ops.t_max * layer.info.n_embd
    rkv = [Segment(c, 0, 0, c, "sigmoid"), Segment(c, 1, tc, c), Segment(c, 2, 2 * tc, c)]
    lo = layer.layout
    return [
        *ops.matmul(f"{i}.proj", ws.mix, w("att.proj"), ws.rkv, segments=rkv, ln=layer.ln_input("att")),
        ops.wkv4(i, w("att.decay"), w("att.u"), layer.state, lo.size, lo.recurrent),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True, store_prev=layer.store_prev("att")),
    ]


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer)]
