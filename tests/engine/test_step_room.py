"""A step's room against the adapter's binding limit (backend/gpu/step_room.py), on a device that binds only
512 KiB, as a small GPU might: the largest step it computes runs and agrees with short steps, one token more is
refused with the field to lower before wgpu sees it, and wgpu itself refuses that one token more."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import wgpu

from backend.gpu import engine as engine_module
from backend.gpu.device import Gpu
from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.step_room import auto_prefill_chunk, gpu_weight_bytes, largest_step
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.tools.logits import logits_for
from tests.engine.conftest import Case, Device

SMALL_BINDING = 512 << 10
ROOM_VERSIONS = [Version.V6, Version.V7]  # v6: the decay LoRA's hidden layer and delta; v7: the widest ffn


@pytest.fixture(scope="module")
def small_gpu() -> Iterator[Gpu]:
    yield Gpu(max_binding_bytes=SMALL_BINDING)


def room_of(case: Case) -> int:
    return largest_step(case.info, case.tensors, 1, SMALL_BINDING)


def small_engine(gpu: Gpu, case: Case, tokens: int) -> Engine:
    return Engine(case.info, case.tensors, max_batch=1, max_step_tokens=tokens, precision="fp32", gpu=gpu)


def test_a_step_filling_the_room_runs_and_agrees_with_short_steps(
    small_gpu: Gpu, device: Device, cases: dict[Version, Case]
) -> None:
    case = cases[Version.V7]
    room = room_of(case)
    assert 64 < room < 1024  # the limit, not the model, bounds it here
    prompt = (case.prompt * (room // len(case.prompt) + 1))[:room]
    engine = small_engine(small_gpu, case, room)
    engine.reset_slot(0)
    last = engine.step(StepPlan((StepRow(0, prompt, Logits.LAST),))).logits[0]
    short = logits_for(device.engine(case, max_batch=1, max_step_tokens=64), prompt, 64)[-1]
    np.testing.assert_allclose(last, short, rtol=1e-4, atol=1e-4 * float(np.abs(short).max()))


@pytest.mark.parametrize("version", ROOM_VERSIONS, ids=lambda v: v.value)
def test_one_token_past_the_room_is_refused_naming_the_field_as_wgpu_would_refuse_it(
    small_gpu: Gpu, cases: dict[Version, Case], version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = cases[version]
    room = room_of(case)
    with pytest.raises(ValueError, match=rf"max_step_tokens: steps of {room + 1} tokens .* at most {room} tokens"):
        small_engine(small_gpu, case, room + 1)
    # without the check, wgpu's validation refuses the same engine: the room is the limit, not under it
    monkeypatch.setattr(engine_module, "check_room", lambda *args: None)
    with pytest.raises(wgpu.GPUValidationError, match="binding"):
        small_engine(small_gpu, case, room + 1)


def test_auto_sizes_by_the_weights_within_the_binding_limit(cases: dict[Version, Case]) -> None:
    case = cases[Version.V7]
    floor = auto_prefill_chunk(case.info, case.tensors, 1, 128 << 20, weight_bytes=0)
    grown = auto_prefill_chunk(case.info, case.tensors, 1, 128 << 20, weight_bytes=1 << 30)
    bound = auto_prefill_chunk(case.info, case.tensors, 1, SMALL_BINDING, weight_bytes=1 << 30)
    assert floor == 1024 and grown == 8192  # a tiny model gets the old default; a big one the config's most
    assert bound == room_of(case) < 256  # under one aligned step: the room itself, not nothing


@pytest.mark.parametrize("version", ROOM_VERSIONS, ids=lambda v: v.value)
def test_the_weight_estimate_saves_what_quantization_saves_on_the_gpu(
    device: Device, cases: dict[Version, Case], version: Version
) -> None:
    case, n = cases[version], cases[version].info.n_layer
    held, estimated = {}, {}
    for precision, quant, kind in (("fp16", 0, "int8"), ("fp16", n, "int8"), ("fp16", n, "nf4"), ("fp32", 0, "int8")):
        engine = Engine(case.info, case.tensors, max_batch=1, max_step_tokens=64, precision=precision, gpu=device.gpu,
                        pipelines=device.pipelines, quant=quant, quant_type=kind)  # fmt: skip
        held[precision, quant, kind] = engine.gpu_bytes  # same workspace and states: the differences are weights
        shapes = {name: a.shape for name, a in case.tensors.items()}
        estimated[precision, quant, kind] = gpu_weight_bytes(shapes, precision, quant, kind)
    base = ("fp16", 0, "int8")
    for key in held.keys() - {base}:
        saved, guessed = held[key] - held[base], estimated[key] - estimated[base]
        assert abs(guessed - saved) <= 0.05 * abs(saved), key
