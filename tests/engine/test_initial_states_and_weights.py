"""Tuned initial states (state-tuning `time_state`) and in-place weight rewrites (LoRA switching)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.state_pool import state_from_time_state
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.tools.demo_model import make_random_model, save_pth
from backend.tools.logits import logits_for
from tests.engine.conftest import N_EMBD, N_LAYER, Case, Device
from tests.engine.test_models_vs_oracle import assert_close
from tests.oracle import reference


def run_all(engine: Engine, slot: int, tokens: tuple[int, ...]) -> np.ndarray:
    return engine.step(StepPlan((StepRow(slot, tokens, Logits.ALL),))).logits


@pytest.mark.parametrize("version", [Version.V5_2, Version.V6], ids=str)
def test_tuned_initial_state_matches_reference(
    device: Device, cases: dict[Version, Case], version: Version, tmp_path: Path
) -> None:
    case = cases[version]
    rng = np.random.default_rng(3)
    h = N_EMBD // 64
    time_state = [rng.normal(0, 0.5, (h, 64, 64)).astype(np.float32) for _ in range(N_LAYER)]
    tensors = make_random_model(version, N_LAYER, N_EMBD, seed=7)
    tensors |= {f"blocks.{i}.att.time_state": s for i, s in enumerate(time_state)}
    ref = reference(save_pth(tensors, tmp_path / "tuned.pth"), case.prompt[:16])

    engine = device.engine(case)
    engine.add_initial_state("tuned", state_from_time_state(case.info, time_state))
    engine.reset_slot(1, "tuned")
    ours = run_all(engine, 1, case.prompt[:16])
    assert_close(ours, ref.logits, f"{version} tuned state")
    engine.reset_slot(1)  # the zero state is still the default
    assert_close(run_all(engine, 1, case.prompt[:16]), case.ref.logits[:16], f"{version} zero state")


def test_unknown_initial_state_is_refused(device: Device, cases: dict[Version, Case]) -> None:
    engine = device.engine(cases[Version.V7])
    with pytest.raises(KeyError, match="nope"):
        engine.reset_slot(0, "nope")


def test_write_weights_switches_to_another_model_in_place(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V7]
    other = make_random_model(Version.V7, N_LAYER, N_EMBD, seed=99)
    fresh = device.engine(case)
    engine = device.engine(case)
    before = logits_for(engine, case.prompt[:8], chunk=8)
    engine.write_weights(other)
    after = logits_for(engine, case.prompt[:8], chunk=8)
    fresh_other = device.engine(case.__class__(case.version, case.st, case.info, other, case.prompt, case.ref))
    fresh_other_logits = logits_for(fresh_other, case.prompt[:8], chunk=8)
    np.testing.assert_array_equal(after, fresh_other_logits)
    assert np.abs(after - before).max() > 0.1
    np.testing.assert_array_equal(logits_for(fresh, case.prompt[:8], chunk=8), before)
