"""Read a model file with a progress bar and a progress report: the slow part of loading a large model
(reading and converting to f32) before the engine uploads it (which shows its own bar)."""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from pathlib import Path

import numpy as np
from safetensors import safe_open
from tqdm import tqdm

from backend.gpu.loader import iter_model
from backend.gpu.models.info import ModelInfo
from backend.readiness import Progress


def f32_bytes(path: Path) -> int:
    """The model's size once converted to f32, from the file's header alone (no tensor is read)."""
    with safe_open(str(path), "numpy") as f:
        return sum(4 * prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118 (not a dict)


def read_model(path: Path, report: Callable[[Progress], None]) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """The model's info and canonical f32 tensors, as gpu.loader.read_model, reporting bytes as they come."""
    from backend.gpu.engine import PROGRESS_MIN_BYTES  # the upload bar's threshold: both bars or neither

    total = f32_bytes(path)
    info, tensors = iter_model(path)
    out, done = {}, 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="read", disable=total < PROGRESS_MIN_BYTES) as bar:
        for name, x in tensors:
            out[name] = x
            done += x.nbytes
            bar.update(x.nbytes)
            report(Progress("read", done, total))
    return info, out
