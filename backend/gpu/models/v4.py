"""RWKV-4 "Dove": per-channel WKV with an exponential decay, kept stable as (aa, bb, pp)."""

from __future__ import annotations

import numpy as np

from backend.gpu.models.layers import Layer, channel_mix_v4, finish_layer, flat, prepare_ffn_v4, prepare_norms
from backend.gpu.ops import Dispatch


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = prepare_norms(t, p) | prepare_ffn_v4(t, p, maa=False)
    out[f"{att}mu"] = 1.0 - np.stack([flat(t[f"{att}time_mix_{m}"]) for m in ("r", "k", "v")])
    out[f"{att}receptance"] = t[f"{att}receptance.weight"]
    out[f"{att}kv"] = np.concatenate([t[f"{att}key.weight"], t[f"{att}value.weight"]])
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}decay"] = -np.exp(flat(t[f"{att}time_decay"]))
    out[f"{att}u"] = flat(t[f"{att}time_first"])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    one = layer.group(1)
    lo = layer.layout
    return [
        layer.ln_mix("att", "att.mu"),
        *ops.matmul(f"{i}.receptance", ws.mix, w("att.receptance"), ws.rkv, act="sigmoid"),
        *ops.matmul(f"{i}.kv", ws.mix, w("att.kv"), ws.rkv, groups=2, x_base=one, y_base=one),
        ops.wkv4(i, w("att.decay"), w("att.u"), layer.state, lo.size, lo.recurrent),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True),
    ]


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer), finish_layer(layer)]
