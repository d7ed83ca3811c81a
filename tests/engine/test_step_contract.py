"""Step validation, and that a steady-state step builds no pipelines or bind groups."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.models.info import Version
from backend.gpu.recorder import Recorder
from backend.gpu.step_types import Draw, Logits, StepPlan, StepRow
from tests.engine.conftest import Case, Device


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ((StepRow(0, (1,)), StepRow(0, (2,))), "slot appears twice"),
        ((StepRow(9, (1,)),), "slot out of range"),
        ((StepRow(0, ()),), "no tokens"),
        ((StepRow(0, (70000,)),), "token id"),
        ((StepRow(0, tuple(range(1, 66)), Logits.NONE),), "max_step_tokens"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(
    device: Device, cases: dict[Version, Case], rows: tuple[StepRow, ...], message: str
) -> None:
    engine = device.engine(cases[Version.V7], max_batch=4, max_step_tokens=64)
    with pytest.raises(ValueError, match=message):
        engine.step(StepPlan(rows))


def test_steady_state_step_builds_nothing(device: Device, cases: dict[Version, Case], monkeypatch) -> None:
    engine = device.engine(cases[Version.V6])
    engine.reset_slot(0)
    misses = device.pipelines.misses

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bind group was created during a step")

    monkeypatch.setattr(engine.gpu.device, "create_bind_group", refuse)
    for n in (1, 3, 17):
        engine.step(StepPlan((StepRow(0, tuple(range(1, n + 1))),)))
    assert device.pipelines.misses == misses


def test_native_and_public_recording_give_the_same_logits(device: Device, cases: dict[Version, Case]) -> None:
    """The recorder's direct wgpu-native calls must encode exactly what the public API would."""
    engine = device.engine(cases[Version.V7])
    assert engine.recorder.native, "wgpu-native's pass functions are no longer reachable: recording is slow"
    plan = StepPlan((StepRow(0, (1, 2, 3)), StepRow(1, (4,))))
    engine.reset_slot(0)
    engine.reset_slot(1)
    native = engine.step(plan).logits
    engine.recorder = Recorder(engine.dispatches, native=False)
    engine.discard_ahead()
    engine.reset_slot(0)
    engine.reset_slot(1)
    np.testing.assert_array_equal(engine.step(plan).logits, native)


def test_drawn_rows_read_back_only_ids_and_match_their_logits(device: Device, cases: dict[Version, Case]) -> None:
    """A step whose LAST lines are all drawn returns no logits; greedy draws are the argmax of the
    same lines run raw, mixed with a prefill chunk and with two draws sharing one line."""
    engine = device.engine(cases[Version.V6], max_batch=4, max_step_tokens=64)
    rows = (StepRow(2, (5, 6, 7)), StepRow(0, (9,)), StepRow(1, tuple(range(20, 40)), Logits.NONE))
    for slot in range(4):
        engine.reset_slot(slot)
    raw = engine.step(StepPlan(rows)).logits
    for slot in range(4):
        engine.reset_slot(slot)
    draws = (Draw(0, 2, 0, temperature=0.0, fresh=True), Draw(1, 0, 0, temperature=0.0, fresh=True),
             Draw(0, 3, 0, temperature=0.0, fresh=True))  # fmt: skip
    result = engine.step(StepPlan(rows, draws))
    assert result.logits.shape == (0, engine.info.n_vocab)
    argmax = raw.argmax(-1)
    assert [d.token for d in result.drawn] == [argmax[0], argmax[1], argmax[0]]


def test_a_draw_must_name_a_last_row(device: Device, cases: dict[Version, Case]) -> None:
    engine = device.engine(cases[Version.V7], max_batch=4, max_step_tokens=64)
    plan = StepPlan((StepRow(0, (1, 2), Logits.NONE),), (Draw(0, 0, 12345),))
    with pytest.raises(ValueError, match="not a LAST row"):
        engine.step(plan)
