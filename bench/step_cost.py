"""What one decode step costs the host, measured on any machine (no GPU needed: lavapipe runs it).

    python -m bench.step_cost [--model v6:1.6B --model v7:1.6B --model v6:7B --model v7:7B] [--rows 1 8 64]

Builds random-init models of real shapes (World vocab, fp16) and prints one JSON object per line:
    {"model": "v6:1.6B", "rows": 1, "dispatches": N, "dispatches_per_layer": X, "host_us": Y, ...}
`dispatches` counts every dispatch the step records (embedding, layers, head, sampler);
`dispatches_per_layer` those of the layers alone, per layer. `host_us` is the median wall time from
the plan to the step submitted (tables, one input write, the draws, submit), which is what sits
between two decode steps: the step's command buffer was recorded while the GPU ran the step before
(Engine.record_ahead). `record_us` is that recording, off the critical path; `*_cpu_us` the same as
this thread's CPU time (a busy machine inflates wall times). The engine builds a GPU's dispatch list
for steps of up to 64 tokens (every projection computes its LayerNorm input itself) with the
CPU-shaped kernels that lavapipe runs fast (AI00_MATMUL=rows AI00_LN_INPUT=all unless set; the
GPU's own tiled kernel takes minutes a step there); `plan` names it. The device's work runs between
measurements, not during them. Lavapipe runs the device work on these CPUs, so a 64-row step of a
7B model takes minutes: use --rows and --model to pick.
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
from backend.gpu.engine import Engine
from backend.gpu.loader import canonical_shapes
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.gpu.step_types import Draw, StepPlan, StepRow
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
    draws = tuple(Draw(i, i, 0.5, temperature=0.0) for i in range(rows))
    return StepPlan(step_rows, draws)


def median_us(values: list[float]) -> float:
    return round(statistics.median(values) * 1e6, 1)


def host_costs(engine: Engine, plan: StepPlan, repeat: int) -> dict[str, float]:
    """Median costs of submit() (recorded ahead) and of recording ahead; each step is collected
    (untimed) before the next starts, so the device never runs during a measurement."""
    engine.step(plan)  # warm-up; leaves a recording of these sizes
    wall, cpu, rec_wall, rec_cpu = [], [], [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.thread_time()
        pending = engine.submit(plan)
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
        engine.collect(pending)  # the device first: on lavapipe it shares these CPUs
        w, c = time.perf_counter(), time.thread_time()
        engine.record_ahead(pending.key)
        rec_wall.append(time.perf_counter() - w)
        rec_cpu.append(time.thread_time() - c)
    return {"host_us": median_us(wall), "host_cpu_us": median_us(cpu),
            "record_us": median_us(rec_wall), "record_cpu_us": median_us(rec_cpu)}  # fmt: skip


def measure(spec: str, row_counts: list[int], repeat: int, gpu: Gpu) -> list[dict]:
    version_name, size = spec.split(":")
    n_layer, n_embd = SIZES[size] if size in SIZES else map(int, size.split("x"))  # v7:24x128: layers x width
    version = Version(version_name)
    info = model_info(version, n_layer, n_embd)
    engine = Engine(info, random_tensors(version, n_layer, n_embd), max_batch=max(row_counts),
                    max_step_tokens=max(row_counts), precision="fp16", gpu=gpu)  # fmt: skip
    out = []
    for rows in row_counts:
        for slot in range(rows):
            engine.reset_slot(slot)
        dims = StepDims(rows, rows, rows)
        record = {
            "model": spec,
            "rows": rows,
            "plan": f"{os.environ.get('AI00_MATMUL', '')} ln_input={os.environ.get('AI00_LN_INPUT', '')}",
            "dispatches": engine.dispatch_count(dims, rows),
            "dispatches_per_layer": round(engine.layer_dispatch_count(dims) / n_layer, 2),
        } | host_costs(engine, decode_plan(rows), repeat)
        print(json.dumps(record), flush=True)
        out.append(record)
    del engine
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="VERSION:SIZE, e.g. v6:1.6B or v7:24x128")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeat", type=int, default=5, help="measured steps per row count (median)")
    args = parser.parse_args()
    os.environ.setdefault("AI00_MATMUL", "rows")
    os.environ.setdefault("AI00_LN_INPUT", "all")
    gpu = Gpu()
    for spec in args.model or DEFAULT_MODELS:
        measure(spec, args.rows, args.repeat, gpu)


if __name__ == "__main__":
    main()
