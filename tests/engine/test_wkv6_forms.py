"""RWKV-5/6's time mix in both forms, each forced where the default picks the other: one kernel token
by token (the default up to WKV_FUSED_MAX_TOKENS a step) and, for longer steps, a pre pass for v6's per-token
decay, a scan of the state update alone and a post pass with bonus, group norm and gate."""

from __future__ import annotations

import pytest

from backend.gpu.engine import Engine
from backend.gpu.matmul import WKV_FUSED_MAX_TOKENS
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.tools.logits import logits_for
from tests.engine.conftest import Case, Device
from tests.engine.test_models_vs_oracle import assert_close, assert_state_after_prompt_matches

# the split form at chunks of 7 (several tokens a row, rows starting mid-prompt) for every version; the
# fused one at 100 for v6 (v5's fused kernel is the same code less the decay LoRA)
CASES = [(v, "split", 7) for v in (Version.V5_0, Version.V5_2, Version.V6)] + [(Version.V6, "fused", 100)]


@pytest.mark.parametrize(("version", "form", "chunk"), CASES, ids=str)
def test_wkv6_forms_match_reference(
    device: Device, cases: dict[Version, Case], version: Version, form: str, chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Logits at every position of a 100-token prompt (the reference covers the first 64), and for the
    split form the state its scan leaves after the prompt in chunks of 16 (the default's fused size)."""
    monkeypatch.setenv("AI00_WKV", form)
    case = cases[version]
    prompt = case.prompt + case.prompt[:36]
    engine = device.engine(case, max_step_tokens=128)
    ours = logits_for(engine, prompt, chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"{version} wkv {form}, chunk {chunk}")
    if form == "split":
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
