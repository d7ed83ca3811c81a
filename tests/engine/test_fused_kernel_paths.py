"""The GPU-shaped kernels and the fused layer graph, held to the reference on lavapipe.

On a CPU adapter the engine runs the CPU-shaped matmul; the GPU's own kernels (the tiled GEMV that
computes its LayerNorm input itself, and the GEMM with a separate ln_mix before it) are forced here
with AI00_MATMUL, as on a GPU: the tiled one up to 8 tokens, the GEMM's tiers above.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.gpu.engine import Engine
from backend.gpu.gemm_slices import SLICE_MAX_TOKENS, k_slices, part_floats
from backend.gpu.matmul import GEMM_TIERS, GEMM_TIERS_F16, gemm_kernel, tiers_text
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.gpu.wkv_ops import wkv6_lanes, wkv7_lanes
from backend.tools.logits import logits_for
from tests.engine.conftest import Case, Device, long_prompt
from tests.engine.test_models_vs_oracle import assert_close, assert_state_after_prompt_matches

FUSED_VERSIONS = [Version.V4, Version.V5_2, Version.V6, Version.V7]


# every fused version through the tiled kernel (v7 also through the CPU kernel with the LN input for every
# weight, a bench-only form: the default CPU plan runs in test_models_vs_oracle); the GEMM's tiers for the two
# with LoRAs: lavapipe has shader-f16, so the plan takes GEMM_TIERS_F16 (9-16 tokens, then the f16 tile for 17-128
# at 64 and 100); GEMM_TIERS, an adapter without f16's, forced through AI00_GEMM at 64 (its 33-64 tile) and 100
# (65-128) for the other version (17-32 in test_batch_invariance, 129 up in test_long_steps_match_reference; each
# tile alone against numpy in test_gemm_tiles); v6 at 16 and v7 at 100 with every GEMM's K sliced over 4
# workgroups where K allows (AI00_GEMM_SLICES=4; the default rule slices only the test models' 512-wide
# channel-mix value)
F32_TIERS = tiers_text(GEMM_TIERS)
PATHS = [(v, "tiled,gemm", 7, "", "") for v in FUSED_VERSIONS] + [(Version.V7, "rows", 7, "", "")] + [
    (v, "tiled,gemm", chunk, "4" if (v, chunk) in ((Version.V6, 16), (Version.V7, 100)) else "",
     F32_TIERS if (v, chunk) in ((Version.V6, 64), (Version.V7, 100)) else "")
    for v in (Version.V6, Version.V7) for chunk in (16, 64, 100)
]


@pytest.mark.parametrize(("version", "plan", "chunk", "slices", "tiers"), PATHS,
                         ids=lambda v: "f32-tiers" if v == F32_TIERS else str(v))  # fmt: skip
def test_gpu_kernels_match_reference_at_every_position(
    device: Device, cases: dict[Version, Case], version: Version, plan: str, chunk: int, slices: str, tiers: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """chunk 7 runs the tiled kernel (LN input inside), 16 and more the GEMM (ln_mix first); the CPU kernel
    with the LN input for every weight (AI00_LN_INPUT=all, as bench.step_cost builds it) too. With slices,
    each epilogue (activations, v6's mix, the residual add, the shift store) runs in matmul_reduce.wgsl."""
    monkeypatch.setenv("AI00_MATMUL", plan)
    monkeypatch.setenv("AI00_LN_INPUT", "all")
    monkeypatch.setenv("AI00_GEMM_SLICES", slices)
    monkeypatch.setenv("AI00_GEMM", tiers)
    case = cases[version]
    prompt = long_prompt(case, chunk)
    engine = device.engine(case, max_step_tokens=128)
    if slices:
        sliced = {d.name.split(".", 1)[1] for d in engine.dispatches if d.name.endswith(".reduce")}
        assert {"proj.reduce", "output.reduce", "ffn.value.reduce"} <= sliced, sliced
    ours = logits_for(engine, prompt, chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"{version} gpu kernels, chunk {chunk}, K slices {slices or 'by rule'}, "
                 f"tiers {'GEMM_TIERS' if tiers else 'the plan'}")


@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
@pytest.mark.parametrize("chunk", [140, 512])
def test_long_steps_match_reference(
    device: Device, cases: dict[Version, Case], version: Version, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One long prompt step on a GPU's plan: the GEMM tiers for many tokens (the biggest from 257), the
    recurrence split (at 140 tokens) or chunked (forced at 512: 32 chunks in one step), and the LoRAs' first
    stages (v6's maa_w1 with its LayerNorm delta, v7's lora1 reading the mixes proj's ln_mix wrote) through
    a GEMM tile cut to their rows, as from SMALL_GEMM_MIN_TOKENS (v7's without a LayerNorm dispatch of its
    own; below it, at 16 tokens in test_gpu_kernels_match_reference_at_every_position, the tiled kernel). The
    reference covers the first 64 positions."""
    monkeypatch.setenv("AI00_MATMUL", "tiled,gemm")
    monkeypatch.setenv("AI00_WKV", "chunked" if chunk == 512 else "")
    case = cases[version]
    prompt = (case.prompt * (chunk // len(case.prompt) + 1))[:chunk]
    engine = device.engine(case, max_step_tokens=chunk)
    lora = "lora1" if version is Version.V7 else "maa_w1"
    step = StepDims(chunk, 1, 1)
    gemms = [d for d in engine.dispatches if d.name == f"0.{lora}" and all(d.grid(step))]
    assert [d.pipeline.label for d in gemms] == ["matmul_gemm.wgsl"]
    ran = {d.name for d in engine.dispatches if all(d.grid(step))}
    if version is Version.V7:  # lora1 reads the mixes proj's ln_mix left: no LayerNorm of its own
        assert "0.proj.ln_mix" in ran and "0.lora1.ln_mix" not in ran
    ours = logits_for(engine, prompt, chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"{version} one {chunk}-token step")


@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
def test_gpu_kernels_leave_the_reference_state(
    device: Device, cases: dict[Version, Case], version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shift state is stored by the output and value matmuls' epilogue: checked after a prompt."""
    monkeypatch.setenv("AI00_MATMUL", "tiled,gemm")
    case = cases[version]
    assert_state_after_prompt_matches(device.engine(case), case, f"{version} gpu kernels")


@pytest.mark.parametrize(
    ("version", "at_one", "at_many", "on_cpu", "vec_one"),
    [(Version.V4, 5, 7, 7, 7), (Version.V5_2, 5, 8, 7, 7), (Version.V6, 7, 11, 8, 8), (Version.V7, 6, 10, 8, 8)],
    ids=str,
)
def test_layers_record_few_dispatches(
    device: Device, cases: dict[Version, Case], version: Version, at_one: int, at_many: int, on_cpu: int,
    vec_one: int, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Per layer on a GPU's plan: at most 7 dispatches for a decode step with the tiled kernel (the
    batch-1 issue's budget), 8 for any step but the long ones of v5.2, v6 and v7, whose recurrence
    runs split there ([pre,] scan, post: the per-token work in parallel); the GEMM adds a LayerNorm dispatch where
    it cannot compute its input itself (v6's maa_w1 too, a LoRA stage in the GEMM from SMALL_GEMM_MIN_TOKENS;
    v7's lora1 reads the mix proj's ln_mix wrote), and so does matmul_vec for the big LN-input weights (ln_mix +
    matmul_vec was ~3x faster than the tiled kernel recomputing the LayerNorm on the H200). The CPU
    kernel takes a separate LayerNorm before the big projections at every count (it is faster there),
    unless AI00_LN_INPUT=all (bench.step_cost's GPU-shaped list). K sliced over workgroups is off here: it
    adds one reduce dispatch per sliced GEMM (test_k_slices_follow_the_rule)."""
    monkeypatch.setenv("AI00_GEMM_SLICES", "1")
    case = cases[version]
    n_layer = case.info.n_layer
    split = {Version.V5_2: 1, Version.V6: 2, Version.V7: 2}.get(version, 0)  # extra for a long step's wkv
    for plan, ln_input, one, many in (
        ("tiled,gemm", "", at_one, at_many), ("vec,gemm", "", vec_one, at_many),
        ("rows", "", on_cpu, on_cpu + split), ("rows", "all", at_one, at_one + split),
    ):  # fmt: skip
        monkeypatch.setenv("AI00_MATMUL", plan)
        monkeypatch.setenv("AI00_LN_INPUT", ln_input)
        engine = device.engine(case, max_step_tokens=128)
        assert engine.layer_dispatch_count(StepDims(1, 1, 1)) == one * n_layer, plan
        assert engine.layer_dispatch_count(StepDims(128, 1, 1)) == many * n_layer, plan


def test_k_slices_follow_the_rule(cases: dict[Version, Case]) -> None:
    """By the default rule, a GEMM with few workgroups and a long K (the test model's 512-wide channel-mix
    value, at 9-256 tokens) is sliced; one with a short K is not (K = 128 leaves slices under SLICE_MIN_K4
    vec4s), nor the open-ended tier of long steps. The reduces run against the reference in
    test_gpu_kernels_match_reference_at_every_position."""
    info = cases[Version.V7].info
    c, f, t_max = info.n_embd, info.n_ffn, 300
    part = part_floats(t_max, c + f)
    for tiers in (GEMM_TIERS, GEMM_TIERS_F16):
        ends = [m - 1 for m, _ in tiers[1:]] + [1 << 30]
        for (m, tile), end in zip(tiers, ends, strict=True):
            kernel = gemm_kernel(tile, m, end)
            value = k_slices(kernel, c, f, t_max, part)
            assert (value > 1) == (m <= SLICE_MAX_TOKENS), (tile, m, value)
            assert k_slices(kernel, f, c, t_max, part) == 1, (tile, m)  # the key: K = 128


# the chunked form at 1 (decode-sized steps forced through it), 7 (one short chunk a step) and 100 (six chunks
# of 16 and a short one in one step; 512 in test_long_steps_match_reference)
@pytest.mark.parametrize(("form", "chunk"), [("split", 7), ("fused", 100), ("chunked", 1), ("chunked", 7),
                                             ("chunked", 100)])  # fmt: skip
def test_wkv7_forms_match_reference(
    device: Device, cases: dict[Version, Case], form: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RWKV-7's time mix as three kernels (pre, scan, post), as one (token by token), and chunked (the
    scan's place taken by wkv7_chunk), each forced at the step sizes where the default picks another (the
    default runs in every other v7 test)."""
    monkeypatch.setenv("AI00_WKV", form)
    case = cases[Version.V7]
    prompt = long_prompt(case, chunk)
    engine = device.engine(case, max_step_tokens=128)
    ours = logits_for(engine, prompt, chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"v7 wkv {form}, chunk {chunk}")
    if (form, chunk) == ("chunked", 7):  # chunks of 16 after a prompt: the state the chunked form leaves (the
        # split form's: test_gpu_kernels_leave_the_reference_state, whose 16-token steps run it)
        assert_state_after_prompt_matches(device.engine(case), case, f"v7 wkv {form}")


# (version, tokens a step, LoRA rows as vec4, subgroups): 1 and 7 run the one kernel, 100 the split form's scan
FOUR_LANE_CASES = [(Version.V7, 1, "1", True), (Version.V7, 7, "1", True), (Version.V7, 7, "0", True),
                   (Version.V7, 7, "1", False), (Version.V7, 100, "1", True), (Version.V7, 100, "1", False),
                   (Version.V6, 1, "1", True), (Version.V6, 7, "0", True), (Version.V6, 7, "1", False),
                   (Version.V6, 100, "1", True), (Version.V6, 100, "1", False), (Version.V5_2, 7, "1", True),
                   (Version.V5_2, 100, "1", True)]  # fmt: skip


@pytest.mark.parametrize(("version", "chunk", "lora4", "subgroups"), FOUR_LANE_CASES, ids=str)
def test_four_invocations_a_channel_match_reference(
    device: Device, cases: dict[Version, Case], version: Version, chunk: int, lora4: str, subgroups: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """AI00_WKV7_LANES=4 (RWKV-7) and AI00_WKV6_LANES=4 (RWKV-5/6): the one-kernel recurrence with a quarter of
    each channel's LoRA and state work per invocation (wkv7_quad.wgsl, wkv6_quad.wgsl) at 1 and 7 tokens a step
    (LoRA rows as vec4, and a float at a time), the split form's scan with a head's state over four workgroups
    (wkv7_scan_quad.wgsl, wkv6_scan_quad.wgsl) at 100; their sums through subgroups (lavapipe's are 8 wide)
    and, as on an adapter without a fixed subgroup width, through workgroup memory; the state each leaves."""
    wkv = "wkv7" if version is Version.V7 else "wkv6"
    monkeypatch.setenv(f"AI00_{wkv.upper()}_LANES", "4")
    monkeypatch.setenv("AI00_LORA_VEC4", lora4)
    if not subgroups:
        monkeypatch.setattr(device.gpu, "subgroup_size", 0)
    case = cases[version]
    engine = device.engine(case, max_step_tokens=128)
    quad = [d for d in engine.dispatches if d.name.endswith((wkv, f"{wkv}.scan"))]
    sgq = {device.pipelines.defines_of(d.pipeline).get("SGQ") for d in quad}
    assert len(quad) == 2 * case.info.n_layer and sgq == {str(device.gpu.subgroup_size)}, sgq
    ours = logits_for(engine, long_prompt(case, chunk), chunk)[: len(case.prompt)]
    assert_close(ours, case.ref.logits, f"{version} {wkv} four lanes a channel, chunk {chunk}, vec4 LoRA {lora4}, "
                 f"subgroups {subgroups}")  # fmt: skip
    if lora4 == "1" and subgroups and chunk > 1:  # the state the one kernel (forced) and the quad scan leave
        monkeypatch.setenv("AI00_WKV", "fused" if chunk == 7 else "")
        assert_state_after_prompt_matches(device.engine(case), case, f"{version} {wkv} four lanes, chunk {chunk}")


def test_wkv_lanes_knobs_refuse_other_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI00_WKV7_LANES", "2")
    with pytest.raises(ValueError, match="AI00_WKV7_LANES"):
        wkv7_lanes()
    monkeypatch.setenv("AI00_WKV6_LANES", "x")
    with pytest.raises(ValueError, match="AI00_WKV6_LANES"):
        wkv6_lanes()


def test_wkv7_chunked_form_replaces_the_scan_when_chosen(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long v7 step runs wkv7.scan by default (the chunked pass not even built), wkv7.chunk in its place
    under AI00_WKV=chunked, and from AI00_WKV_CHUNKED_MIN tokens on with that threshold."""
    case = cases[Version.V7]
    n_layer = case.info.n_layer

    def wkv7_kernels_run(engine: Engine, tokens: int) -> list[str]:
        dims = StepDims(tokens, 1, 1)
        return [d.name.split(".", 1)[1] for d in engine.dispatches if ".wkv7" in d.name and all(d.grid(dims))]

    split = ["wkv7.pre", "wkv7.scan", "wkv7.post"] * n_layer
    chunked = ["wkv7.pre", "wkv7.chunk", "wkv7.post"] * n_layer
    engine = device.engine(case, max_step_tokens=128)
    assert wkv7_kernels_run(engine, 100) == split
    assert not any(d.name.endswith(".wkv7.chunk") for d in engine.dispatches)
    monkeypatch.setenv("AI00_WKV", "chunked")
    assert wkv7_kernels_run(device.engine(case, max_step_tokens=128), 100) == chunked
    monkeypatch.setenv("AI00_WKV", "")
    monkeypatch.setenv("AI00_WKV_CHUNKED_MIN", "32")
    engine = device.engine(case, max_step_tokens=128)
    assert wkv7_kernels_run(engine, 31) == split
    assert wkv7_kernels_run(engine, 32) == chunked


@pytest.mark.parametrize("version", [Version.V7], ids=str)
@pytest.mark.parametrize(("precision", "quant_type"), [("fp16", ""), ("fp16", "int8"), ("fp16", "nf4")])
def test_gpu_kernels_read_stored_weights_as_the_cpu_kernel_does(
    device: Device, cases: dict[Version, Case], version: Version, precision: str, quant_type: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """fp16, int8 and NF4 weights unpacked eight at a time (the tiled kernel's 16-byte loads) and through
    the GEMM's tiles give what the CPU kernel's four-at-a-time reads give, up to summation order."""
    case = cases[version]
    prompt, logits = case.prompt[:24], {}
    paths = (("rows", "rows", ""), ("tiled", "tiled,gemm", ""), ("gemm", "tiled,gemm", "2:32x32x4x4x4x2"))
    for name, plan, gemm in paths:
        monkeypatch.setenv("AI00_MATMUL", plan)
        monkeypatch.setenv("AI00_GEMM", gemm)
        engine = Engine(case.info, case.tensors, max_batch=2, max_step_tokens=64, precision=precision,
                        gpu=device.gpu, pipelines=device.pipelines, quant=case.info.n_layer if quant_type else 0,
                        quant_type=quant_type or "int8")  # fmt: skip
        logits[name] = logits_for(engine, prompt, chunk=6)
    assert_close(logits["tiled"], logits["rows"], f"{version} {precision} {quant_type or 'plain'}")
    assert_close(logits["gemm"], logits["rows"], f"{version} {precision} {quant_type or 'plain'} through the GEMM")


def test_weights_over_the_binding_limit_are_bound_in_slices(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an 8 MiB binding limit, the 32 MiB f32 embedding and head go in four slices each (as a
    World head does on lavapipe's 128 MiB), and the logits still match the reference."""
    case = cases[Version.V7]
    monkeypatch.setattr(device.gpu, "max_binding_bytes", 8 << 20)
    engine = device.engine(case)
    assert sum(d.name == "embed" for d in engine.dispatches) == 4
    kernels = len(engine.ops.matmul_kernels)  # the head has a dispatch per slice for each kernel of the plan
    assert sum(d.name == "head" for d in engine.dispatches) == 4 * kernels
    assert_close(logits_for(engine, case.prompt, 16), case.ref.logits, "v7 sliced embedding and head")


@pytest.mark.parametrize("version", [Version.V6, Version.V7], ids=str)
def test_lora_second_stages_read_a_float_at_a_time_match_the_reference(
    device: Device, cases: dict[Version, Case], version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LoRA second stages inside the recurrence (RWKV-7's w/a/v/g, RWKV-6's decay) read as vec4 where every
    width is a multiple of 4 (every test model's), and a float at a time otherwise, forced here with
    AI00_LORA_VEC4=0: the prompt's first 7 tokens through the one-kernel recurrence, the rest in one step
    through the split form's LoRA pass."""
    case = cases[version]
    wkv = ".wkv7" if version is Version.V7 else ".wkv6"

    def lora4(engine: Engine) -> set[str]:
        return {device.pipelines.defines_of(d.pipeline)["LORA4"] for d in engine.dispatches if wkv in d.name}

    assert lora4(device.engine(case)) == {"True"}
    monkeypatch.setenv("AI00_LORA_VEC4", "0")
    engine = device.engine(case)
    assert lora4(engine) == {"False"}
    engine.reset_slot(0)
    steps = [case.prompt[:7], case.prompt[7:]]
    ours = np.concatenate([engine.step(StepPlan((StepRow(0, tokens, Logits.ALL),))).logits for tokens in steps])
    assert_close(ours, case.ref.logits, f"{version} scalar LoRA reads, steps of 7 and {len(steps[1])}")
