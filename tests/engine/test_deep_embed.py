"""RWKV-7 DeepEmbed (per-token 32x32 scale of the channel mix) against the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.loader import read_model
from backend.gpu.models.info import Version
from backend.tools.convert import save_st
from backend.tools.demo_model import make_random_model, save_pth
from backend.tools.logits import logits_for
from tests.engine.conftest import Device, prompt_tokens
from tests.engine.test_models_vs_oracle import assert_close
from tests.oracle import reference

VOCAB = 4096  # s_emb holds 1024 floats per token and layer: keep the test model small
DeepModel = tuple[Path, tuple[int, ...]]  # folder with deep.pth / deep.st, prompt


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory: pytest.TempPathFactory) -> DeepModel:
    root = tmp_path_factory.mktemp("deep")
    tensors = make_random_model(Version.V7, 3, 128, n_vocab=VOCAB, seed=5, deep_embed=True)
    save_pth(tensors, root / "deep.pth")
    save_st(tensors, root / "deep.st", layout="official", dtype=np.float32)
    prompt = tuple(t % VOCAB or 1 for t in prompt_tokens())
    return root, prompt


@pytest.mark.parametrize("chunk", [1, 64])
def test_deep_embed_logits_match_reference(device: Device, deep_model: DeepModel, chunk: int) -> None:
    root, prompt = deep_model
    ref = reference(root / "deep.pth", prompt)
    info, tensors = read_model(root / "deep.st")
    assert info.deep_embed
    engine = Engine(info, tensors, max_batch=2, max_step_tokens=64, precision="fp32",
                    gpu=device.gpu, pipelines=device.pipelines)  # fmt: skip
    assert_close(logits_for(engine, prompt, chunk), ref.logits, f"v7 DeepEmbed chunk {chunk}")
