"""The GEMM's tiles on this adapter: each candidate checked against numpy, then timed on real projection shapes.

    python -m bench.gemm_tune [--tokens 16 32 64 128 256 1024] [--shape 2048x2048 ...] [--tile 64x64x4x4 ...]
                              [--slices 2 4 8]

For every token count and weight shape (fp16 rows x K, the 1.6B and 7B models' projections by default) it
times matmul_gemm.wgsl with each tile (backend/gpu/matmul.py GemmTile), the GEMV-shaped kernel the engine
uses for few tokens (matmul_vec.wgsl where subgroups are 32 wide, else matmul.wgsl), and the GEMM as it
was before tiles were a define (bench/gemm_v1.wgsl, 64 x 64, unpadded, no prefetch). Each tile also runs with
K sliced over workgroups: "TILE/sN" N slices and "TILE/rule" as many as the engine's rule gives that shape
(gemm_slices.k_slices; the same as "TILE" where it gives 1), each followed by its matmul_reduce.wgsl pass
(timed with it). The winners are taken among the rule's variants, since that is what the engine runs. It prints one JSON
line per (tokens, shape, kernel): microseconds per dispatch, TFLOP/s and the weight bytes' GB/s, then the
best kernels per token count summed over the shapes, and the winners as AI00_GEMM's text: what
GEMM_TIERS should say (--emit FILE writes it, for a run after this one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import wgpu

from backend.gpu.device import Gpu
from backend.gpu.gemm_slices import PART_FLOATS_MAX, k_slices
from backend.gpu.matmul import KERNELS, GemmTile, MatmulKernel, Segment, gemm_kernel, segment_defines
from backend.gpu.op_types import ceil_div
from backend.gpu.pipelines import SHADER_DIR, binding_layout, specialise
from backend.gpu.shader_module import create_module

SHAPES = ("2048x2048", "7168x2048", "2048x7168", "4096x4096", "14336x4096", "4096x14336")
TILES = ("32x16x2x4x4x4", "16x32x2x4x4x4", "64x32x4x4x4x2", "64x64x4x4x8", "64x64x8x4", "128x128x8x8x8",
         "32x32x4x4", "64x64x4x4", "128x64x8x4", "64x128x4x8", "128x64x8x8")  # fmt: skip
# Dispatch after dispatch of one kernel reads the same weight: a 2k x 2k fp16 one (8 MiB) stays in the H100's
# 50 MB L2, so the tiles that win there are the compute-bound ones, while the engine reads each layer's weights
# from memory once a step. Session 22's tune on one copy (bench/results/h100-2026-12-06-gemm-tune-22.txt)
# ranked tiles that lost in the engine (NOTES 22); the copies, taken in turn, make each dispatch's weights
# cold, as in a step.
COLD_MIB = 256
V1 = MatmulKernel("gemm_v1.wgsl", 64, 64, 256, False)


def build(device: wgpu.GPUDevice, shader_dir: Path, kernel: MatmulKernel, rows: int, k: int,
          shader: str | None = None) -> tuple:  # fmt: skip
    """(pipeline, layout, bindings) of the kernel on a rows x K weight, or of `shader` (its reduce) with its
    defines."""
    threads = kernel.threads if shader is None else 64
    defines = {"K4": k // 4, "X_ROW": k // 4, "COUNT": "T", "MUL_BASE": 0, "W_F16": True, "MIX_C": rows,
               "NROWS": rows, "ROW0": 0, "WGS": threads} | kernel.defines(k)  # fmt: skip
    defines |= segment_defines([Segment(rows)], 0, 0)
    source = specialise(shader or kernel.shader, defines, shader_dir)
    module = create_module(device, source)  # as the engine builds it (AI00_SHADER_CHECKS)
    entries = binding_layout(source)
    layout = device.create_bind_group_layout(entries=entries)
    pipeline = device.create_compute_pipeline(
        layout=device.create_pipeline_layout(bind_group_layouts=[layout]),
        compute={"module": module, "entry_point": "main"},
    )
    return pipeline, layout, {e["binding"] for e in entries}


def run(gpu: Gpu, pipeline: wgpu.GPUComputePipeline, groups: list[wgpu.GPUBindGroup], grid: tuple, times: int,
        sync: wgpu.GPUBuffer, then: tuple = ()) -> float:  # fmt: skip
    """Seconds per dispatch of `times` dispatches in one pass, dispatch i reading the weights of groups[i %
    len(groups)] (each followed by the `then` dispatches), waited for by a small readback."""
    start = time.perf_counter()
    enc = gpu.device.create_command_encoder()
    cp = enc.begin_compute_pass()
    for i in range(times):
        for p, g, size in ((pipeline, groups[i % len(groups)], grid), *then):
            cp.set_pipeline(p)
            cp.set_bind_group(0, g)
            cp.dispatch_workgroups(*size)
    cp.end()
    gpu.device.queue.submit([enc.finish()])
    gpu.device.queue.read_buffer(sync)
    return (time.perf_counter() - start) / times


@dataclass
class Case:
    """One weight shape and token count on the GPU, with numpy's product to check against."""

    rows: int
    k: int
    tokens: int
    bufs: dict[int, wgpu.GPUBuffer]
    want: np.ndarray
    weights: list[wgpu.GPUBuffer]  # copies of the weight (bufs[2] is the first), taken in turn


