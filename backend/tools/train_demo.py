"""Train the demo model: a tiny RWKV-7 (x070) on the corpus of `backend.tools.corpus`, in torch (the `convert` extra).

    python -m backend.tools.train_demo --data data/demo-corpus --out OUT [--minutes 4 | --steps N]
        [--layers 4] [--embd 256] [--vocab-rows 24576] [--ctx 512] [--batch 64] [--summary summary.json]

Writes OUT/demo-rwkv7-tiny.pth (official names and shapes, f32: what BlinkDL's `rwkv` package loads),
OUT/demo-rwkv7-tiny.st (our converter's AI00 layout, fp16) and OUT/demo-rwkv7-tiny.st.xz (what the repository
keeps), and prints the loss curve, the held-out perplexity and a unigram baseline's on the same tokens.

Two choices keep the committed file small:
* Only the `vocab-rows` most frequent tokens of the corpus get embedding rows; the others' rows stay zero, so
  their logit is exactly 0. Training uses the same model: the loss appends one logit log(n_zero_rows) for the
  rows that are zero (their pooled probability), so the training loss is the full-vocabulary loss.
* The head is tied to the embedding (`head.weight` equals `emb.weight`), and the two are adjacent in the file:
  xz (64 MiB dictionary) stores the second as a repeat of the first.

The time mix is the paper's recurrence, state S [value, key] per head:
    S_t = S_{t-1} (diag(w_t) + a_t b_t^T) + v_t k_t^T,   y_t = S_t r_t,   a = -kk, b = kk * iclr
computed in chunks of 16 steps (`wkv7`); `wkv7_serial` is the step-by-step form the tests hold it to.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.gpu.loader import canonical_shapes, iter_model
from backend.gpu.models.info import ModelInfo, Version
from backend.tools.convert import save_st
from backend.tools.demo_model import DEMO_MODEL_NAME, default_lora, save_pth

VOCAB = 65536
DECAY_SCALE = math.exp(-0.5)  # per-step decay w = exp(-e^-0.5 * sigmoid(.)), as the reference computes it
NAME = DEMO_MODEL_NAME.removesuffix(".st")


@dataclass(frozen=True)
class TrainConfig:
    layers: int = 4
    embd: int = 256
    head_size: int = 64
    vocab_rows: int = 24576  # embedding rows kept (most frequent tokens first); 0: all 65536
    ctx: int = 512
    batch: int = 64
    steps: int = 0  # 0: as many as fit in `minutes`
    minutes: float = 4.0
    lr: float = 2e-3
    lr_final: float = 1e-4
    warmup: int = 60
    weight_decay: float = 0.1
    seed: int = 24
    chunk: int = 16
    eval_every: int = 100

    def info(self) -> ModelInfo:
        return ModelInfo(version=Version.V7, n_layer=self.layers, n_embd=self.embd, n_vocab=VOCAB,
                         n_ffn=4 * self.embd, head_size=self.head_size)  # fmt: skip


# --- the model ------------------------------------------------------------------------------------------------


def wkv7_serial(r, log_w, k, v, a, b, state=None):
    """The recurrence step by step ([B, T, H, N] f32 inputs; state [B, H, N(value), N(key)]): the definition."""
    B, T, H, N = r.shape
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device) if state is None else state
    ys = []
    for t in range(T):
        w = log_w[:, t].exp()  # [B, H, N]
        Sa = (S @ a[:, t, :, :, None]).squeeze(-1)  # [B, H, N]: S a
        S = S * w[:, :, None, :] + Sa[..., None] * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, 1), S


def wkv7(r, log_w, k, v, a, b, chunk=16, state=None):
    """The same recurrence in chunks of `chunk` steps: within a chunk every step is solved at once, and only the
    state passes serially from chunk to chunk. With W_t = prod_{s<=t} w_s and u_t = S_{t-1} a_t:

        u_t = S_0 (W_{t-1} a_t) + sum_{s<t} [u_s (b_s W_{t-1}/W_s) + v_s (k_s W_{t-1}/W_s)] . a_t
        y_t = S_0 (W_t r_t)     + sum_{s<=t} [u_s (b_s W_t/W_s)     + v_s (k_s W_t/W_s)] . r_t

    The first is a unit-triangular system in the u's, so y = S_0 E + F and S_L = S_0 G + H per chunk, with
    E, F, G, H computed for all chunks in parallel. Per-step decay w >= exp(-e^-0.5) keeps 1/W_t below 2e4 in
    a chunk of 16, so f32 holds the factored products."""
    B, T, H, N = r.shape
    L = chunk
    pad = -T % L
    if pad:  # padded steps: no decay, no input, outputs dropped
        r, log_w, k, v, a, b = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (r, log_w, k, v, a, b))
    C = (T + pad) // L

    def chunks(x):  # [B, T, H, N] -> [B, H, C, L, N]
        return x.view(B, C, L, H, N).permute(0, 3, 1, 2, 4)

    r, log_w, k, v, a, b = map(chunks, (r, log_w, k, v, a, b))
    cum = log_w.cumsum(-2)  # log W_t
    last = cum[..., -1:, :]  # log W_L
    a_ = a * (cum - log_w).exp()  # a_t W_{t-1}
    r_ = r * cum.exp()  # r_t W_t
    b_in, k_in = b * (-cum).exp(), k * (-cum).exp()  # b_s / W_s, k_s / W_s
    b_out, k_out = b * (last - cum).exp(), k * (last - cum).exp()  # b_s W_L / W_s, k_s W_L / W_s
    ones = torch.ones(L, L, dtype=torch.bool, device=r.device)
    before, upto = ones.triu(1), ones.triu(0)  # [s, t]: s < t, s <= t
    m_b = (b_in @ a_.mT) * before  # [.., s, t]
    m_k = (k_in @ a_.mT) * before
    q_b = (b_in @ r_.mT) * upto
    q_k = (k_in @ r_.mT) * upto
    inv = unit_triangular_inverse(m_b)  # (I - m_b)^-1
    x = inv.mT @ a_  # [L, N]: u = x S_0^T + u_v
    u_v = inv.mT @ (m_k.mT @ v)  # [L, N]
    e = r_ + q_b.mT @ x  # y = e S_0^T + f
    f = q_b.mT @ u_v + q_k.mT @ v
    g = torch.diag_embed(last.squeeze(-2).exp()) + x.mT @ b_out  # S_L = S_0 g + h
    h = u_v.mT @ b_out + v.mT @ k_out
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device) if state is None else state
    ys = []
    for c in range(C):
        ys.append(e[:, :, c] @ S.mT + f[:, :, c])
        S = S @ g[:, :, c] + h[:, :, c]
    y = torch.stack(ys, 2).permute(0, 2, 3, 1, 4).reshape(B, C * L, H, N)
    return y[:, :T], S


def unit_triangular_inverse(m):
    """(I - m)^-1 for strictly upper-triangular m [.., L, L] (L a power of two): m is nilpotent, so the inverse
    is I + m + m^2 + ... + m^(L-1) = (I + m)(I + m^2)(I + m^4)..., a few matmuls."""
    L = m.shape[-1]
    inv = torch.eye(L, dtype=m.dtype, device=m.device) + m
    p = m
    for _ in range(max(0, int(math.log2(L)) - 1)):
        p = p @ p
        inv = inv + inv @ p
    return inv


def token_shift(x):
    """x_{t-1} for every t, zero before the first token (a window starts from the zero state)."""
    return F.pad(x, (0, 0, 1, -1))


class TimeMix(nn.Module):
    def __init__(self, cfg: TrainConfig, layer: int, lora) -> None:
        super().__init__()
        C, H, N = cfg.embd, cfg.embd // cfg.head_size, cfg.head_size
        self.layer, self.H, self.N = layer, H, N
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, C)))
        for name, rank in (("w", lora.w), ("a", lora.a), ("v", lora.v), ("g", lora.g)):
            setattr(self, f"{name}1", nn.Parameter(torch.zeros(C, rank)))
            setattr(self, f"{name}2", nn.Parameter(torch.zeros(rank, C)))
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance, self.key, self.value, self.output = (nn.Linear(C, C, bias=False) for _ in range(4))
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def forward(self, x, v_first, chunk: int):
        B, T, C = x.shape
        H, N = self.H, self.N
        xx = token_shift(x) - x
        xr, xw, xk, xv, xa, xg = (x + xx * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.receptance(xr)
        log_w = -DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        heads = [t.float().view(B, T, H, N) for t in (r, log_w, k, v)]
        with torch.autocast(x.device.type, enabled=False):  # the factored chunk products need f32 matmuls
            y, _ = wkv7(*heads, -kk.float(), (kk * a.view(B, T, H, N)).float(), chunk=chunk)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C).to(x.dtype)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(B, T, H, N).sum(-1, keepdim=True) * v.view(B, T, H, N)
        return self.output((y + bonus.view(B, T, C)) * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(1, 1, cfg.embd))
        self.key = nn.Linear(cfg.embd, 4 * cfg.embd, bias=False)
        self.value = nn.Linear(4 * cfg.embd, cfg.embd, bias=False)

    def forward(self, x):
        k = x + (token_shift(x) - x) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2)


class Block(nn.Module):
    def __init__(self, cfg: TrainConfig, layer: int, lora) -> None:
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.embd)
        self.ln1, self.ln2 = nn.LayerNorm(cfg.embd), nn.LayerNorm(cfg.embd)
        self.att, self.ffn = TimeMix(cfg, layer, lora), ChannelMix(cfg)

    def forward(self, x, v_first, chunk: int):
        dx, v_first = self.att(self.ln1(x), v_first, chunk)
        x = x + dx
        return x + self.ffn(self.ln2(x)), v_first


class RWKV7(nn.Module):
    """RWKV-7 whose parameter names are the official ones, but with `rows` embedding rows (token ids `keep`),
    tied to the head; every other token's row is zero."""

    def __init__(self, cfg: TrainConfig, keep: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        lora = default_lora(cfg.info())
        self.register_buffer("keep", keep.long(), persistent=False)  # [rows] token ids, ascending
        index = torch.full((VOCAB,), len(keep), dtype=torch.long)
        index[keep.long()] = torch.arange(len(keep))
        self.register_buffer("index", index, persistent=False)  # token id -> row, len(keep) for a zero row
        self.emb = nn.Embedding(len(keep), cfg.embd)
        self.blocks = nn.ModuleList(Block(cfg, i, lora) for i in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.embd)
        self.zero_rows = VOCAB - len(keep)
        init_weights(self, cfg)

    def hidden(self, idx):
        """[B, T] token ids -> [B, T, C], the input of the head."""
        rows = self.index[idx]
        table = F.pad(self.emb.weight, (0, 0, 0, 1))  # the last row: every token without a row of its own
        x = self.blocks[0].ln0(F.embedding(rows, table))
        v_first = None
        for block in self.blocks:
            x, v_first = block(x, v_first, self.cfg.chunk)
        return self.ln_out(x)

    def row_logits(self, idx):
        """[B, T, rows + 1]: the kept rows' logits, then log(zero rows), their pooled logit (each is 0)."""
        logits = (self.hidden(idx) @ self.emb.weight.mT).float()
        pooled = torch.full_like(logits[..., :1], math.log(self.zero_rows)) if self.zero_rows else logits[..., :0]
        return torch.cat([logits, pooled], -1)

    def loss(self, idx, targets):
        """Mean next-token cross-entropy over the whole 65536-token vocabulary, in nats."""
        logits = self.row_logits(idx)
        rows = self.index[targets]
        ce = F.cross_entropy(logits.flatten(0, 1), rows.flatten(), reduction="none")
        if self.zero_rows:  # a zero-row target has logit 0, not log(zero_rows)
            ce = ce + (rows.flatten() == len(self.keep)) * math.log(self.zero_rows)
        return ce.mean()

    def full_logits(self, idx):
        """[B, T, 65536] logits as the exported model computes them."""
        out = torch.zeros(*idx.shape, VOCAB, device=idx.device)
        out[..., self.keep] = self.row_logits(idx)[..., : len(self.keep)]
        return out


def init_weights(model: RWKV7, cfg: TrainConfig) -> None:
    """Residual branches start at zero (output projections and second LoRA stages), so the model starts as
    its embedding; token-shift mixes ramp over channels and shrink with depth; decay rates span slow to fast
    within every head."""
    g = torch.Generator().manual_seed(cfg.seed)
    C, L = cfg.embd, cfg.layers

    def normal(p, std):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * std)

    normal(model.emb.weight, 0.5 / math.sqrt(C))
    ramp = torch.arange(C) / C  # 0 .. 1 over the channels
    for i, block in enumerate(model.blocks):
        att, ffn = block.att, block.ffn
        depth = 1 - i / L  # 1 in the first layer
        with torch.no_grad():
            for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
                getattr(att, name).copy_(1 - ramp.pow(p * depth))
            ffn.x_k.copy_(1 - ramp.pow(depth**4))
            att.w0.copy_(torch.linspace(-6.0, 1.0, cfg.head_size).repeat(C // cfg.head_size) + 0.5)
            att.a0.zero_()
            att.v0.fill_(1.0)
            att.k_k.fill_(0.85)
            att.k_a.fill_(1.0)
            for m in (att.w2, att.a2, att.v2, att.r_k, att.output.weight, ffn.value.weight):
                m.zero_()
        for m in (att.w1, att.a1, att.v1, att.g1):
            normal(m, 0.5 / math.sqrt(C))
        normal(att.g2, 1 / math.sqrt(att.g2.shape[0]))
        for lin in (att.receptance, att.key, att.value, ffn.key):
            normal(lin.weight, 1 / math.sqrt(C))


# --- data -----------------------------------------------------------------------------------------------------


def load_tokens(data: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(data / "train.npy"), np.load(data / "heldout.npy")


def kept_rows(train: np.ndarray, rows: int) -> torch.Tensor:
    """The ids of the `rows` most frequent tokens (all 65536 when rows is 0), ascending."""
    counts = np.bincount(train, minlength=VOCAB)
    if not rows:
        return torch.arange(VOCAB)
    return torch.from_numpy(np.sort(np.argsort(-counts, kind="stable")[:rows]))


def unigram_perplexity(train: np.ndarray, heldout: np.ndarray) -> float:
    """The baseline: each held-out token's add-one-smoothed frequency in the training tokens."""
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[heldout[1:]].mean()))  # the model never predicts the first token either


def batches(train: np.ndarray, cfg: TrainConfig, device: torch.device):
    """Random windows of ctx + 1 tokens, drawn with the seeded generator."""
    data = torch.from_numpy(train.astype(np.int64))
    g = torch.Generator().manual_seed(cfg.seed)
    span = torch.arange(cfg.ctx + 1)
    while True:
        starts = torch.randint(0, len(data) - cfg.ctx - 1, (cfg.batch,), generator=g)
        w = data[starts[:, None] + span].to(device, non_blocking=True)
        yield w[:, :-1], w[:, 1:]


@torch.no_grad()
def heldout_loss(model: RWKV7, heldout: np.ndarray, ctx: int, device: torch.device, batch: int = 32) -> float:
    """Mean loss over consecutive windows of ctx + 1 tokens, each from the zero state."""
    data = torch.from_numpy(heldout.astype(np.int64))
    n = (len(data) - 1) // ctx
    windows = torch.stack([data[i * ctx : i * ctx + ctx + 1] for i in range(n)])
    total = 0.0
    for i in range(0, n, batch):
        w = windows[i : i + batch].to(device)
        with autocast(device):
            total += model.loss(w[:, :-1], w[:, 1:]).item() * len(w)
    return total / n


def autocast(device: torch.device):
    """bf16 matmuls on a GPU; f32 on the CPU (the tests compare logits there)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


# --- training -------------------------------------------------------------------------------------------------


def optimizer(model: RWKV7, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on the big matrices (not the embedding, norms, mixes or decay rates)."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and n.endswith(".weight") and "emb" not in n]
    other = [p for p in model.parameters() if all(p is not q for q in decay)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8, fused=fused)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine down to lr_final at `total`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * done))


def train(cfg: TrainConfig, train_tokens: np.ndarray, heldout: np.ndarray, device: torch.device,
          log=print) -> tuple[RWKV7, dict]:  # fmt: skip
    """Train from the seed; with steps=0 the step count is fitted to `minutes` after timing 20 steps."""
    torch.manual_seed(cfg.seed)
    model = RWKV7(cfg, kept_rows(train_tokens, cfg.vocab_rows)).to(device)
    opt = optimizer(model, cfg)
    total = cfg.steps or 10**9
    curve, evals = [], []
    stream = batches(train_tokens, cfg, device)
    t0 = time.perf_counter()
    step = 0
    while step < total:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, total, cfg)
        x, y = next(stream)
        with autocast(device):
            loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if not cfg.steps and time.perf_counter() - t0 > cfg.minutes * 60:
            total = step  # held-out evaluations took the time the step count did not plan for
        if step == 5:  # the first steps pay for CUDA's start-up: time from here
            synchronize(device)
            t5 = time.perf_counter()
        if step == 25 and not cfg.steps:
            synchronize(device)
            per_step = (time.perf_counter() - t5) / 20
            total = max(cfg.warmup + 1, int((cfg.minutes * 60 - (time.perf_counter() - t0)) / per_step) + step)
            log(f"{per_step * 1000:.1f} ms/step, {cfg.batch * cfg.ctx / per_step:,.0f} tokens/s: {total} steps")
        if step % 10 == 0 or step == total:
            curve.append((step, loss.item()))
        if step % cfg.eval_every == 0 or step == total:
            evals.append((step, heldout_loss(model, heldout, cfg.ctx, device)))
            if evals[-1][1] <= min(e for _, e in evals):  # keep the best: many epochs of a small corpus
                best = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            log(f"step {step:5d}  loss {curve[-1][1]:.3f}  held-out {evals[-1][1]:.3f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {time.perf_counter() - t0:6.1f} s")  # fmt: skip
    seconds = time.perf_counter() - t0
    best_step, weights = best
    model.load_state_dict(weights)
    held = min(e for _, e in evals)
    return model, {
        "config": asdict(cfg),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": step,
        "best_step": best_step,
        "epochs": round(step * cfg.batch * cfg.ctx / train_tokens.size, 2),
        "train_tokens_seen": step * cfg.batch * cfg.ctx,
        "corpus_train_tokens": int(train_tokens.size),
        "heldout_tokens": int(heldout.size),
        "kept_rows": len(model.keep),
        "seconds": round(seconds, 1),
        "loss_curve": curve,
        "heldout_curve": evals,
        "heldout_loss": held,
        "heldout_perplexity": math.exp(held),
        "unigram_perplexity": unigram_perplexity(train_tokens, heldout),
    }


# --- export ---------------------------------------------------------------------------------------------------


def export_official(model: RWKV7) -> dict[str, np.ndarray]:
    """The official names and shapes, f32, with full 65536-row embedding and head (zero where no row)."""
    cfg = model.cfg
    emb = torch.zeros(VOCAB, cfg.embd)
    emb[model.keep.cpu()] = model.emb.weight.detach().float().cpu()
    out = {"emb.weight": emb}
    for name, p in model.state_dict().items():
        if name != "emb.weight":
            out[name] = p.detach().float().cpu()
    out["head.weight"] = emb
    shapes = canonical_shapes(cfg.info(), default_lora(cfg.info()))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(s) for k, s in shapes.items()}, "layout"
    return {name: out[name].numpy() for name in shapes}  # the canonical order


def load_official(tensors: dict[str, np.ndarray], **overrides) -> RWKV7:
    """A model in the official layout (head tied to emb, as `export_official` writes it) back as a training
    model: rows are the tokens whose embedding is not all zero."""
    emb = torch.from_numpy(np.asarray(tensors["emb.weight"], np.float32))
    n_head, head_size = tensors["blocks.0.att.r_k"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("blocks."))
    cfg = TrainConfig(layers=layers, embd=n_head * head_size, head_size=head_size, **overrides)
    keep = torch.nonzero(emb.abs().sum(1)).squeeze(1)
    model = RWKV7(cfg, keep)
    weights = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in tensors.items() if k != "head.weight"}
    weights["emb.weight"] = emb[keep]
    model.load_state_dict(weights)
    return model


def write_model(model: RWKV7, out: Path, metadata: dict[str, str]) -> dict[str, Path]:
    """.pth (official, f32), .st (converted to AI00's layout, fp16) and .st.xz of the .st."""
    out.mkdir(parents=True, exist_ok=True)
    pth = save_pth(export_official(model), out / f"{NAME}.pth")
    info, tensors = iter_model(pth)  # our converter's reader, as `ai00-convert --input .pth` runs it
    st = save_st(tensors, out / f"{NAME}.st", layout="ai00", dtype=np.float16, info=info, metadata=metadata)
    xz = out / f"{NAME}.st.xz"
    xz.write_bytes(lzma.compress(st.read_bytes(), preset=9))  # 64 MiB dictionary: head repeats emb
    return {"pth": pth, "st": st, "xz": xz}


@torch.no_grad()
def greedy(model: RWKV7, prompt: list[int], n: int, device: torch.device) -> list[int]:
    """n tokens by argmax, re-running the window each time (a look at the model, not a server)."""
    ids = list(prompt)
    for _ in range(n):
        x = torch.tensor([ids[-model.cfg.ctx :]], device=device)
        with autocast(device):
            ids.append(int(model.full_logits(x)[0, -1].argmax()))
    return ids[len(prompt) :]


def show_samples(model: RWKV7, device: torch.device, n: int, log=print) -> None:
    try:
        from backend.tokenizer import Tokenizer
    except ImportError:  # `tokenizers` missing: no samples, the model is written all the same
        return
    tok = Tokenizer.from_file()
    for prompt in ("User: What is a dog?\n\nAssistant:", "In the beginning", "The Python tutorial"):
        text = tok.decode(greedy(model, tok.encode(prompt), n, device))
        log(f"{prompt!r} -> {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the corpus folder (train.npy, heldout.npy)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path, help="JSON summary: losses, perplexities, tokens, seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=40, help="tokens of greedy text to print per prompt")
    for field, default in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    device = torch.device(args.device)
    train_tokens, heldout = load_tokens(args.data)
    print(f"corpus: {train_tokens.size:,} training tokens, {heldout.size:,} held out; {cfg}")
    model, summary = train(cfg, train_tokens, heldout, device)
    print(f"held-out perplexity {summary['heldout_perplexity']:.2f} (unigram {summary['unigram_perplexity']:.1f}) "
          f"at step {summary['best_step']} of {summary['steps']}, {summary['train_tokens_seen']:,} tokens, "
          f"{summary['seconds']} s on {summary['device']}")  # fmt: skip
    if args.samples:
        show_samples(model, device, args.samples)
    note = (
        f"trained demo: RWKV-7 {cfg.layers}x{cfg.embd} on public-domain/DFSG-free text from Debian packages; "
        f"held-out perplexity {summary['heldout_perplexity']:.2f} (unigram {summary['unigram_perplexity']:.1f})"
    )
    figures = ("heldout_loss", "heldout_perplexity", "unigram_perplexity", "steps", "best_step", "train_tokens_seen",
               "corpus_train_tokens", "heldout_tokens", "kept_rows", "seconds", "device")  # fmt: skip
    metadata = {"note": note, "training": json.dumps(summary["config"]),
                "summary": json.dumps({k: summary[k] for k in figures})}  # fmt: skip
    files = write_model(model, args.out, metadata)
    summary["files"] = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items()}
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
