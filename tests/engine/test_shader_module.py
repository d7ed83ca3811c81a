"""Shaders built without wgpu's runtime checks (backend/gpu/shader_module.py) compute what the checked ones do."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.models.info import Version
from backend.gpu.shader_module import shader_checks
from backend.gpu.step_types import Draw, Logits, StepPlan, StepRow
from tests.engine.conftest import Case, Device

PLANS = ["", "tiled,gemm"]  # the adapter's own plan (lavapipe's rows, a 32-lane GPU's vec,gemm), and the GEMM tiles


def run(device: Device, case: Case) -> tuple[np.ndarray, np.ndarray, int]:
    """A 40-token prefill's logits, then one decode step's, then a token the sampler draws on the GPU."""
    engine = device.engine(case, max_batch=2, max_step_tokens=64)
    engine.reset_slot(1)
    prefill = engine.step(StepPlan((StepRow(1, case.prompt[:40], Logits.ALL),))).logits
    decode = engine.step(StepPlan((StepRow(1, case.prompt[40:41], Logits.ALL),))).logits
    drawn = engine.step(StepPlan((StepRow(1, case.prompt[41:42], Logits.LAST),), (Draw(0, 1, 2**63 + 7),))).drawn
    return prefill, decode, drawn[0].token


@pytest.mark.parametrize("plan", PLANS, ids=["own-plan", "tiled-gemm"])
@pytest.mark.parametrize("version", [Version.V4, Version.V5_2, Version.V6, Version.V7], ids=str)
def test_unchecked_shaders_give_the_checked_logits_bit_for_bit(
    device: Device, cases: dict[Version, Case], version: Version, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks clamp every dynamic index and bound every loop: a kernel that read past an array and relied
    on the clamp would differ here."""
    monkeypatch.setenv("AI00_MATMUL", plan)
    runs = []
    for checks in ("1", "0"):
        monkeypatch.setenv("AI00_SHADER_CHECKS", checks)
        assert shader_checks() == (checks == "1")  # wgpu-native here: the trusted modules are reachable
        runs.append(run(device, cases[version]))
    (prefill_a, step_a, token_a), (prefill_b, step_b, token_b) = runs
    np.testing.assert_array_equal(prefill_a, prefill_b)
    np.testing.assert_array_equal(step_a, step_b)
    assert token_a == token_b
