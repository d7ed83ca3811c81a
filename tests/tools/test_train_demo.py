"""The demo model's training script on the CPU: its chunked recurrence is the step-by-step one, its loss over kept
rows is the full-vocabulary loss, and a tiny run lowers the loss and writes files that the reference (BlinkDL's
`rwkv`) and our engine read alike."""

from __future__ import annotations

import json
import lzma
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.gpu.engine import Engine
from backend.gpu.loader import read_model, read_model_pth
from backend.tokenizer import END_OF_TEXT, Tokenizer
from backend.tools import train_demo
from backend.tools.demo_model import save_pth
from backend.tools.logits import logits_for
from backend.tools.train_demo import DECAY_SCALE, RWKV7, TrainConfig, load_official, wkv7, wkv7_serial
from tests.oracle import reference

F32_TOL = 1e-3  # max |Δ| <= F32_TOL * max(1, |reference|), as in tests/engine
TINY = ["--layers", "2", "--embd", "64", "--ctx", "32", "--batch", "8", "--warmup", "5", "--eval-every", "10"]


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    excess = np.abs(ours - ref) - F32_TOL * np.maximum(1.0, np.abs(ref))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess.max() <= 0, f"{what}: ours {ours[worst]:.6g}, reference {ref[worst]:.6g} at {worst}"


def recurrence_inputs(B: int, T: int, H: int, N: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    log_w = -DECAY_SCALE * torch.rand(B, T, H, N, generator=g)  # every decay the model can make
    kk = F.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    rate = torch.rand(B, T, H, N, generator=g)
    return [r, log_w, 0.3 * k, v, -kk, kk * rate]


@pytest.mark.parametrize("T", [16, 37])
def test_chunked_wkv7_is_the_step_by_step_recurrence(T: int) -> None:
    inputs = recurrence_inputs(2, T, 2, 64)
    state = torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(1))
    for s0 in (None, state):
        y_ref, s_ref = wkv7_serial(*inputs, state=s0)
        y, s = wkv7(*inputs, chunk=16, state=s0)
        scale = y_ref.abs().max()
        assert (y - y_ref).abs().max() <= 1e-5 * scale and (s - s_ref).abs().max() <= 1e-5 * s_ref.abs().max()


def test_loss_over_kept_rows_is_the_cross_entropy_over_all_65536_tokens() -> None:
    torch.manual_seed(0)
    keep = torch.tensor([0, 11, 33, 300, 4000, 65000])
    model = RWKV7(TrainConfig(layers=1, embd=64, ctx=8), keep)
    x = torch.tensor([[0, 11, 33, 300, 4000, 65000, 7, 8]])  # 7 and 8 have no row of their own
    y = torch.tensor([[11, 33, 7, 4000, 65000, 0, 8, 300]])
    full = F.cross_entropy(model.full_logits(x).flatten(0, 1), y.flatten())
    assert model.loss(x, y).item() == pytest.approx(full.item(), rel=1e-5)


def tiny_corpus(folder: Path, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """A few thousand tokens of made-up sentences from a small vocabulary, made here (no packages needed)."""
    rng = random.Random(0)
    who, does, what = (
        ["the king", "a child", "my dog", "the program"],
        ["sees", "finds", "reads"],
        ["a book", "the sea"],
    )
    docs = [" ".join(f"{rng.choice(who)} {rng.choice(does)} {rng.choice(what)}." for _ in range(12)) for _ in range(60)]
    ids = [[*tokenizer.encode(d.capitalize()), END_OF_TEXT] for d in docs]
    train = np.array([t for d in ids[:54] for t in d], np.uint16)
    heldout = np.array([t for d in ids[54:] for t in d], np.uint16)
    folder.mkdir()
    np.save(folder / "train.npy", train)
    np.save(folder / "heldout.npy", heldout)
    return train, heldout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`python -m backend.tools.train_demo` on the tiny corpus, with 8192 embedding rows (most for tokens it never
    sees: the reference's sanity check wants logits with a spread, which zero rows alone would flatten)."""
    tmp = tmp_path_factory.mktemp("train")
    torch.set_num_threads(2)
    train, heldout = tiny_corpus(tmp / "corpus", Tokenizer.from_file())
    out = tmp / "out"
    args = ["--data", str(tmp / "corpus"), "--out", str(out), "--summary", str(tmp / "summary.json")]
    assert (
        train_demo.main([*args, *TINY, "--device", "cpu", "--steps", "30", "--vocab-rows", "8192", "--samples", "0"])
        == 0
    )
    summary = json.loads((tmp / "summary.json").read_text())
    return {"summary": summary, "out": out, "tmp": tmp, "heldout": heldout, "train": train}


def test_tiny_run_lowers_the_loss_and_reports_perplexities(tiny_run: dict) -> None:
    s = tiny_run["summary"]
    losses = [loss for _, loss in s["loss_curve"]]
    assert losses[0] > losses[-1] + 1.0, losses
    assert s["heldout_curve"][0][1] > s["heldout_loss"], s["heldout_curve"]
    assert s["heldout_perplexity"] == pytest.approx(math.exp(s["heldout_loss"]))
    assert 1 < s["unigram_perplexity"] < 65536 and s["steps"] == 30 and s["seconds"] > 0
    assert s["corpus_train_tokens"] == tiny_run["train"].size and s["train_tokens_seen"] == 30 * 8 * 32


def test_trained_model_file_gives_the_reference_logits_of_the_training_model(tiny_run: dict) -> None:
    pth = tiny_run["out"] / "demo-rwkv7-tiny.pth"
    prompt = [int(t) for t in tiny_run["heldout"][:64]]
    _, tensors = read_model_pth(pth)
    model = load_official(tensors)
    with torch.no_grad():
        ours = model.full_logits(torch.tensor([prompt]))[0].numpy()
    assert_close(ours, reference(pth, prompt).logits, "training model vs reference")


def test_converted_st_gives_our_engine_the_reference_logits(tiny_run: dict) -> None:
    """The .st is fp16: the reference reads the same fp16 values (saved back as .pth), so f32 bounds hold."""
    out = tiny_run["out"]
    st = out / "demo-rwkv7-tiny.st"
    assert lzma.decompress((out / "demo-rwkv7-tiny.st.xz").read_bytes()) == st.read_bytes()
    _, tensors = read_model(st)
    pth = save_pth(tensors, tiny_run["tmp"] / "from-st.pth")
    prompt = [int(t) for t in tiny_run["heldout"][:64]]
    engine = Engine.load(st, max_batch=1, max_step_tokens=64, precision="fp32")
    assert_close(logits_for(engine, prompt, chunk=16), reference(pth, prompt).logits, "engine vs reference")
