"""Cost of the GPU sampler per step: one 65,536-token line per draw, random logits (flat, like the
random-init models of bench/engine_speed.py, so top-p keeps many tokens: its worst case).

    python -m bench.sampler_speed [--draws 1 --draws 64] [--repeat 50]

Prints the time of a sampler-only submit + readback per setting; the greedy row (one pass over the
line, plus the submit and readback every setting pays) is the floor the others compare to.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from backend.gpu.device import Gpu
from backend.gpu.pipelines import PipelineCache
from backend.gpu.sampler import GpuSampler
from backend.gpu.step_types import Draw
from backend.sampling.race import draw_key

VOCAB = 65536
SETTINGS = {
    "greedy": {"temperature": 0.0},
    "temperature 1": {},
    "top-p 0.5": {"top_p": 0.5},
    "top-k 40": {"top_k": 40},
    "top-k 40 + top-p 0.9 + min-p": {"top_k": 40, "top_p": 0.9, "min_p": 0.05},
    "logprobs 5": {"logprobs": 5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, action="append", default=[])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    counts = args.draws or [1, 64]
    gpu = Gpu()
    logits = np.random.default_rng(0).standard_normal((max(counts), VOCAB)).astype(np.float32)
    sampler = GpuSampler(gpu, PipelineCache(gpu.device), gpu.upload(logits), VOCAB, max(counts))
    rng = np.random.default_rng(1)
    print(f"{gpu.summary.name}: ms per sampler submit + readback (65,536-token lines)")
    for n in counts:
        for name, setting in SETTINGS.items():
            draws = [Draw(i, i, draw_key(rng), fresh=True, **setting) for i in range(n)]
            sampler.run(draws, list(range(n)))  # warm-up (pipeline build)
            start = time.perf_counter()
            for _ in range(args.repeat):
                sampler.run(draws, list(range(n)))
            ms = (time.perf_counter() - start) / args.repeat * 1e3
            print(f"  {n:3d} draws  {name:30s} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
