"""RWKV-5 "Eagle" (5.0, 5.1, 5.2): per-head matrix state with a constant decay per channel."""

from __future__ import annotations

import numpy as np

from backend.gpu.models.info import Version
from backend.gpu.models.layers import Layer, channel_mix_v4, finish_layer, flat, prepare_ffn_v4, prepare_norms
from backend.gpu.ops import Dispatch


def per_channel(a: np.ndarray, c: int) -> np.ndarray:
    """5.0/5.1 keep one decay and bonus per head; expand them to one per channel."""
    a = np.asarray(a, np.float32).reshape(-1)
    return np.repeat(a, c // a.size) if a.size != c else a


def prepare_layer(t: dict[str, np.ndarray], i: int, version: Version) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    c = t["emb.weight"].shape[1]
    mixes = ("r", "k", "v", "g") if version is not Version.V5_0 else ("r", "k", "v")
    out = prepare_norms(t, p) | prepare_ffn_v4(t, p, maa=False)
    out[f"{att}mu"] = 1.0 - np.stack([flat(t[f"{att}time_mix_{m}"]) for m in mixes])
    out[f"{att}rkv"] = np.concatenate([t[f"{att}{m}.weight"] for m in ("receptance", "key", "value")])
    if version is not Version.V5_0:
        out[f"{att}gate"] = t[f"{att}gate.weight"]
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}decay"] = per_channel(t[f"{att}time_decay"], c)
    if f"{att}time_faaaa" in t:  # the bonus itself; older files store its log
        out[f"{att}u"] = per_channel(t[f"{att}time_faaaa"], c)
    else:
        out[f"{att}u"] = np.exp(per_channel(t[f"{att}time_first"], c))
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    gated = layer.info.version is not Version.V5_0
    lo = layer.layout
    steps = [
        layer.ln_mix("att", "att.mu"),
        *ops.matmul(f"{i}.rkv", ws.mix, w("att.rkv"), ws.rkv, groups=3),
    ]
    if gated:
        steps += ops.matmul(f"{i}.gate", ws.mix, w("att.gate"), ws.gate, x_base=layer.group(3), act="silu")
    steps += [
        ops.wkv6(
            i, w("att.decay").buffer, False, w("att.u"), w("att.ln_x"), layer.state, lo.size, lo.recurrent,
            layer.info.head_size, gate=gated,
        ),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True),
    ]  # fmt: skip
    return steps


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer), finish_layer(layer)]
