"""A step mixing prefill chunks and decode rows of different slots equals each sequence run alone."""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.matmul import GEMM_TIERS, tiers_text
from backend.gpu.models.info import Version
from backend.gpu.step_types import Logits, StepPlan, StepRow
from tests.engine.conftest import Case, Device

LENGTHS = (1, 5, 17, 30)  # one decode-sized row, three prefill chunks


F32_TIERS = tiers_text(GEMM_TIERS)
PLANS = [(v, "", "") for v in (Version.V4, Version.V5_2, Version.V6, Version.V7)] + [
    (Version.V6, "tiled,gemm", ""), (Version.V7, "tiled,gemm", F32_TIERS)
]


@pytest.mark.parametrize(("version", "plan", "tiers"), PLANS,
                         ids=lambda v: "f32-tiers" if v == F32_TIERS else str(v))  # fmt: skip
def test_mixed_batch_equals_each_sequence_alone(
    device: Device, cases: dict[Version, Case], version: Version, plan: str, tiers: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """On lavapipe's plan, and on a GPU's (AI00_MATMUL=tiled,gemm): there the rows alone take the GEMV
    (1, 5 tokens) and GEMM tiles: with the tiers of an adapter with f16 (lavapipe's), the 17-128 tile at 17,
    30 and the batch of 53; with GEMM_TIERS (forced), a tile each at 17, 30 and 53."""
    monkeypatch.setenv("AI00_MATMUL", plan)
    monkeypatch.setenv("AI00_GEMM", tiers)
    assert_mixed_batch_equals_each_sequence_alone(device, cases[version])


@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
def test_chunked_wkv_mixed_batch_equals_each_sequence_alone(
    device: Device, cases: dict[Version, Case], version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked recurrence (AI00_WKV=chunked): the batch's rows of 1, 5, 17 and 30 tokens cut 1, 1, 2
    and 2 chunks; v6's are numbered row after row, with surplus workgroups in the grid, v7's walked per row."""
    monkeypatch.setenv("AI00_WKV", "chunked")
    assert_mixed_batch_equals_each_sequence_alone(device, cases[version])


@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
def test_four_lane_recurrence_mixed_batch_equals_each_sequence_alone(
    device: Device, cases: dict[Version, Case], version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recurrences with four invocations a channel (AI00_WKV6_LANES, AI00_WKV7_LANES=4): the rows of 1 and 5
    tokens alone take the one kernel (wkv6_quad, wkv7_quad), the batch and the longer rows the split form's scan
    over four workgroups a head."""
    monkeypatch.setenv("AI00_WKV6_LANES", "4")
    monkeypatch.setenv("AI00_WKV7_LANES", "4")
    assert_mixed_batch_equals_each_sequence_alone(device, cases[version])


def assert_mixed_batch_equals_each_sequence_alone(device: Device, case: Case) -> None:
    engine = device.engine(case, max_batch=4, max_step_tokens=64)
    seqs = [case.prompt[i * 3 : i * 3 + 3 + n] for i, n in enumerate(LENGTHS)]

    alone = []
    for slot, seq in enumerate(seqs):
        engine.reset_slot(slot)
        engine.step(StepPlan((StepRow(slot, seq[:3], Logits.NONE),)))
        alone.append(engine.step(StepPlan((StepRow(slot, seq[3:], Logits.ALL),))).logits)

    for slot, seq in enumerate(seqs):
        engine.reset_slot(slot)
        engine.step(StepPlan((StepRow(slot, seq[:3], Logits.NONE),)))
    # slots in a different order than their rows, to catch row/slot mix-ups
    order = [2, 0, 3, 1]
    plan = StepPlan(tuple(StepRow(s, seqs[s][3:], Logits.ALL) for s in order))
    result = engine.step(plan)
    for i, s in enumerate(order):
        batched = result.of_row(i, len(seqs[s]) - 3)
        np.testing.assert_allclose(batched, alone[s], rtol=1e-5, atol=1e-5, err_msg=f"slot {s}")


def test_rows_without_logits_return_no_lines(device: Device, cases: dict[Version, Case]) -> None:
    engine = device.engine(cases[Version.V7])
    plan = StepPlan((StepRow(0, (1, 2, 3), Logits.NONE), StepRow(1, (4,), Logits.LAST)))
    result = engine.step(plan)
    assert result.logits.shape == (1, engine.info.n_vocab)
    assert result.row_offsets == (0, 0)
