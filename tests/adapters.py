"""Random LoRA adapters and tuned states for a model, written the way the trainers write them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from backend.gpu.models.info import ModelInfo


def random_lora(
    tensors: Mapping[str, np.ndarray], targets: Sequence[str], rank: int = 4, seed: int = 0, std: float = 0.1
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """target `*.weight` -> (A [r, in], B [out, r]), f32 (B is random too, unlike a fresh LoRA's zeros)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in targets:
        rows, cols = tensors[name].shape
        out[name] = (rng.normal(0, std, (rank, cols)).astype(np.float32),
                     rng.normal(0, std, (rows, rank)).astype(np.float32))  # fmt: skip
    return out


def hand_merged(
    tensors: Mapping[str, np.ndarray], pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float
) -> dict[str, np.ndarray]:
    """W + alpha / r * (B @ A), in float64, the way a reader of the LoRA paper would write it."""
    out = dict(tensors)
    for name, (a, b) in pairs.items():
        r = b.shape[1]
        out[name] = (tensors[name].astype(np.float64) + alpha / r * (b.astype(np.float64) @ a)).astype(np.float32)
    return out


def save_lora(path: Path, pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], ai00: bool = False,
              extra: Mapping[str, np.ndarray] | None = None) -> Path:  # fmt: skip
    """RWKV-LM-LoRA names (`m.lora_A`, `m.lora_B`), or AI00's (`m.lora.0` = A transposed, `m.lora.1`)."""
    out = {}
    for name, (a, b) in pairs.items():
        m = name.removesuffix(".weight")
        if ai00:
            out[f"{m}.lora.0"], out[f"{m}.lora.1"] = np.ascontiguousarray(a.T), b
        else:
            out[f"{m}.lora_A"], out[f"{m}.lora_B"] = a, b
    save_file({**out, **(extra or {})}, str(path), metadata={"format": "pt"})
    return path


def random_time_state(info: ModelInfo, seed: int = 3, std: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    h, n = info.n_head, info.head_size
    return [rng.normal(0, std, (h, n, n)).astype(np.float32) for _ in range(info.n_layer)]


def save_time_state(path: Path, time_state: Sequence[np.ndarray], ai00: bool = False) -> Path:
    """A state-tuning file: blocks.{i}.att.time_state [H, N, N] (AI00's layout stores it transposed)."""
    tensors = {f"blocks.{i}.att.time_state": np.ascontiguousarray(x.transpose(0, 2, 1) if ai00 else x)
               for i, x in enumerate(time_state)}  # fmt: skip
    save_file(tensors, str(path), metadata={"format": "pt", **({"layout": "ai00"} if ai00 else {})})
    return path
