"""int8 and NF4 weights: the packing round-trips, and the engine's quantized paths stay close
to its fp16 path (next-token cross-entropy on a fixed text, and the logits themselves)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.quant import NF4_LEVELS, dequantize, quantize
from backend.tools.logits import logits_for
from tests.engine.conftest import N_LAYER, Case, Device

CE_TOLERANCE = {"int8": 0.01, "nf4": 0.05}  # relative change of cross-entropy vs fp16 (shared/oracle.md)


def cross_entropy(logits: np.ndarray, tokens: tuple[int, ...]) -> float:
    """Mean -log p(next token) over the text."""
    x = logits[:-1].astype(np.float64)
    x -= x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(tokens) - 1), list(tokens[1:])].mean())


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_packing_round_trips_within_one_step_of_the_grid(kind: str) -> None:
    w = np.random.default_rng(0).normal(0, 0.05, (96, 256)).astype(np.float32)
    q = quantize(w, kind)
    back = dequantize(q, 256)
    blocks = np.abs(w.reshape(96, 4, 64)).max(-1)
    step = (1 / 127) if kind == "int8" else np.diff(NF4_LEVELS).max() / 2
    assert (np.abs(back - w).reshape(96, 4, 64).max(-1) <= blocks * step * 1.0001).all()
    assert q.packed.nbytes == w.size * (1 if kind == "int8" else 0.5)


def test_rows_must_split_into_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        quantize(np.zeros((4, 96), np.float32), "int8")


@pytest.mark.parametrize("kind", ["int8", "nf4"])
@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
def test_quantized_engine_stays_close_to_fp16(
    device: Device, cases: dict[Version, Case], version: Version, kind: str
) -> None:
    case = cases[version]
    fp16 = logits_for(device.engine(case, precision="fp16"), case.prompt, chunk=16)
    engine = Engine(
        case.info, case.tensors, max_batch=2, max_step_tokens=64, precision="fp16",
        gpu=device.gpu, pipelines=device.pipelines, quant=N_LAYER, quant_type=kind,
    )  # fmt: skip
    quantized = logits_for(engine, case.prompt, chunk=16)
    ce16, ceq = cross_entropy(fp16, case.prompt), cross_entropy(quantized, case.prompt)
    assert abs(ceq - ce16) / ce16 <= CE_TOLERANCE[kind], f"cross-entropy {ce16:.4f} -> {ceq:.4f}"
    drift = np.abs(quantized - fp16).max() / (fp16.max(-1) - fp16.min(-1)).min()
    assert 0 < drift <= (0.05 if kind == "int8" else 0.2), f"{kind} logits drift {drift:.3f} of the spread"


def test_quantized_weights_take_less_gpu_memory(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V7]
    sizes = {}
    for quant, kind in ((0, "int8"), (N_LAYER, "int8"), (N_LAYER, "nf4")):
        engine = Engine(case.info, case.tensors, max_batch=2, max_step_tokens=64, precision="fp16",
                        gpu=device.gpu, pipelines=device.pipelines, quant=quant, quant_type=kind)  # fmt: skip
        sizes[(quant, kind)] = engine.gpu_bytes
    assert sizes[(0, "int8")] > sizes[(N_LAYER, "int8")] > sizes[(N_LAYER, "nf4")]


def test_bad_quant_settings_name_the_field(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V7]
    with pytest.raises(ValueError, match="quant_type"):
        Engine(case.info, case.tensors, gpu=device.gpu, pipelines=device.pipelines, quant=1, quant_type="q3")
    with pytest.raises(ValueError, match="quant: must be"):
        Engine(case.info, case.tensors, gpu=device.gpu, pipelines=device.pipelines, quant=99)
