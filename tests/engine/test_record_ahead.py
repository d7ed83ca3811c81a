"""Steps recorded ahead (while the GPU runs the step before) decode exactly as steps recorded on the spot."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.step_types import Draw, StepPlan, StepRow
from backend.sampling.race import draw_key
from tests.engine.conftest import Case, Device

STEPS = 24


def decode(engine: Engine, ahead: bool, temperature: float) -> list[list[int]]:
    """Two streams with a third joining at step 8 and leaving at step 16 (the step sizes change),
    each token drawn on the GPU from the stream's own seeded numbers; returns every stream's tokens."""
    rng = np.random.default_rng(3)
    for slot in range(3):
        engine.reset_slot(slot)
    streams: list[list[int]] = [[11], [12], [13]]
    for step in range(STEPS):
        slots = [0, 1, 2] if 8 <= step < 16 else [0, 1]
        rows = tuple(StepRow(s, (streams[s][-1],)) for s in slots)
        draws = tuple(
            Draw(i, s, draw_key(rng), temperature=temperature, top_p=0.9, fresh=step in (0, 8))
            for i, s in enumerate(slots)
        )
        plan = StepPlan(rows, draws)
        if ahead:
            result = engine.step(plan)
        else:
            engine.discard_ahead()
            result = engine.collect(engine.submit(plan))
        for s, d in zip(slots, result.drawn, strict=True):
            streams[s].append(d.token)
    return streams


@pytest.mark.parametrize(("version", "temperature"), [(Version.V7, 0.0), (Version.V7, 1.0), (Version.V6, 1.0)], ids=str)
def test_decode_recorded_ahead_equals_decode_recorded_each_step(
    device: Device, cases: dict[Version, Case], version: Version, temperature: float
) -> None:
    engine = device.engine(cases[version], max_batch=4)
    fresh = decode(engine, ahead=False, temperature=temperature)
    assert decode(engine, ahead=True, temperature=temperature) == fresh


def test_recording_ahead_is_used_only_for_steps_of_its_sizes(device: Device, cases: dict[Version, Case]) -> None:
    engine = device.engine(cases[Version.V7], max_batch=4)
    engine.reset_slot(0)
    pending = engine.submit(StepPlan((StepRow(0, (5,)),), (Draw(0, 0, 0, temperature=0.0, fresh=True),)))
    engine.record_ahead(pending.key)
    engine.collect(pending)
    assert set(engine.recorded_ahead) == {pending.key}
    engine.reset_slot(1)
    other = engine.submit(StepPlan((StepRow(0, (6,)), StepRow(1, (7,)))))
    assert set(engine.recorded_ahead) == {pending.key}, "a step of other sizes consumed the recording"
    engine.collect(other)
    again = engine.submit(StepPlan((StepRow(0, (8,)),), (Draw(0, 0, 0, temperature=0.0),)))
    assert not engine.recorded_ahead, "the step of the recorded sizes did not use it"
    engine.collect(again)


def test_only_decode_shaped_steps_record_ahead(device: Device, cases: dict[Version, Case]) -> None:
    """A prefill chunk's sizes rarely come back, so step() records ahead only after one-token rows."""
    engine = device.engine(cases[Version.V6], max_batch=4)
    engine.reset_slot(0)
    engine.discard_ahead()
    engine.step(StepPlan((StepRow(0, (1, 2, 3)),)))
    assert not engine.recorded_ahead
    engine.step(StepPlan((StepRow(0, (4,)),)))
    assert len(engine.recorded_ahead) == 1
