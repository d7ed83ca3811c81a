"""RWKV-6 "Finch": data-dependent token shift and decay (LoRA), per-head matrix state.

Per layer, seven dispatches: the mix LoRA's first stage from the token-shifted LayerNorm input;
its second stage with the five mixes as epilogue; r, k, v, the gate and the decay LoRA's first
stage in one dispatch; wkv (with the decay LoRA's second stage, group norm and gate); output +
residual; the channel mix's key and receptance; its value. Steps over 8 tokens run wkv as three
(the decay for every token, the state update alone, then norm and gate for every token).
"""

from __future__ import annotations

import numpy as np

from backend.gpu.models.layers import Layer, channel_mix_v4, flat, ln_params, pad_rows, prepare_ffn_v4
from backend.gpu.ops import Dispatch, Segment

MIX5_ORDER = ("r", "k", "v", "g", "w")  # mix buffer groups after the mix LoRA
PERM = (3, 1, 2, 4, 0)  # the reference's LoRA blocks come as (w, k, v, r, g): block of each mix above
R, K, V, G, W = range(5)


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = prepare_ffn_v4(t, p, maa=True)
    out[f"{att}ln"] = ln_params(t, p, "ln1", [t[f"{att}time_maa_x"]])
    w1 = t[f"{att}time_maa_w1"]  # [C, 5 * D1], blocks in the reference's order
    d1 = w1.shape[1] // 5
    out[f"{att}maa_w1"] = np.ascontiguousarray(np.concatenate([w1[:, b * d1 : (b + 1) * d1].T for b in PERM]))
    w2 = t[f"{att}time_maa_w2"]  # [5, D1, C] -> five [C, D1] blocks in mix order
    out[f"{att}maa_w2"] = np.ascontiguousarray(np.concatenate([w2[b].T for b in PERM]))
    out[f"{att}maa5"] = np.concatenate([flat(t[f"{att}time_maa_{m}"]) for m in MIX5_ORDER])
    decay_w1 = pad_rows(np.ascontiguousarray(t[f"{att}time_decay_w1"].T))  # [D2 (padded), C]
    names = ("receptance", "key", "value", "gate")
    out[f"{att}proj"] = np.concatenate([*(t[f"{att}{m}.weight"] for m in names), decay_w1])
    out[f"{att}decay_w2"] = np.ascontiguousarray(pad_rows(t[f"{att}time_decay_w2"]).T)  # [C, D2 (padded)] (see v7)
    out[f"{att}decay"] = flat(t[f"{att}time_decay"])
    out[f"{att}u"] = flat(t[f"{att}time_faaaa"])
    out[f"{att}output"] = t[f"{att}output.weight"]
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    return out


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    c, tc = layer.info.n_embd, ops.t_max * layer.info.n_embd
    d1 = w("att.maa_w1").shape[0] // 5
    d2 = w("att.decay_w2").shape[1]
    proj = [Segment(c, g, g * tc, c) for g in (R, K, V)] + [
        Segment(c, G, 3 * tc, c, "silu"),
        Segment(d2, W, ws.lora_base, d2, "tanh"),  # the decay LoRA's hidden layer, after r, k, v, g
    ]
    lo = layer.layout
    return [
        *ops.matmul(f"{i}.maa_w1", ws.mix, w("att.maa_w1"), ws.lora, y_row=5 * d1, act="tanh",
                    ln=layer.ln_input("att", delta=True), small=True),
        *ops.matmul(f"{i}.maa_w2", ws.lora, w("att.maa_w2"), ws.mix, groups=5, x_row=5 * d1, x_group=d1,
                    bias=w("att.maa5"), mix_delta=(ws.ln_att, ws.delta)),
        *ops.matmul(f"{i}.proj", ws.mix, w("att.proj"), ws.rkv, segments=proj),
        *ops.wkv6(
            i, w("att.decay"), w("att.decay_w2"), w("att.u"), w("att.ln_x"), layer.state, lo.size, lo.recurrent,
            layer.info.head_size, gate=True,
        ),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True, store_prev=layer.store_prev("att")),
    ]  # fmt: skip


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix_v4(layer)]


def lora_width(t: dict[str, np.ndarray]) -> int:
    """Floats per token of the LoRA scratch: time_maa_w1's 5 x D1 hidden outputs."""
    return max(t[k].shape[1] for k in t if k.endswith("att.time_maa_w1"))


def decay_width(t: dict[str, np.ndarray]) -> int:
    """Floats per token of the decay LoRA's hidden layer (padded like its rows)."""
    return max(-(-t[k].shape[1] // 64) * 64 for k in t if k.endswith("att.time_decay_w1"))