def case(gpu: Gpu, w: np.ndarray, w_bufs: list[wgpu.GPUBuffer], tokens: int) -> Case:
    rows, k = w.shape
    x = np.random.default_rng(tokens).standard_normal((tokens, k)).astype(np.float32)
    dims = gpu.device.create_buffer_with_data(data=np.array([tokens, 0, 1, 0], np.uint32).tobytes(),
                                              usage=wgpu.BufferUsage.UNIFORM)  # fmt: skip
    bufs = {0: dims, 1: gpu.upload(x, "x"), 2: w_bufs[0], 3: gpu.empty(tokens * rows * 4, "y"),
            14: gpu.empty(8 * tokens * rows * 4, "part")}  # fmt: skip
    return Case(rows, k, tokens, bufs, x @ w.astype(np.float32).T, w_bufs)


def measure(gpu: Gpu, shader_dir: Path, kernel: MatmulKernel, c: Case, sync: wgpu.GPUBuffer,
            budget_s: float) -> tuple[float, float]:  # fmt: skip
    """(seconds per dispatch, with its reduce where K is sliced; max relative error against numpy) for one
    kernel and case."""

    def bind(shader: str | None) -> tuple:
        """(pipeline, one bind group per weight copy)"""
        pipeline, layout, bindings = build(gpu.device, shader_dir, kernel, c.rows, c.k, shader)
        groups = []
        for weights in c.weights:
            entries = [{"binding": i, "resource": {"buffer": b}} for i, b in (c.bufs | {2: weights}).items()
                       if i in bindings]  # fmt: skip
            groups.append(gpu.device.create_bind_group(layout=layout, entries=entries))
        return pipeline, groups

    pipeline, groups = bind(None)
    group = groups[0]
    grid = (ceil_div(c.rows, kernel.rows), ceil_div(c.tokens, kernel.tokens), kernel.slices)
    if kernel.slices > 1:
        reduce, reduce_groups = bind("matmul_reduce.wgsl")
        then: tuple = ((reduce, reduce_groups[0], (ceil_div(c.rows, 64), c.tokens, 1)),)
    else:
        then = ()
    run(gpu, pipeline, [group], grid, 1, sync, then)
    got = gpu.read(c.bufs[3], c.tokens * c.rows * 4).reshape(c.tokens, c.rows)
    err = float(np.abs(got - c.want).max() / (np.abs(c.want).max() + 1e-9))
    once = run(gpu, pipeline, groups, grid, 2, sync, then)
    times = max(2, min(500, int(budget_s / max(once, 1e-6))))
    return min(run(gpu, pipeline, groups, grid, times, sync, then) for _ in range(2)), err


def weight_copies(nbytes: int, cold_mib: int) -> int:
    """Copies of a weight of nbytes so that together they hold at least cold_mib MiB (at least one)."""
    return max(1, ceil_div(cold_mib << 20, nbytes))


