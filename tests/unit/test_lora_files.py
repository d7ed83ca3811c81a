"""LoRA files: both namings read the same, and a file that does not fit the model names the tensor at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from backend.gpu.models.info import ModelInfo, Version
from backend.lora import COMMON, LoraError, merge, read_adapter, write_set
from tests.adapters import random_lora, save_lora

INFO = ModelInfo(Version.V7, n_layer=2, n_embd=8, n_vocab=16, n_ffn=32, head_size=4)
SHAPES = {
    "emb.weight": (16, 8),
    "blocks.0.ln0.weight": (8,),
    "blocks.0.ln0.bias": (8,),
    "blocks.0.att.key.weight": (8, 8),
    "blocks.0.att.x_k": (1, 1, 8),
    "blocks.1.ffn.value.weight": (8, 32),
    "blocks.1.ln1.weight": (8,),
    "ln_out.weight": (8,),
    "ln_out.bias": (8,),
    "head.weight": (16, 8),
}
BASE = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}


def test_rwkv_and_ai00_names_give_the_same_merge(tmp_path: Path) -> None:
    pairs = random_lora(BASE, ["blocks.0.att.key.weight", "blocks.1.ffn.value.weight"], rank=2)
    official = read_adapter(save_lora(tmp_path / "a.st", pairs), 4.0, "a", INFO, SHAPES)
    ai00 = read_adapter(save_lora(tmp_path / "b.st", pairs, ai00=True), 4.0, "b", INFO, SHAPES)
    merged, again = merge(BASE, [official]), merge(BASE, [ai00])
    assert merged.keys() == again.keys() == {"blocks.0.att.key.weight", "blocks.1.ffn.value.weight"}
    a, b = pairs["blocks.1.ffn.value.weight"]
    np.testing.assert_allclose(merged["blocks.1.ffn.value.weight"], 1 + 2.0 * (b @ a), rtol=1e-6)
    assert all(np.array_equal(merged[k], again[k]) for k in merged)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"blocks.0.att.key.lora_A": np.ones((2, 8))}, "blocks.0.att.key: lora_B is missing"),
        ({"blocks.0.att.gate.lora_A": np.ones((2, 8)), "blocks.0.att.gate.lora_B": np.ones((8, 2))},
         "no matrix 'blocks.0.att.gate.weight'"),
        ({"blocks.0.att.key.lora_A": np.ones((2, 9)), "blocks.0.att.key.lora_B": np.ones((8, 2))},
         r"expected A \[r, 8\], B \[8, r\]"),
        ({"blocks.1.ln1.weight": np.ones(7)}, r"blocks.1.ln1.weight: shape \(7,\), the model's is \(8,\)"),
        ({"blocks.5.ln1.weight": np.ones(8)}, "blocks.5.ln1.weight: the model has no such tensor"),
        ({"blocks.0.att.time_state": np.ones((2, 4, 4))}, "no lora_A/lora_B"),
    ],
)  # fmt: skip
def test_a_file_that_does_not_fit_names_the_tensor(tmp_path: Path, tensors: dict, message: str) -> None:
    save_file({k: v.astype(np.float32) for k, v in tensors.items()}, str(tmp_path / "x.st"))
    with pytest.raises(LoraError, match=message):
        read_adapter(tmp_path / "x.st", 1.0, "x", INFO, SHAPES)


def test_write_set_takes_whole_layers_and_the_common_tensors_with_layer_0() -> None:
    assert write_set({"blocks.1.ffn.value.weight"}, SHAPES) == {"blocks.1.ffn.value.weight", "blocks.1.ln1.weight"}
    touched = write_set({"head.weight"}, SHAPES)
    assert touched == set(COMMON) | {"blocks.0.att.key.weight", "blocks.0.att.x_k"}
