"""Every GEMM tile the engine can pick computes x @ W.T, on shapes that leave every tile part-filled.

The layer graphs run the tiles of GEMM_TIERS against the reference model in test_fused_kernel_paths.py,
each at the step size its tier serves; this holds each tile alone (and the cut forms the engine derives
for stacked projections and LoRA stages) against numpy, in a second instead of a model run per tile.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import wgpu

from backend.gpu.matmul import (
    GEMM_TIERS,
    GEMM_TIERS_F16,
    GemmTile,
    Segment,
    gemm_fitted,
    gemm_kernel,
    segment_defines,
    tiers_text,
)
from backend.gpu.models.info import Version
from backend.gpu.op_types import ceil_div
from backend.tools.logits import logits_for
from tests.engine.conftest import Case, Device

TILES = sorted({t for _, t in GEMM_TIERS + GEMM_TIERS_F16 if not t.half}
               | {GemmTile(16, 16, 1, 4, ks=4), GemmTile(128, 64, 8, 4)}, key=str)


def run_gemm(device: Device, tile: GemmTile, w: np.ndarray, x: np.ndarray, segments: list[Segment],
             slices: int = 1) -> np.ndarray:  # fmt: skip
    """y [groups, T, rows of the group] for x [groups, T, K] (each segment reads its x group); with slices,
    K is split over that many workgroups and matmul_reduce.wgsl adds their sums (Ops._sliced_gemm)."""
    gpu = device.gpu
    rows, k = w.shape
    tokens = x.shape[1]
    kernel = gemm_fitted(gemm_kernel(tile), k, segments)
    assert kernel is not None
    kernel = replace(kernel, slices=slices)
    defines = {"K4": k // 4, "X_ROW": k // 4, "COUNT": "T", "MUL_BASE": 0, "W_F16": True, "MIX_C": rows,
               "NROWS": rows, "ROW0": 0, "WGS": kernel.threads} | kernel.defines(k)  # fmt: skip
    defines |= segment_defines(segments, 0, tokens * k // 4)
    dims = gpu.device.create_buffer_with_data(
        data=np.array([tokens, 0, 1, 0], np.uint32).tobytes(), usage=wgpu.BufferUsage.UNIFORM
    )
    y = gpu.empty(rows * tokens * 4)
    bufs = {0: dims, 1: gpu.upload(x.astype(np.float32)), 2: gpu.upload(w), 3: y}
    passes = [("matmul_gemm.wgsl", defines, (ceil_div(rows, kernel.rows), ceil_div(tokens, kernel.tokens), slices))]
    if slices > 1:
        bufs[14] = gpu.empty(slices * tokens * rows * 4)
        passes.append(("matmul_reduce.wgsl", defines | {"WGS": 64}, (ceil_div(rows, 64), tokens, 1)))
    enc = gpu.device.create_command_encoder()
    for shader, shader_defines, grid in passes:
        pipeline = device.pipelines.get(shader, shader_defines)
        entries = [{"binding": i, "resource": {"buffer": b}} for i, b in bufs.items() if i in pipeline.bindings]
        cp = enc.begin_compute_pass()
        cp.set_pipeline(pipeline.pipeline)
        cp.set_bind_group(0, gpu.device.create_bind_group(layout=pipeline.layout, entries=entries))
        cp.dispatch_workgroups(*grid)
        cp.end()
    gpu.queue.submit([enc.finish()])
    return gpu.read(y, rows * tokens * 4)


@pytest.mark.parametrize("tile", TILES, ids=str)
@pytest.mark.parametrize("tokens", [3, 37, 130])
def test_tile_computes_the_product(device: Device, tile: GemmTile, tokens: int) -> None:
    """200 rows and 37 or 130 tokens: partial row and token tiles; K = 192 splits into every tile's steps."""
    rng = np.random.default_rng(tokens)
    w = (rng.standard_normal((200, 192)) / 14).astype(np.float16)
    x = rng.standard_normal((1, tokens, 192)).astype(np.float32)
    got = run_gemm(device, tile, w, x, [Segment(200)]).reshape(tokens, 200)
    np.testing.assert_allclose(got, x[0] @ w.astype(np.float32).T, rtol=1e-4, atol=1e-4)


HALF_TILES = [GemmTile(32, 16, 2, 4, ks=4, half=True), GemmTile(64, 64, 8, 4, half=True),
              GemmTile(128, 128, 8, 8, bk4=8, half=True)]  # fmt: skip