def variants(tiles: dict[str, MatmulKernel], slices: list[int], rows: int, k: int, tokens: int) -> dict:
    """Each tile unsliced, with each forced slice count K allows, and with the engine's rule ("/rule")."""
    out: dict[str, MatmulKernel] = {}
    for name, kernel in tiles.items():
        out[name] = kernel
        tile = kernel.tile
        assert tile is not None
        for s in slices:
            if (k // 4) % (s * tile.ks * tile.bk4) == 0:
                out[f"{name}/s{s}"] = replace(kernel, slices=s)
        at_count = replace(kernel, min_count=tokens, max_count=tokens)
        out[f"{name}/rule"] = replace(kernel, slices=k_slices(at_count, rows, k, tokens, PART_FLOATS_MAX))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 64, 128, 256, 1024])
    parser.add_argument("--shape", nargs="+", default=list(SHAPES), help="ROWSxK of an fp16 weight")
    parser.add_argument("--tile", nargs="+", default=list(TILES), help="BMxBTxTMxTN[xBK4[xKS]]")
    parser.add_argument("--slices", type=int, nargs="*", default=[2, 4, 8], help="forced K slices to time")
    parser.add_argument("--budget", type=float, default=0.03, help="seconds of dispatches per timing")
    parser.add_argument(
        "--cold-mib",
        type=int,
        default=COLD_MIB,
        help="copies of each weight, taken in turn, to at least this many MiB (0: one copy)",
    )
    parser.add_argument("--emit", default=None, help="write the winners as AI00_GEMM's text to this file")
    args = parser.parse_args()
    gpu = Gpu()
    print(f"# {gpu.summary.name} ({gpu.summary.backend}), subgroup {gpu.subgroup_size}", flush=True)
    gemv = KERNELS["vec"] if gpu.subgroup_size == 32 else KERNELS["tiled"]
    tiles = {t: gemm_kernel(GemmTile.parse(t)) for t in args.tile}
    best: dict[int, dict[str, float]] = {}
    shapes_done: dict[tuple[int, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shader_dir = Path(tmp)
        for f in SHADER_DIR.iterdir():
            if f.suffix == ".wgsl":
                shutil.copy(f, shader_dir / f.name)
        shutil.copy(Path(__file__).with_name("gemm_v1.wgsl"), shader_dir / "gemm_v1.wgsl")
        sync = gpu.upload(np.zeros(4, np.float32), "sync")
        for shape in args.shape:
            rows, k = (int(v) for v in shape.split("x"))
            w = (np.random.default_rng(rows + k).standard_normal((rows, k), np.float32) * k**-0.5).astype(np.float16)
            w_bufs = [gpu.upload(w, "w") for _ in range(weight_copies(w.nbytes, args.cold_mib))]
            for tokens in args.tokens:
                c = case(gpu, w, w_bufs, tokens)
                candidates = {"gemv": gemv, "gemm_v1": V1} | variants(tiles, args.slices, rows, k, tokens)
                for name, kernel in candidates.items():
                    if name == "gemv" and tokens > 64:
                        continue
                    try:
                        seconds, err = measure(gpu, shader_dir, kernel, c, sync, args.budget)
                    except Exception as e:  # a tile this adapter cannot build (workgroup memory, say)
                        print(json.dumps({"tokens": tokens, "shape": shape, "kernel": name, "error": str(e)[:200]}))
                        continue
                    ok = err < 2e-3
                    flops = 2 * rows * k * tokens
                    print(json.dumps({"tokens": tokens, "shape": shape, "kernel": name, "slices": kernel.slices,
                                      "us": round(seconds * 1e6, 1),
                                      "tflops": round(flops / seconds / 1e12, 2),
                                      "weight_gbs": round(rows * k * 2 / seconds / 1e9), "max_rel_err": f"{err:.1e}",
                                      "ok": ok}), flush=True)  # fmt: skip
                    if ok:
                        total = best.setdefault(tokens, {})
                        total[name] = total.get(name, 0.0) + seconds
                        shapes_done[(tokens, name)] = shapes_done.get((tokens, name), 0) + 1
                for b in (1, 3, 14):
                    c.bufs[b].destroy()
            for b in w_bufs:
                b.destroy()
    winners = []
    for tokens, totals in sorted(best.items()):
        ranked = sorted((s, n) for n, s in totals.items() if shapes_done[(tokens, n)] == len(args.shape))
        summary = {n: round(s * 1e6, 1) for s, n in ranked[:5]}
        print(json.dumps({"tokens": tokens, "best_us_over_shapes": summary}), flush=True)
        # the engine runs each tile with the rule's slices: the winner among those (and the GEMV)
        winners.append((tokens, next(n for _, n in ranked if n == "gemv" or n.endswith("/rule")).removesuffix("/rule")))
    tiers = tiers_of(winners)
    print(f"AI00_GEMM={tiers}")
    if args.emit:
        Path(args.emit).write_text(tiers + "\n")


def tiers_of(winners: list[tuple[int, str]]) -> str:
    """AI00_GEMM's text for the best kernel at each measured count: count c_i's tile serves the counts after
    c_(i-1) up to c_i (the first from half its count), the GEMV-shaped kernel below the first tile."""
    tiers: list[tuple[int, str]] = []
    previous = max(1, winners[0][0] // 2) if winners else 1  # below the first count measured: the GEMV
    for tokens, name in winners:
        if name == "gemv" and not tiers:
            previous = tokens
            continue
        name = name if name != "gemv" else tiers[-1][1]  # gemv winning after a tile: keep the tile
        if not tiers or tiers[-1][1] != name:
            tiers.append((previous + 1, name))
        previous = tokens
    return ",".join(f"{m}:{t}" for m, t in tiers) or f"{previous + 1}:64x64x4x4"


if __name__ == "__main__":
    main()
