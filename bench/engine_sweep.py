"""Engine variants side by side on one GPU, in one call: aggregate decode at many streams and prefill, each
variant's engine built from the same weights, the variants taken in turn for several rounds.

    python -m bench.engine_sweep --model v6:1.6B --model v7:1.6B --streams 64 128 --rounds 3 \\
        --variant default --variant 'split AI00_WKV=split' --variant 'h64 AI00_GEMM=9:32x16x2x4x4x4,17:64x64x8x4h'

A variant is a name and the environment it runs under (the engine reads its tuning knobs, DEVELOPERS.md, when it
builds its plan). bench.engine_speed builds the weights and runs batch 1, four stream counts and prefill per
model and setting: ~45 s a 1.6B setting on the H100, most of it filling the weights. Here the weights are filled
once per model, and a variant costs its engine's upload and pipelines plus the figures asked for (expected ~10 s
at 1.6B there; not yet run on a GPU), so a device call can compare several. Taking the variants in turn (A B A
B ...) spreads the GPU's drift over all of them; each figure is printed per round, with its median and spread,
so a difference smaller than the spread is seen as such (on the H100 the same setting differed by 0.3-3 %
between runs of a call, bench/NOTES.md 22).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.gpu.device import Gpu
from backend.gpu.engine import Engine
from backend.gpu.models.info import Version
from backend.gpu.pipelines import PipelineCache
from bench.engine_speed import PROMPT, SIZES, build_tensors, model_info, prefill_speed, streams_speed


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """'NAME [VAR=VALUE ...]' (values may hold ',' and ':', as AI00_GEMM's do)."""
        name, *assignments = text.split()
        env = {}
        for a in assignments:
            var, eq, value = a.partition("=")
            if not eq or not var:
                raise ValueError(f"variant {name!r}: VAR=VALUE, got {a!r}")
            env[var] = value
        return cls(name, env)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """The variables set for the block, then as they were."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure(engine: Engine, streams: list[int], steps: int, prompt: list[int]) -> dict[str, float]:
    """tok/s at each stream count ('agg N') and of the prompt's prefill ('prefill')."""
    rng = np.random.default_rng(0)
    figures = {f"agg {n}": streams_speed(engine, n, steps, rng) for n in streams}
    if prompt:
        figures["prefill"] = prefill_speed(engine, prompt, rng)[0]
    return figures


def sweep(spec: str, variants: list[Variant], args: argparse.Namespace, gpu: Gpu, pipelines: PipelineCache,
          on_run: Callable[[dict[str, list[dict]]], None]) -> dict[str, list[dict]]:  # fmt: skip
    """Per variant, one figures dict per round (the engines share `pipelines`: a variant compiles only the
    kernels whose defines differ, once); on_run gets the runs so far after each."""
    version_name, size = spec.split(":")
    version, (n_layer, n_embd) = Version(version_name), SIZES[size]
    t0 = time.perf_counter()
    tensors = build_tensors(version, n_layer, n_embd)
    print(f"[{spec}] built tensors in {time.perf_counter() - t0:.1f} s", flush=True)
    info = model_info(version, n_layer, n_embd)
    prompt = [int(t) for t in np.random.default_rng(1).integers(1, 65535, args.prompt)]
    runs: dict[str, list[dict]] = {v.name: [] for v in variants}
    for round_ in range(args.rounds):
        for v in variants:
            with environment(v.env):
                t0 = time.perf_counter()
                engine = Engine(info, tensors, max_batch=max(args.streams), max_step_tokens=args.chunk,
                                precision="fp16", gpu=gpu, pipelines=pipelines)  # fmt: skip
                built = time.perf_counter() - t0
                figures = measure(engine, args.streams, args.steps, prompt)
                del engine
                gc.collect()  # its buffers dropped before the next variant's are made (a 7B is 14 GB) ...
                gpu.device.queue.submit([])  # ... and freed: wgpu frees dropped buffers at a submission
            runs[v.name].append(figures)
            on_run(runs)
            shown = ", ".join(f"{k} {x:.0f}" for k, x in figures.items())
            print(f"[{spec}] round {round_ + 1} {v.name}: {shown} (engine built in {built:.1f} s)", flush=True)
    return runs


def summary(runs: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and figure: median, and spread as (max - min) / median."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, rounds in runs.items():
        out[name] = {}
        for key in rounds[0] if rounds else ():
            values = [r[key] for r in rounds]
            median = statistics.median(values)
            out[name][key] = {"median": median, "spread": (max(values) - min(values)) / median if median else 0.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="VERSION:SIZE, e.g. v6:1.6B")
    parser.add_argument("--variant", action="append", default=[], help="'NAME [VAR=VALUE ...]'")
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed at each stream count")
    parser.add_argument("--prompt", type=int, default=PROMPT, help="prefill prompt tokens (0: no prefill)")
    parser.add_argument("--chunk", type=int, default=1024, help="max tokens per step (prefill chunk)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants = [Variant.parse(v) for v in args.variant or ["default"]]
    if len({v.name for v in variants}) != len(variants):
        parser.error("variant names must differ")
    gpu = Gpu()
    pipelines = PipelineCache(gpu.device)
    print(f"device: {gpu.summary.name} ({gpu.summary.backend})", flush=True)
    doc: dict = {"device": gpu.summary.name, "variants": {v.name: v.env for v in variants}, "models": {},
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    for spec in args.model or ["v6:1.6B"]:

        def keep(runs: dict[str, list[dict]], spec: str = spec) -> None:
            """After every run: a call cut short keeps what it measured."""
            doc["models"][spec] = {"runs": runs, "summary": summary(runs)}
            if args.out:
                Path(args.out).write_text(json.dumps(doc, indent=1))

        runs = sweep(spec, variants, args, gpu, pipelines, keep)
        print(f"\n| {spec} | " + " | ".join(runs[variants[0].name][0]) + " |")
        print("| --- |" + " --- |" * len(runs[variants[0].name][0]))
        for name, figures in summary(runs).items():
            cells = " | ".join(f"{f['median']:.0f} ±{f['spread'] * 50:.1f} %" for f in figures.values())
            print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