@pytest.mark.parametrize("tile", HALF_TILES, ids=str)
@pytest.mark.parametrize("slices", [1, 2])
def test_f16_tile_computes_the_product_to_f16_precision(device: Device, tile: GemmTile, slices: int) -> None:
    """f16 stages and multiply-adds (K split inside the tile, over workgroups, and neither): within f16's
    rounding of the inputs (~5e-4 relative each) of the f32 product, on 200 rows x 37 tokens x K 512."""
    if "shader-f16" not in device.gpu.features:
        pytest.skip("the adapter has no shader-f16")
    rng = np.random.default_rng(slices)
    w = (rng.standard_normal((200, 512)) / 22).astype(np.float16)
    x = rng.standard_normal((1, 37, 512)).astype(np.float32)
    got = run_gemm(device, tile, w, x, [Segment(200)], slices).reshape(37, 200)
    want = x[0] @ w.astype(np.float32).T
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * np.abs(want).max())


def test_f16_tiles_keep_the_models_logits_and_spare_unbounded_inputs(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """v7 (fp16 weights) with every GEMM tier an f16 tile (GEMM_TIERS_F16's, with its 9-16 tile made f16 too):
    logits within 5 % of the spread of the reference's and the same top token where the reference is decisive
    (the fp16 path's own bounds, test_models_vs_oracle). Only the LayerNorm-input matmuls take the f16 tile:
    the channel mix's value (relu(k)^2 in) and the time mix's output keep f32 arithmetic."""
    if "shader-f16" not in device.gpu.features:
        pytest.skip("the adapter has no shader-f16")
    monkeypatch.setenv("AI00_MATMUL", "tiled,gemm")
    monkeypatch.setenv("AI00_GEMM", "9:32x16x2x4x4x4h," + tiers_text(GEMM_TIERS_F16[1:]))
    case = cases[Version.V7]
    engine = device.engine(case, precision="fp16", max_step_tokens=64)
    half = {d.name.split(".", 1)[1] for d in engine.dispatches
            if device.pipelines.defines_of(d.pipeline).get("HALF") == "True"}  # fmt: skip
    assert half == {"proj", "ffn.key"}, half
    ref = case.ref.logits[:64]
    spread = ref.max(-1) - ref.min(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= 1e-2 * spread
    for chunk in (16, 64):  # steps of the 9-16 tier's tile, then of the 17-128 tier's
        ours = logits_for(engine, case.prompt[:64], chunk=chunk)
        assert (np.abs(ours - ref) <= 5e-2 * spread[:, None]).all(), chunk
        assert (ours.argmax(-1) == ref.argmax(-1))[decisive].mean() >= 0.99, chunk


def test_f32_weights_keep_f32_arithmetic_in_f16_tiers(
    device: Device, cases: dict[Version, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model loaded at fp32 runs GEMM_TIERS_F16's f16 tile as an f32 one: its oracle tests keep f32 bounds."""
    monkeypatch.setenv("AI00_MATMUL", "tiled,gemm")
    monkeypatch.setenv("AI00_GEMM", tiers_text(GEMM_TIERS_F16))
    engine = device.engine(cases[Version.V6], precision="fp32", max_step_tokens=64)
    tiles = {device.pipelines.defines_of(d.pipeline).get("HALF") for d in engine.dispatches
             if d.pipeline.label == "matmul_gemm.wgsl"}  # fmt: skip
    assert tiles == {"False"}, tiles


@pytest.mark.parametrize("tile", [t for _, t in GEMM_TIERS], ids=str)
@pytest.mark.parametrize("slices", [2, 4])
def test_k_sliced_over_workgroups_sums_every_slice(device: Device, tile: GemmTile, slices: int) -> None:
    """K = 512 split over 2 or 4 workgroups, 200 rows and 37 tokens: the reduce pass adds every slice's
    partial tile into the product (a slice left out or counted twice is off by a quarter of it)."""
    rng = np.random.default_rng(slices)
    w = (rng.standard_normal((200, 512)) / 22).astype(np.float16)
    x = rng.standard_normal((1, 37, 512)).astype(np.float32)
    got = run_gemm(device, tile, w, x, [Segment(200)], slices).reshape(37, 200)
    np.testing.assert_allclose(got, x[0] @ w.astype(np.float32).T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", TILES, ids=str)
def test_tile_cut_to_stacked_segments_reads_each_segments_input(device: Device, tile: GemmTile) -> None:
    """Three projections of 64, 32 and 48 rows, each reading its own input group and writing its own
    place (a LoRA's stages): the tile is cut to 16 rows so none straddles two (gemm_fitted)."""
    rng = np.random.default_rng(1)
    sizes, tokens, k = (64, 32, 48), 21, 64
    w = (rng.standard_normal((sum(sizes), k)) / 8).astype(np.float16)
    x = rng.standard_normal((3, tokens, k)).astype(np.float32)
    segments, base = [], 0
    for g, n in enumerate(sizes):
        segments.append(Segment(n, g, base, n))
        base += tokens * n
    got = run_gemm(device, tile, w, x, segments)
    start, at = 0, 0
    for g, n in enumerate(sizes):
        want = x[g] @ w[start : start + n].astype(np.float32).T
        np.testing.assert_allclose(got[at : at + tokens * n].reshape(tokens, n), want, rtol=1e-4, atol=1e-4)
        start, at = start + n, at + tokens * n
