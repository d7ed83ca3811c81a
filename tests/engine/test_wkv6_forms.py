"""RWKV-5/6's time mix in its three forms, each forced where the default picks another: one kernel token
by token (the default up to WKV_FUSED_MAX_TOKENS a step) and, for longer steps, a pre pass for v6's per-token
decay, a scan of the state update alone and a post pass with bonus, group norm and gate; or the chunked form
(wkv_chunk.py) in the scan's place."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.matmul import WKV_FUSED_MAX_TOKENS
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.tools.logits import logits_for
from tests.engine.conftest import Case, Device, long_prompt
from tests.engine.test_models_vs_oracle import assert_close, assert_state_after_prompt_matches

# the split form at chunks of 7 (several tokens a row, rows starting mid-prompt) for every version; the fused
# one at 100 for v6 (v5's fused kernel is the same code less the decay LoRA); the chunked one at 7 (one short
# chunk a step) for v5.2 and v6 (v5.0's chunk passes are v5.2's), and for v6 at 100 (six chunks of 16 and a
# short one in one step; 512 in test_fused_kernel_paths; one-token steps forced through a chunked form: v7's there)
SPLIT_VERSIONS = (Version.V5_0, Version.V5_2, Version.V6)
CASES = [(v, "split", 7) for v in SPLIT_VERSIONS] + [(Version.V6, "fused", 100)]
CASES += [(v, "chunked", 7) for v in (Version.V5_2, Version.V6)] + [(Version.V6, "chunked", 100)]


@pytest.mark.parametrize(("version", "form", "chunk"), CASES, ids=str)
def test_wkv6_forms_match_reference(
    device: Device, cases: dict[Version, Case], version: Version, form: str, chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Logits at every position the reference covers (64; long_prompt), and for the
    split and chunked forms the state they leave after the prompt in steps of 16."""
    monkeypatch.setenv("AI00_WKV", form)
    case = cases[version]
    prompt = long_prompt(case, chunk)
    engine = device.engine(case, max_step_tokens=128)
    ours = logits_for(engine, prompt, chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"{version} wkv {form}, chunk {chunk}")
    if form != "fused" and chunk == 7:
        assert_state_after_prompt_matches(device.engine(case), case, f"{version} wkv {form}")


def wkv_kernels_run(engine: Engine, tokens: int) -> list[str]:
    """The time mix kernels a one-row step of `tokens` tokens dispatches, layer by layer."""
    dims = StepDims(tokens, 1, 1)
    return [d.name.split(".", 1)[1] for d in engine.dispatches if ".wkv6" in d.name and all(d.grid(dims))]


@pytest.mark.parametrize(("version", "pre"), [(Version.V5_2, []), (Version.V6, ["wkv6.pre"])], ids=str)
def test_wkv6_split_form_runs_only_for_long_steps(
    device: Device, cases: dict[Version, Case], version: Version, pre: list[str]
) -> None:
    """By default a step of WKV_FUSED_MAX_TOKENS runs the one kernel, one token more the scan and post (after
    v6's pre)."""
    engine = device.engine(cases[version], max_step_tokens=128)
    n_layer = cases[version].info.n_layer
    assert wkv_kernels_run(engine, WKV_FUSED_MAX_TOKENS) == ["wkv6"] * n_layer
    assert wkv_kernels_run(engine, WKV_FUSED_MAX_TOKENS + 1) == [*pre, "wkv6.scan", "wkv6.post"] * n_layer
    assert wkv_kernels_run(engine, 128) == [*pre, "wkv6.scan", "wkv6.post"] * n_layer  # not chunked by default


@pytest.mark.parametrize(("version", "pre"), [(Version.V5_2, []), (Version.V6, ["wkv6.pre"])], ids=str)
def test_wkv6_chunked_form_replaces_the_scan_when_forced(
    device: Device, cases: dict[Version, Case], version: Version, pre: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AI00_WKV=chunked: a long step runs the chunked form's three passes where the scan ran, between v6's
    pre and the post; so does a one-token step (forced means every step, as for the other forms)."""
    monkeypatch.setenv("AI00_WKV", "chunked")
    engine = device.engine(cases[version], max_step_tokens=128)
    chunked = [*pre, "wkv6.chunk_state", "wkv6.chunk_scan", "wkv6.chunk_out", "wkv6.post"]
    n_layer = cases[version].info.n_layer
    assert wkv_kernels_run(engine, 100) == chunked * n_layer
    assert wkv_kernels_run(engine, 1) == chunked * n_layer


def test_wkv6_chunked_form_runs_from_its_threshold(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a threshold (AI00_WKV_CHUNKED_MIN, else wkv_chunk.CHUNKED_MIN_TOKENS) the default's long steps of
    at least that many tokens run chunked, shorter ones split; short steps stay fused."""
    monkeypatch.setenv("AI00_WKV_CHUNKED_MIN", "32")
    engine = device.engine(cases[Version.V6], max_step_tokens=128)
    n_layer = cases[Version.V6].info.n_layer
    assert wkv_kernels_run(engine, WKV_FUSED_MAX_TOKENS) == ["wkv6"] * n_layer
    assert wkv_kernels_run(engine, 31) == ["wkv6.pre", "wkv6.scan", "wkv6.post"] * n_layer
    chunked = ["wkv6.pre", "wkv6.chunk_state", "wkv6.chunk_scan", "wkv6.chunk_out", "wkv6.post"]
    assert wkv_kernels_run(engine, 32) == chunked * n_layer


def test_wkv6_chunked_form_survives_decays_that_underflow(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """v6 channels whose w is ~1e-29 (time_decay 4.2) or underflows to 0 in f32 (5.0: exp(-148)): the
    chunked form's log-space decays give the split form's logits, and no NaN from log 0."""
    case = cases[Version.V6]
    tensors = dict(case.tensors)
    for name in [n for n in tensors if n.endswith("att.time_decay")]:
        decay = tensors[name].copy()
        decay.flat[1::3], decay.flat[2::3] = 4.2, 5.0
        tensors[name] = decay
    strong = replace(case, tensors=tensors)
    logits = {}
    for form in ("split", "chunked"):
        monkeypatch.setenv("AI00_WKV", form)
        logits[form] = logits_for(device.engine(strong), case.prompt[:40], 30)  # two chunks a row, then one
    assert np.isfinite(logits["chunked"]).all(), "chunked form: NaN or inf where w underflows"
    assert_close(logits["chunked"], logits["split"], "v6 chunked vs split, decays near and at 0")
