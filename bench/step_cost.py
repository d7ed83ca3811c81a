"""What one step costs the host, measured on any machine (no GPU needed: lavapipe runs it).

    python -m bench.step_cost [--model v6:1.6B --model v7:1.6B --model v6:7B --model v7:7B] [--rows 1 8 64]
                              [--prefill 1024] [--repeat 5] [--prefill-repeat 1]

Builds random-init models of real shapes (World vocab, fp16) and prints one JSON object per line:
    {"model": "v6:1.6B", "rows": 1, "tokens": 1, "dispatches": N, "dispatches_per_layer": X, "host_us": Y, ...}
A `--rows N` step is a decode step: N rows of one token each, every one drawn. A `--prefill T` step is
one row of T prompt tokens whose last line is drawn (Logits.LAST), as a prompt's last chunk.
`dispatches` counts every dispatch the step records (embedding, layers, head, sampler);
`dispatches_per_layer` those of the layers alone, per layer. `host_us` is the median wall time from
the plan to the step submitted (tables, one input write, the draws, submit), which is what sits
between two decode steps: the step's command buffer was recorded while the GPU ran the step before
(Engine.record_ahead). `record_us` is that recording, off the critical path for decode steps;
`*_cpu_us` the same as this thread's CPU time (a busy machine inflates wall times). A step of new
sizes is recorded on the spot (Engine.step records ahead only decode-shaped steps), so a prefill
step's host time on the critical path is `record_us` + `host_us`: `critical_us` (= `host_us` for
decode steps).
The steps run CPU-shaped kernels that lavapipe runs fast (AI00_MATMUL=rows AI00_LN_INPUT=all unless
set: every projection computes its LayerNorm input itself; the GPU's own kernels take minutes a
step there); `plan` names the matmul kernel that served the step and the time mix's form (wkv
"fused" up to 8 tokens, "split" above: wkv_split, the same on a GPU). A GPU's dispatch list is
longer: its GEMV and GEMM take big LN-input weights after an ln_mix dispatch. `gpu_dispatches`
counts it: the engine built a second time under `--gpu-plan` (default vec,gemm, the H100's and
H200's plan), counted, never run.
The device's work runs between measurements, not during them. Lavapipe runs it on these CPUs, so a
64-row step of a 7B model, or a 1,024-token step of a 1.6B one, takes minutes: use --rows,
--prefill, --model and --prefill-repeat (measured submits of a prefill step, each followed by the
whole step on the device; 0 records only) to pick. The host's work depends on the layer count, not
the width, so a narrow model of the same depth (v7:24x128) measures it in seconds a step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np

from backend.gpu.device import Gpu
from backend.gpu.engine import Engine, StepKey
from backend.gpu.loader import canonical_shapes
from backend.gpu.matmul import WKV_FUSED_MAX_TOKENS, matmul_plan, wkv_split
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.gpu.step_types import Draw, Logits, StepPlan, StepRow
from backend.gpu.wkv_chunk import wkv_chunked
from backend.tools import demo_model
from bench.engine_speed import SIZES, model_info

DEFAULT_MODELS = ("v6:1.6B", "v7:1.6B", "v6:7B", "v7:7B")
BLOCK = 1 << 20  # big matrices are windows onto one random block: real shapes without a full host copy


def random_tensors(version: Version, n_layer: int, n_embd: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical tensors of a random-init model; matrices are overlapping windows of one random block
    (each row starts 7 elements after the last), so a 7B model costs the host no more than its block."""
    info = model_info(version, n_layer, n_embd)
    rng = np.random.default_rng(seed)
    block = rng.standard_normal(BLOCK).astype(np.float16)
    out = {}
    for name, shape in canonical_shapes(info, demo_model.default_lora(info)).items():
        if len(shape) == 2 and math.prod(shape) > BLOCK:
            rows, k = shape
            need = 7 * (rows - 1) + k
            base = np.resize(block, need) * np.float16(0.1 if name == "emb.weight" else k**-0.5)
            out[name] = np.lib.stride_tricks.as_strided(base, shape, (7 * 2, 2), writeable=False)
        else:
            out[name] = demo_model._initializer(name, version)(shape, rng).astype(np.float32).reshape(shape)
    return out


