"""RWKV-6 "Finch": data-dependent token shift and decay (LoRA), per-head matrix state."""

from __future__ import annotations

import numpy as np

from backend.gpu.models.layers import Layer, channel_mix_v4, finish_layer, flat, prepare_ffn_v4, prepare_norms
from backend.gpu.ops import Dispatch

MIX5_ORDER = ("r", "k", "v", "g", "w")  # mix buffer groups after mix6
R, K, V, G, W = range(5)


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = prepare_norms(t, p) | prepare_ffn_v4(t, p, maa=True)
    out[f"{att}mu_x"] = flat(t[f"{att}time_maa_x"])[None, :]
    out[f"{att}maa5"] = np.stack([flat(t[f"{att}time_maa_{m}"]) for m in MIX5_ORDER])
    out[f"{att}maa_w1"] = np.ascontiguousarray(t[f"{att}time_maa_w1"].T)  # [5*D1, C]
    w2 = t[f"{att}time_maa_w2"]  # [5, D1, C] -> five [C, D1] blocks
    out[f"{att}maa_w2"] = np.ascontiguousarray(w2.transpose(0, 2, 1).reshape(-1, w2.shape[1]))
    out[f"{att}decay_w1"] = np.ascontiguousarray(t[f"{att}time_decay_w1"].T)  # [D2, C]
    out[f"{att}decay_w2"] = np.ascontiguousarray(t[f"{att}time_decay_w2"].T)  # [C, D2]
    out[f"{att}decay"] = flat(t[f"{att}time_decay"])
    out[f"{att}u"] = flat(t[f"{att}time_faaaa"])
    out[f"{att}rkv"] = np.concatenate([t[f"{att}{m}.weight"] for m in ("receptance", "key", "value")])
    out[f"{att}gate"] = t[f"{att}gate.weight"]
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i, w, grp = layer.ops, layer.ops.ws, layer.i, layer.w, layer.group
    d1 = w("att.maa_w1").shape[0] // 5
    d2 = w("att.decay_w1").shape[0]
    lo = layer.layout
    return [
        layer.ln_mix("att", "att.mu_x", delta=True),
        *ops.matmul(f"{i}.maa_w1", ws.mix, w("att.maa_w1"), ws.lora, y_row=5 * d1, act="tanh"),
        *ops.matmul(f"{i}.maa_w2", ws.lora, w("att.maa_w2"), ws.m6, groups=5, x_row=5 * d1, x_group=d1),
        ops.mix6(w("att.maa5")),
        *ops.matmul(f"{i}.rkv", ws.mix, w("att.rkv"), ws.rkv, groups=3),
        *ops.matmul(f"{i}.gate", ws.mix, w("att.gate"), ws.gate, x_base=grp(G), act="silu"),
        *ops.matmul(f"{i}.decay_w1", ws.mix, w("att.decay_w1"), ws.lora, x_base=grp(W), y_row=d2, act="tanh"),
        *ops.matmul(f"{i}.decay_w2", ws.lora, w("att.decay_w2"), ws.decay, x_row=d2, bias=w("att.decay")),
        ops.wkv6(
            i, ws.decay, True, w("att.u"), w("att.ln_x"), layer.state, lo.size, lo.recurrent,
            layer.info.head_size, gate=True,
        ),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True),
    ]  # fmt: skip


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer), finish_layer(layer)]


def lora_width(t: dict[str, np.ndarray]) -> int:
    """The widest LoRA hidden layer: time_maa_w1's 5 x D1 outputs, or time_decay_w1's D2."""
    widths = [t[k].shape[1] for k in t if k.endswith(("att.time_maa_w1", "att.time_decay_w1"))]
    return max(widths)
