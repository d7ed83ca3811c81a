"""State slots: fork (copy), save/restore (read/write) and reset behave as one sequence would."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.step_types import StepPlan, StepRow
from tests.engine.conftest import Case, Device


def run(engine: Engine, slot: int, tokens: tuple[int, ...]) -> np.ndarray:
    return engine.step(StepPlan((StepRow(slot, tokens),))).logits[0]


@pytest.mark.parametrize("version", [Version.V4, Version.V6, Version.V7], ids=str)
def test_forked_slot_continues_identically(device: Device, cases: dict[Version, Case], version: Version) -> None:
    engine = device.engine(cases[version])
    prompt = cases[version].prompt
    engine.reset_slot(0)
    run(engine, 0, prompt[:20])
    engine.copy_slot(0, 3)
    for token in prompt[20:30]:
        a = run(engine, 0, (token,))
        b = run(engine, 3, (token,))
        np.testing.assert_array_equal(a, b)


def test_fork_then_diverge_leaves_the_source_untouched(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V7]
    engine = device.engine(case)
    engine.reset_slot(0)
    run(engine, 0, case.prompt[:10])
    engine.copy_slot(0, 1)
    run(engine, 1, case.prompt[40:50])  # the fork goes elsewhere
    engine.reset_slot(2)
    run(engine, 2, case.prompt[:10])
    np.testing.assert_array_equal(run(engine, 0, (5,)), run(engine, 2, (5,)))


def test_saved_state_restores_exactly(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V6]
    engine = device.engine(case)
    engine.reset_slot(1)
    run(engine, 1, case.prompt[:12])
    saved = engine.read_slot(1)
    first = run(engine, 1, case.prompt[12:20])
    engine.reset_slot(1)
    engine.write_slot(1, saved)
    np.testing.assert_array_equal(run(engine, 1, case.prompt[12:20]), first)


def test_reset_slot_forgets_the_past(device: Device, cases: dict[Version, Case]) -> None:
    case = cases[Version.V4]
    engine = device.engine(case)
    engine.reset_slot(0)
    fresh = run(engine, 0, case.prompt[:8])
    run(engine, 0, case.prompt[8:30])
    engine.reset_slot(0)
    np.testing.assert_array_equal(run(engine, 0, case.prompt[:8]), fresh)


def test_write_slot_rejects_wrong_sizes(device: Device, cases: dict[Version, Case]) -> None:
    engine = device.engine(cases[Version.V7])
    state = engine.read_slot(0)
    with pytest.raises(ValueError, match="layer 0"):
        engine.write_slot(0, [state[0][:-4], *state[1:]])
    with pytest.raises(ValueError, match="layers"):
        engine.write_slot(0, state[:-1])