def decode_plan(rows: int) -> StepPlan:
    """`rows` sequences, one token each, every one drawn greedily on the GPU: a decode step."""
    step_rows = tuple(StepRow(slot, (1 + slot,)) for slot in range(rows))
    draws = tuple(Draw(i, i, 0, temperature=0.0) for i in range(rows))
    return StepPlan(step_rows, draws)


def prefill_plan(tokens: int) -> StepPlan:
    """One row of `tokens` prompt tokens, its last line drawn greedily on the GPU: a prompt's last chunk."""
    prompt = tuple(1 + i % 1000 for i in range(tokens))
    return StepPlan((StepRow(0, prompt, Logits.LAST),), (Draw(0, 0, 0, temperature=0.0),))


def plan_name(gpu: Gpu, dims: StepDims) -> str:
    """The matmul kernel serving a step of these sizes, its LN-input rule, and the time mix's form."""
    kernel = next(k for k in matmul_plan(gpu) if k.min_count <= dims.T <= k.max_count)
    tile = f" {kernel.tile.bm}x{kernel.tile.bt}" if kernel.tile else ""
    ln = "small weights" if kernel.ln_input_small_only else "all" if kernel.ln_input else "none (ln_mix)"
    wkv = "fused" if not wkv_split()(dims) else "chunked" if wkv_chunked()(dims) else "split"
    return f"{kernel.shader}{tile} ln_input={ln} wkv={wkv}"


def median_us(values: list[float]) -> float:
    return round(statistics.median(values) * 1e6, 1)


