"""LoRA files merged at load and switched in place; tuned-state and exported-state files; against the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.catalog import ModelSpec
from backend.config import Config
from backend.engine_builder import EngineBuilder
from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.lora import merge, read_adapter, read_base, write_set
from backend.st_file import read_st
from backend.state_file import read_state, state_file_bytes
from backend.tools.demo_model import make_random_model, save_pth
from backend.tools.logits import logits_for
from tests.adapters import hand_merged, random_lora, random_time_state, save_lora, save_time_state
from tests.engine.conftest import N_EMBD, N_LAYER, VERSIONS, Case, Device
from tests.engine.test_models_vs_oracle import assert_close
from tests.oracle import reference


def run_all(engine: Engine, slot: int, tokens: tuple[int, ...]) -> np.ndarray:
    return engine.step(StepPlan((StepRow(slot, tokens, Logits.ALL),))).logits


def shapes_of(case: Case) -> dict[str, tuple[int, ...]]:
    return {name: x.shape for name, x in case.tensors.items()}


def test_lora_merged_at_load_matches_the_oracle_on_hand_merged_weights(
    device: Device, cases: dict[Version, Case], tmp_path: Path
) -> None:
    case = cases[Version.V7]
    targets = [f"blocks.{i}.{m}.weight" for i in range(N_LAYER) for m in ("att.key", "att.output", "ffn.value")]
    pairs = random_lora(case.tensors, targets, rank=4, seed=1)
    lora = save_lora(tmp_path / "lora.st", pairs)
    ref = reference(save_pth(hand_merged(case.tensors, pairs, 8.0), tmp_path / "merged.pth"), case.prompt[:16])

    config = Config.from_dict({"model": {"path": str(case.st), "precision": "fp32",
                                         "loras": [{"path": str(lora), "alpha": 8.0}]}})  # fmt: skip
    builder = EngineBuilder(config, ModelSpec(case.st, "fp32"))
    builder._gpu = (device.gpu, device.pipelines)  # the session's device: no second one to compile shaders on
    engine, catalog = builder.load(4)
    ours = logits_for(engine, case.prompt[:16], chunk=16)
    assert catalog.active == ("lora",) and catalog.adapters["lora"].rank == 4
    assert_close(ours, ref.logits, "v7 with a LoRA merged at load")
    assert np.abs(ours - case.ref.logits[:16]).max() > 0.05  # the adapter does change the model


@pytest.mark.parametrize("ai00", [False, True], ids=["rwkv-names", "ai00-names"])
def test_hot_switch_equals_an_engine_built_on_merged_weights_and_unload_restores_the_base(
    device: Device, cases: dict[Version, Case], tmp_path: Path, ai00: bool
) -> None:
    case = cases[Version.V6]
    targets = ["blocks.0.att.receptance.weight", "blocks.2.ffn.key.weight", "head.weight"]
    pairs = random_lora(case.tensors, targets, rank=8, seed=2, std=0.05)
    ln = np.full(N_EMBD, 1.5, np.float32)  # a whole tensor: replaces the model's (AI00 renames time_maa)
    mix = case.tensors["blocks.1.att.time_maa_w1"] * 2  # AI00 stores it transposed
    extra = ({"blocks.1.ln2.weight": ln, "blocks.1.att.time_mix_w1": np.ascontiguousarray(mix.T)} if ai00
             else {"blocks.1.ln2.weight": ln, "blocks.1.att.time_maa_w1": mix})  # fmt: skip
    path = save_lora(tmp_path / "lora.st", pairs, ai00=ai00, extra=extra)
    adapter = read_adapter(path, 4.0, "x", case.info, shapes_of(case))
    assert adapter.targets == {*targets, "blocks.1.ln2.weight", "blocks.1.att.time_maa_w1"}

    expected = hand_merged(case.tensors, pairs, 4.0) | {"blocks.1.ln2.weight": ln, "blocks.1.att.time_maa_w1": mix}
    merged_engine = Engine(case.info, expected, max_batch=4, max_step_tokens=64, precision="fp32",
                           gpu=device.gpu, pipelines=device.pipelines)  # fmt: skip
    want = logits_for(merged_engine, case.prompt[:12], chunk=12)

    engine = device.engine(case)
    base_logits = logits_for(engine, case.prompt[:12], chunk=12)
    names = write_set(adapter.targets, shapes_of(case))
    base = read_base(case.st, names)
    engine.write_weights(base | merge(base, [adapter]))
    np.testing.assert_allclose(logits_for(engine, case.prompt[:12], chunk=12), want, rtol=1e-5, atol=1e-5)
    engine.write_weights(read_base(case.st, names))  # unload: the base tensors back
    np.testing.assert_array_equal(logits_for(engine, case.prompt[:12], chunk=12), base_logits)


@pytest.mark.parametrize("ai00", [False, True], ids=["official", "ai00-layout"])
def test_tuned_state_file_matches_the_oracle_started_from_it(
    device: Device, cases: dict[Version, Case], tmp_path: Path, ai00: bool
) -> None:
    case = cases[Version.V6]
    time_state = random_time_state(case.info)
    tuned = make_random_model(Version.V6, N_LAYER, N_EMBD, seed=7)
    tuned |= {f"blocks.{i}.att.time_state": s for i, s in enumerate(time_state)}
    ref = reference(save_pth(tuned, tmp_path / "tuned.pth"), case.prompt[:16])

    engine = device.engine(case)
    engine.add_initial_state("tuned", read_state(save_time_state(tmp_path / "s.st", time_state, ai00), case.info))
    engine.reset_slot(2, "tuned")
    assert_close(run_all(engine, 2, case.prompt[:16]), ref.logits, "v6 tuned state from a file")


@pytest.mark.parametrize("version", VERSIONS, ids=str)
def test_exported_state_has_the_reference_layout_and_imports_to_an_identical_continuation(
    device: Device, cases: dict[Version, Case], version: Version
) -> None:
    case = cases[version]
    engine = device.engine(case)
    engine.reset_slot(0)
    run_all(engine, 0, case.prompt)
    data = state_file_bytes(engine.read_slot(0), case.info, "m")
    tensors, metadata = read_st(data)
    assert metadata["kind"] == "ai00-state" and metadata["version"] == version.value
    for i, ref in enumerate(case.ref.state):  # the reference's order: [att_x_prev, ..., ffn_x_prev]
        assert_close(tensors[f"blocks.{i}.att.x_prev"], ref[0], f"{version} layer {i} att.x_prev")
        assert_close(tensors[f"blocks.{i}.ffn.x_prev"], ref[-1], f"{version} layer {i} ffn.x_prev")
        if version is not Version.V4:  # files hold [head, value, key]; v5/v6's reference holds [head, key, value]
            kv = ref[1] if version is Version.V7 else ref[1].transpose(0, 2, 1)
            assert_close(tensors[f"blocks.{i}.att.time_state"], kv, f"{version} layer {i} time_state")

    layers = read_state(data, case.info)
    assert all(np.array_equal(a, b) for a, b in zip(layers, engine.read_slot(0), strict=True))
    engine.write_slot(1, layers)
    tail = case.prompt[:5]
    np.testing.assert_array_equal(run_all(engine, 1, tail), run_all(engine, 0, tail))


def test_state_file_of_another_model_is_refused_naming_the_tensor(cases: dict[Version, Case]) -> None:
    v6, v7 = cases[Version.V6].info, cases[Version.V7].info
    data = state_file_bytes(random_layers(v7), v7)
    with pytest.raises(ValueError, match="v7 model, this model is v6"):
        read_state(data, v6)
    two_layers = state_file_bytes(random_layers(v7)[:2], v7)
    with pytest.raises(ValueError, match=r"blocks\.2\.att\.time_state: missing"):
        read_state(two_layers, v7)


def random_layers(info) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 1, info.layer_state_floats).astype(np.float32) for _ in range(info.n_layer)]
