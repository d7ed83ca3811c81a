"""Where a step's GPU time goes: each dispatch timed with timestamp queries, summed by kind.

    python -m bench.profile_step --model v6:1.6B --tokens 1 --tokens 64 --tokens 1024

Each dispatch runs in its own compute pass here (timestamps bracket passes), so the total is a
little above a real step's; the shares are what matter. Also prints the host's encode time.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

import numpy as np
import wgpu

from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.ops import StepDims
from backend.gpu.step_types import Logits, StepPlan, StepRow
from bench.engine_speed import SIZES, build_tensors, model_info


def kind_of(name: str) -> str:
    return re.sub(r"^\d+\.", "", name)


def profile(engine: Engine, tokens: int, rows: int) -> dict[str, float]:
    """GPU microseconds per dispatch kind for a step of `tokens` tokens over `rows` rows (logits LAST)."""
    per_row = max(1, tokens // rows)
    plan = StepPlan(tuple(StepRow(r, tuple(range(1, per_row + 1)), Logits.LAST) for r in range(rows)))
    for r in range(rows):
        engine.reset_slot(r)
    engine.step(plan)
    tables = engine._tables(plan)
    engine.ws.write_inputs(engine.gpu, tables.tokens, tables.rows, tables.positions)
    dims = tables.dims
    live = [d for d in engine.dispatches if all(d.grid(dims))]
    device = engine.gpu.device
    qs = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * len(live))
    out = device.create_buffer(size=16 * len(live), usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    enc = device.create_command_encoder()
    for i, d in enumerate(live):
        ts = {"query_set": qs, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}
        cp = enc.begin_compute_pass(timestamp_writes=ts)
        cp.set_pipeline(d.pipeline)
        cp.set_bind_group(0, d.bind_group)
        cp.dispatch_workgroups(*d.grid(dims))
        cp.end()
    enc.resolve_query_set(qs, 0, 2 * len(live), out, 0)
    device.queue.submit([enc.finish()])
    stamps = np.frombuffer(device.queue.read_buffer(out), np.uint64).reshape(-1, 2)
    period = 1.0  # ns per tick on Vulkan through wgpu (it converts)
    by_kind: dict[str, float] = defaultdict(float)
    for d, (a, b) in zip(live, stamps, strict=True):
        by_kind[kind_of(d.name)] += (int(b) - int(a)) * period / 1e3
    return dict(by_kind)


def host_encode_us(engine: Engine, plan: StepPlan, repeat: int = 20) -> tuple[float, float]:
    """(encode-only µs, whole step ms) for `plan`."""
    dims = engine._tables(plan).dims
    start = time.perf_counter()
    for _ in range(repeat):
        enc = engine.gpu.device.create_command_encoder()
        cp = enc.begin_compute_pass()
        engine.recorder.record(cp, dims)
        cp.end()
        enc.finish()
    encode = (time.perf_counter() - start) / repeat * 1e6
    start = time.perf_counter()
    for _ in range(repeat):
        engine.step(plan)
    return encode, (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="v6:1.6B")
    parser.add_argument("--tokens", type=int, action="append", default=[])
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()
    version_name, size = args.model.split(":")
    version = Version(version_name)
    n_layer, n_embd = SIZES[size]
    tensors = build_tensors(version, n_layer, n_embd)
    info = model_info(version, n_layer, n_embd)
    engine = Engine(info, tensors, max_batch=64, max_step_tokens=1024, precision="fp16")
    del tensors
    for tokens in args.tokens or [1, 64]:
        rows = min(args.rows if tokens > 1 else 1, tokens)
        kinds = profile(engine, tokens, rows)
        total = sum(kinds.values())
        plan = StepPlan(tuple(StepRow(r, tuple(range(1, tokens // rows + 1))) for r in range(rows)))
        encode, step = host_encode_us(engine, plan)
        dims = StepDims(tokens, rows, rows)
        count, per_layer = engine.dispatch_count(dims), engine.layer_dispatch_count(dims) / info.n_layer
        print(f"\n== {args.model}: {tokens} tokens in {rows} rows: GPU {total / 1e3:.2f} ms (sum of passes), "
              f"host encode {encode / 1e3:.2f} ms, whole step {step:.2f} ms, "
              f"{count} dispatches ({per_layer:g} per layer)")
        for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1])[:14]:
            print(f"  {kind:22s} {us / 1e3:8.3f} ms  {100 * us / total:5.1f} %")


if __name__ == "__main__":
    main()