def host_costs(engine: Engine, plan: StepPlan, warm_up: StepPlan, repeat: int, submits: int) -> dict[str, float]:
    """Median costs of recording the step ahead (`repeat` times, after one untimed; nothing runs on the
    device) and of submit() with the step recorded ahead (`submits` times); each submitted step is
    collected (untimed) before anything else is timed, so the device never runs during a measurement.
    `warm_up` runs first, a step with the same kernels (the first use of a pipeline cost the submit
    ~30 ms of CPU on lavapipe); with no submits, nothing runs on the device and host_us is None."""
    if submits:
        engine.collect(engine.submit(warm_up))
    key = StepKey(StepDims(plan.n_tokens, len(plan.draws), len(plan.rows)), len(plan.draws), 0)  # all drawn
    engine.record_ahead(key)
    rec_wall, rec_cpu, wall, cpu = [], [], [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.thread_time()
        engine.record_ahead(key)
        rec_wall.append(time.perf_counter() - w)
        rec_cpu.append(time.thread_time() - c)
    for _ in range(submits):
        w, c = time.perf_counter(), time.thread_time()
        pending = engine.submit(plan)
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
        assert pending.key == key, "the step was recorded on the spot, not ahead"
        engine.collect(pending)  # the device first: on lavapipe it shares these CPUs
        engine.record_ahead(key)
    return {"host_us": median_us(wall) if wall else None, "host_cpu_us": median_us(cpu) if cpu else None,
            "record_us": median_us(rec_wall), "record_cpu_us": median_us(rec_cpu)}  # fmt: skip


def gpu_plan_counts(engine_args: dict, kernels: str, gpu: Gpu, dims: list[StepDims]) -> list[dict]:
    """Dispatches of steps of these sizes under a GPU's matmul plan (AI00_MATMUL=`kernels`, the kernels'
    own LN-input rule): the engine is built and counted, never run (its kernels take minutes here)."""
    saved = {name: os.environ.pop(name, None) for name in ("AI00_MATMUL", "AI00_LN_INPUT")}
    os.environ["AI00_MATMUL"] = kernels
    try:
        engine = Engine(**engine_args, gpu=gpu)
        per_layer = [round(engine.layer_dispatch_count(d) / engine.info.n_layer, 2) for d in dims]
        return [{"gpu_plan": plan_name(gpu, d), "gpu_dispatches": engine.dispatch_count(d, d.R),
                 "gpu_dispatches_per_layer": n} for d, n in zip(dims, per_layer, strict=True)]  # fmt: skip
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure(spec: str, row_counts: list[int], prefills: list[int], repeat: int, prefill_repeat: int,
            gpu_plan: str, gpu: Gpu) -> list[dict]:  # fmt: skip
    version_name, size = spec.split(":")
    n_layer, n_embd = SIZES[size] if size in SIZES else map(int, size.split("x"))  # v7:24x128: layers x width
    version = Version(version_name)
    info = model_info(version, n_layer, n_embd)
    steps = [(rows, decode_plan(rows), decode_plan(rows), repeat) for rows in row_counts]
    # a prefill's warm-up: a step as short as takes the same kernels (the split wkv form from 65 tokens)
    warm_tokens = [min(tokens, WKV_FUSED_MAX_TOKENS + 1) for tokens in prefills]
    steps += [(1, prefill_plan(t), prefill_plan(w), prefill_repeat) for t, w in zip(prefills, warm_tokens, strict=True)]
    dims = [StepDims(plan.n_tokens, len(plan.draws), rows) for rows, plan, _, _ in steps]
    engine_args = {"info": info, "tensors": random_tensors(version, n_layer, n_embd), "precision": "fp16",
                   "max_batch": max(row_counts, default=1), "max_step_tokens": max(row_counts + prefills)}  # fmt: skip
    on_gpu = gpu_plan_counts(engine_args, gpu_plan, gpu, dims) if gpu_plan else [{} for _ in dims]
    engine = Engine(**engine_args, gpu=gpu)
    out = []
    for (rows, plan, warm_up, submits), d, gpu_counts in zip(steps, dims, on_gpu, strict=True):
        for slot in range(rows):
            engine.reset_slot(slot)
        record = {
            "model": spec,
            "rows": rows,
            "tokens": plan.n_tokens,
            "plan": plan_name(gpu, d),
            "dispatches": engine.dispatch_count(d, len(plan.draws)),
            "dispatches_per_layer": round(engine.layer_dispatch_count(d) / n_layer, 2),
        } | host_costs(engine, plan, warm_up, repeat, submits)
        ahead = d.T == d.B  # Engine.step records ahead only decode-shaped steps
        if record["host_us"] is not None:
            record["critical_us"] = record["host_us"] if ahead else round(record["host_us"] + record["record_us"], 1)
        record |= gpu_counts
        print(json.dumps(record), flush=True)
        out.append(record)
    del engine
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="VERSION:SIZE, e.g. v6:1.6B or v7:24x128")
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 8, 64], help="decode steps of N rows")
    parser.add_argument("--prefill", type=int, nargs="*", default=[], help="one-row steps of T prompt tokens")
    parser.add_argument("--repeat", type=int, default=5, help="measured recordings, and decode submits (median)")
    parser.add_argument("--prefill-repeat", type=int, default=1, help="measured submits of a prefill step (0: none)")
    parser.add_argument("--gpu-plan", default="vec,gemm", help="AI00_MATMUL of a GPU to count dispatches for, '' none")
    args = parser.parse_args()
    if not args.rows and not args.prefill:
        parser.error("nothing to measure: give --rows or --prefill")
    os.environ.setdefault("AI00_MATMUL", "rows")
    os.environ.setdefault("AI00_LN_INPUT", "all")
    gpu = Gpu()
    for spec in args.model or DEFAULT_MODELS:
        measure(spec, args.rows, args.prefill, args.repeat, args.prefill_repeat, args.gpu_plan, gpu)


if __name__ == "__main__":
    main()
