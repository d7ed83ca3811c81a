"""RWKV-7 "Goose" (x070): time mix with the generalised delta rule, squared-ReLU channel mix.

Per layer, in the paper's letters: r, k, v in one dispatch from the token-shifted LayerNorm input;
the first stages of the w, a, v-mix and g LoRAs in another (kept in f32 and never quantized: NF4
on those rows moved the logits more than on r, k, v); the wkv7 kernel does the LoRAs' second
stages, kk, the state update, group norm, the r.k bonus and the gate; then the output projection
adds into the residual; the channel mix is its key (from its own LayerNorm input) and value.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backend.gpu.models.layers import Layer, flat, layer_norm, ln_params
from backend.gpu.ops import Dispatch, Segment

MIX_ORDER = ("x_r", "x_k", "x_v", "x_w", "x_a", "x_g")  # mix groups 0..5
R, K, V, W, A, G = range(6)
LORAS = (("w", W, "tanh"), ("a", A, None), ("v", V, None), ("g", G, "sigmoid"))  # first stage: input, act


def loras_of(i: int) -> tuple[tuple[str, int, str | None], ...]:
    """Layer 0 has no v LoRA: its v is v_first itself."""
    return tuple(lora for lora in LORAS if i > 0 or lora[0] != "v")


def prepare_layer(t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    p = f"blocks.{i}."
    att = f"{p}att."
    out = {f"{att}ln": ln_params(t, p, "ln1", [t[att + m] for m in MIX_ORDER])}
    out[f"{att}proj"] = np.concatenate([t[f"{att}{m}.weight"] for m in ("receptance", "key", "value")])
    # the LoRAs' first stages stacked: [Dw + Da (+ Dv) + Dg, C]
    out[f"{att}lora1"] = np.concatenate([t[f"{att}{name}1"].T for name, _, _ in loras_of(i)])
    # second stages per channel: row c holds w2[:, c], a2[:, c], (v2[:, c],) g2[:, c]. Each lane reads its own
    # row (contiguous, so it can load several floats at once); the [D, C] layout, lanes reading one row
    # together, made decode's wkv7 ~1.7x slower on the H200 (bench/NOTES.md entry 14)
    out[f"{att}lora2"] = np.ascontiguousarray(np.concatenate([t[f"{att}{name}2"].T for name, _, _ in loras_of(i)], 1))
    out[f"{att}output"] = t[f"{att}output.weight"]
    c = t[f"{att}x_r"].size
    zeros = np.zeros(c, np.float32)
    biases = [flat(t[f"{att}w0"]), flat(t[f"{att}a0"]), flat(t[f"{att}v0"]) if i > 0 else zeros]
    out[f"{att}params"] = np.stack([flat(t[f"{att}k_k"]), flat(t[f"{att}k_a"]), flat(t[f"{att}r_k"]), *biases])
    out[f"{att}ln_x"] = np.stack([flat(t[f"{att}ln_x.weight"]), flat(t[f"{att}ln_x.bias"])])
    out[f"{p}ffn.ln"] = ln_params(t, p, "ln2", [t[f"{p}ffn.x_k"]])
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


def lora_sizes(layer: Layer) -> list[int]:
    """Hidden widths of this layer's LoRAs, in LORAS order."""
    return [layer.shape(f"att.{name}1")[1] for name, _, _ in loras_of(layer.i)]


def time_mix(layer: Layer) -> list[Dispatch]:
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    c, tc = layer.info.n_embd, ops.t_max * layer.info.n_embd
    proj = [Segment(c, g, g * tc, c) for g in (R, K, V)]
    first, hidden = [], ws.lora_base  # the LoRAs' hidden layers sit after r, k, v (and v6's g) in ws.rkv
    sizes = lora_sizes(layer)
    for (_, source, act), d in zip(loras_of(i), sizes, strict=True):
        first.append(Segment(d, source, hidden, ws.hidden_width, act))
        hidden += d
    ln = layer.ln_input("att")
    return [
        *ops.matmul(f"{i}.proj", ws.mix, w("att.proj"), ws.rkv, segments=proj, ln=ln),
        *ops.matmul(f"{i}.lora1", ws.mix, w("att.lora1"), ws.rkv, segments=first, ln=replace(ln, out_written=True),
                    small=True),
        *ops.wkv7(i, w("att.params"), w("att.ln_x"), w("att.lora2"), sizes, layer.state, layer.layout),
        *ops.matmul(f"{i}.output", ws.att_out, w("att.output"), ws.x, add=True, store_prev=layer.store_prev("att")),
    ]


def channel_mix(layer: Layer) -> list[Dispatch]:
    """x += relu(xk @ K)^2 @ V; DeepEmbed scales the key by ((xx @ s1) @ s_emb[token]) @ s2 + s0."""
    ops, ws, i, w = layer.ops, layer.ops.ws, layer.i, layer.w
    f = layer.info.n_ffn
    ln = layer.ln_input("ffn")
    steps, scale = [], None
    if layer.info.deep_embed:  # s1 reads xx itself, so the LayerNorm runs on its own first
        scale = ws.ffn_scale
        steps += [
            ops.ln_mix(f"{i}.ffn.ln_mix", ln, ws.mix),
            *ops.matmul(f"{i}.ffn.s1", ws.ln_ffn, w("ffn.s1"), ws.lora, y_row=32),
            ops.deep_embed(i, w("ffn.s_emb")),
            *ops.matmul(f"{i}.ffn.s2", ws.deep, w("ffn.s2"), scale, bias=w("ffn.s0")),
        ]
    return [
        *steps,
        *ops.matmul(f"{i}.ffn.key", ws.mix, w("ffn.key"), ws.ffn_k, act="relu_sq", mul=scale,
                    ln=None if scale else ln),
        *ops.matmul(f"{i}.ffn.value", ws.ffn_k, w("ffn.value"), ws.x, x_row=f, add=True,
                    store_prev=layer.store_prev("ffn")),
    ]  # fmt: skip


def layer_ops(layer: Layer) -> list[Dispatch]:
    return [*time_mix(layer), *channel_mix(layer)]


def lora_width(t: dict[str, np.ndarray]) -> int:
    """Floats per token of the LoRAs' hidden layers side by side, widest layer."""
    widths: dict[str, int] = {}
    for k, a in t.items():
        if k.endswith(("att.w1", "att.a1", "att.v1", "att.g1")):
            layer = k.split(".")[1]
            widths[layer] = widths.get(layer, 0) + a.shape[1]
    return max(widths.values())
