"""RWKV-7 "Goose" (x070): time mix with the generalised delta rule, squared-ReLU channel mix.

Per layer, in the paper's letters: r, w, k, v, a, g from token-shifted inputs; w, a, v-mix
and g through low-rank (LoRA) maps; the wkv7 kernel does kk, the state update, group norm,
the r.k bonus and the gate; then the output projection adds into the residual.
"""

from __future__ import annotations

import numpy as np

from backend.gpu.models.layers import Layer, finish_layer, flat, layer_norm, prepare_norms
from backend.gpu.ops import Dispatch

MIX_ORDER = ("x_r", "x_k", "x_v", "x_w", "x_a", "x_g")  # mix buffer groups 0..5
R, K, V, W, A, G = range(6)


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = prepare_norms(t, p)
    out[f"{att}mu"] = np.stack([flat(t[att + m]) for m in MIX_ORDER])
    out[f"{att}rkv"] = np.concatenate([t[f"{att}{m}.weight"] for m in ("receptance", "key", "value")])
    out[f"{att}output"] = t[f"{att}output.weight"]
    for lora in ("w", "a", "v", "g"):
        if i == 0 and lora == "v":
            continue  # layer 0's v is v_first itself
        out[f"{att}{lora}1"] = np.ascontiguousarray(t[f"{att}{lora}1"].T)  # [D, C]
        out[f"{att}{lora}2"] = np.ascontiguousarray(t[f"{att}{lora}2"].T)  # [C, D]
        if lora != "g":
            out[f"{att}{lora}0"] = flat(t[f"{att}{lora}0"])
    c = out[f"{att}mu"].shape[1]
    out[f"{att}params"] = np.stack([flat(t[f"{att}k_k"]), flat(t[f"{att}k_a"]), flat(t[f"{att}r_k"]), np.zeros(c)])
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    out[f"{p}ffn.mu"] = flat(t[f"{p}ffn.x_k"])[None, :]
    out[f"{p}ffn.key"] = t[f"{p}ffn.key.weight"]
    out[f"{p}ffn.value"] = t[f"{p}ffn.value.weight"]
    if f"{p}ffn.s_emb.weight" in t:
        out |= prepare_deep_embed(t, p)
    return out


def prepare_deep_embed(t: dict[str, np.ndarray], p: str) -> dict[str, np.ndarray]:
    """DeepEmbed: as the reference does at load, fold ln0(emb) @ s_emb_x.T into each token's s_emb row."""
    emb = layer_norm(t["emb.weight"], t["blocks.0.ln0.weight"], t["blocks.0.ln0.bias"])
    return {
        f"{p}ffn.s_emb": t[f"{p}ffn.s_emb.weight"] + emb @ t[f"{p}ffn.s_emb_x.weight"].T,  # [V, 32 * 32]
        f"{p}ffn.s1": np.ascontiguousarray(t[f"{p}ffn.s1"].T),  # [32, C]
        f"{p}ffn.s2": np.ascontiguousarray(t[f"{p}ffn.s2"].T),  # [F, 32]
        f"{p}ffn.s0": flat(t[f"{p}ffn.s0"]),
    }


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i = layer.ops, layer.ops.ws, layer.i
    w = layer.w
    grp = layer.group

    def lora(name: str, source: int, target, act1: str | None, act2: str | None, bias: bool) -> list[Dispatch]:
        d = w(f"att.{name}1").shape[0]
        return [
            *ops.matmul(f"{i}.{name}1", ws.mix, w(f"att.{name}1"), ws.lora, x_base=grp(source), y_row=d, act=act1),
            *ops.matmul(
                f"{i}.{name}2", ws.lora, w(f"att.{name}2"), target, x_row=d, act=act2,
                bias=w(f"att.{name}0") if bias else None,
            ),
        ]  # fmt: skip

    steps = [
        layer.ln_mix("att", "att.mu"),
        *ops.matmul(f"{i}.rkv", ws.mix, w("att.rkv"), ws.rkv, groups=3),
        *lora("w", W, ws.decay, "tanh", None, bias=True),
        *lora("a", A, ws.a, None, "sigmoid", bias=True),
    ]
    if i > 0:
        steps += lora("v", V, ws.v_gate, None, "sigmoid", bias=True)
    steps += lora("g", G, ws.gate, "sigmoid", None, bias=False)
    steps += [
        ops.wkv7(i, w("att.params"), w("att.ln_x"), layer.state, layer.layout.size, layer.layout.recurrent),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True),
    ]
    return steps


def channel_mix(layer: Layer) -> list[Dispatch]:
    """x += relu(xk @ K)^2 @ V; DeepEmbed scales the key by ((xx @ s1) @ s_emb[token]) @ s2 + s0."""
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    f = layer.info.n_ffn
    steps = [layer.ln_mix("ffn", "ffn.mu")]
    scale = None
    if layer.info.deep_embed:
        scale = ws.ffn_scale
        steps += [
            *ops.matmul(f"{i}.ffn.s1", ws.ln_ffn, w("ffn.s1"), ws.lora, y_row=32),
            ops.deep_embed(i, w("ffn.s_emb")),
            *ops.matmul(f"{i}.ffn.s2", ws.deep, w("ffn.s2"), scale, bias=w("ffn.s0")),
        ]
    return [
        *steps,
        *ops.matmul(f"{i}.ffn.key", ws.mix, w("ffn.key"), ws.ffn_k, act="relu_sq", mul=scale),
        *ops.matmul(f"{i}.ffn.value", ws.ffn_k, w("ffn.value"), ws.x, x_row=f, add=True),
    ]


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix(layer), finish_layer(layer)]


def lora_width(t: dict[str, np.ndarray]) -> int:
    return max(t[k].shape[1] for k in t if k.endswith(("att.w1", "att.a1", "att.v1", "att.g1")))
