"""Does a long prompt's prefill freeze running streams? (`python -m bench.prefill_gap`, CPU: the demo model on
lavapipe; issue 21 item 4.)

    python -m bench.prefill_gap [--streams 4] [--prompt-tokens 16384] [--chunk 128] [--policy before after]

For each policy, on one engine (the real one, driven by the real planner on this thread, as the scheduler's
engine thread drives it; no HTTP in between): `--streams` greedy streams decode; after a few steps of them alone,
a `--prompt-tokens` prompt (seeded random token ids) is submitted beside them, and every gap between two tokens
of a running stream is kept until that prompt's first token. Then the same prompt alone, on an idle engine.
Policies: `before` is the fixed budget (decode_gap_ms = 0, max_prefill_chunk = token_chunk_size: every step
`--chunk` tokens, decode rows included, a quarter of it at least for the prompt); `after` is the shipped default
(decode_gap_ms = 100, max_prefill_chunk = "auto"; backend/step_budget.py). Gaps are timed where the planner hands
a token to its stream (what a client sees, less the network). One JSON object per line:
    {"policy", "case": "beside"|"alone", "gap_ms": {"p50", "p99", "max", "n"}, "gap_alone_ms": ...,
     "ttft_s", "steps", "prompt_tokens_per_step": {"p50", "max"}}
`gap_alone_ms` is the streams' gap before the prompt came (the step of the decode rows alone).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from typing import Any

from backend.config import ModelSection
from backend.gpu.device import Gpu
from backend.gpu.engine import Engine
from backend.gpu.loader import read_model
from backend.gpu.step_room import prefill_room
from backend.messages import Delta, Submit
from backend.metrics import SchedulerMetrics
from backend.planner import Planner
from backend.sampling.params import SamplerParams
from backend.sessions import Status
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from backend.tokenizer import Tokenizer
from backend.tools.demo_model import ensure_demo_model

DEFAULTS = ModelSection()
POLICIES = {
    "before": {"decode_gap_ms": 0.0, "max_prefill_chunk": 0},  # 0: token_chunk_size
    # the shipped defaults; "auto" reaches the planner as None (the engine's room, sized as engine_builder does)
    "after": {"decode_gap_ms": DEFAULTS.decode_gap_ms, "max_prefill_chunk": None},
}
STREAM = SamplerParams(max_tokens=1 << 20, temperature=0.0)


class TimedSink:
    """When each of a request's tokens reached it."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    def put(self, event: Any) -> None:
        if isinstance(event, Delta):
            self.arrivals.extend([time.perf_counter()] * len(event.tokens))


def step(planner: Planner) -> int:
    """One turn of the engine thread's loop; the prompt tokens it carried (all but the decode rows')."""
    planner.admit_waiting()
    decoding = sum(1 for s in planner.slots.running if s.status is Status.DECODE)
    plan, owners, drawers = planner.plan_step()
    planner.run_step(plan, owners, drawers)
    return plan.n_tokens - decoding


def run(engine: Engine, tokenizer: Tokenizer, policy: str, args: argparse.Namespace, beside: bool) -> dict:
    planner = Planner(tokenizer, max_batch=args.streams + 1, token_chunk_size=args.chunk, max_queue=64,
                      cache=StateCache([], 0), registry=StateRegistry(), metrics=SchedulerMetrics(),
                      **POLICIES[policy])  # fmt: skip
    planner.engine = engine
    streams = [TimedSink() for _ in range(args.streams if beside else 0)]
    for i, sink in enumerate(streams):
        planner.accept_submit(_submit(f"s{i}", tuple(range(10 + i, 14 + i)), STREAM, sink))
    for _ in range(args.settle if beside else 0):  # their prompts in; the step-time model sees decode steps
        step(planner)
    mark = [len(s.arrivals) for s in streams]
    rng = random.Random(args.seed)
    prompt = tuple(rng.randrange(1, engine.info.n_vocab) for _ in range(args.prompt_tokens))
    long = TimedSink()
    start = time.perf_counter()
    planner.accept_submit(_submit("long", prompt, SamplerParams(max_tokens=1, temperature=0.0), long))
    shares = []
    while not long.arrivals:
        shares.append(step(planner))
    ttft = long.arrivals[0] - start
    gaps = [b - a for s, m in zip(streams, mark, strict=True) for a, b in itertools.pairwise(s.arrivals[m:])
            if a >= start]  # fmt: skip
    before = [b - a for s, m in zip(streams, mark, strict=True) for a, b in itertools.pairwise(s.arrivals[1:m])]
    for i in range(len(streams)):
        planner.slots.cancel(f"s{i}")
    fit = planner.step_budget.times.fit()
    return {"policy": policy, "case": "beside" if beside else "alone", **POLICIES[policy], "chunk": args.chunk,
            "streams": len(streams), "prompt_tokens": args.prompt_tokens,
            "gap_ms": _ms(gaps), "gap_alone_ms": _ms(before), "ttft_s": round(ttft, 2), "steps": len(shares),
            "prompt_tokens_per_step": {"p50": statistics.median(shares), "max": max(shares)},
            "fit_ms": fit and {"a": round(fit[0] * 1e3, 1), "per_token": round(fit[1] * 1e3, 2)}}  # fmt: skip


def _submit(id: str, tokens: tuple[int, ...], params: SamplerParams, sink: TimedSink) -> Submit:
    return Submit(id, tokens, params, sink)  # type: ignore[arg-type]


def _ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return {"p50": round(statistics.median(values) * 1e3, 1), "p99": round(p99 * 1e3, 1),
            "max": round(values[-1] * 1e3, 1), "n": len(values)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=16384)
    ap.add_argument("--chunk", type=int, default=DEFAULTS.token_chunk_size, help="token_chunk_size")
    ap.add_argument("--settle", type=int, default=6, help="steps of the streams alone before the prompt comes")
    ap.add_argument("--policy", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--case", nargs="+", default=["beside", "alone"], choices=["beside", "alone"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    max_batch = args.streams + 1
    busy = args.chunk + max_batch  # as engine_builder sizes the engine for the shipped defaults
    info, tensors = read_model(ensure_demo_model())
    gpu = Gpu()
    idle = prefill_room(DEFAULTS.max_prefill_chunk, info, tensors, max_batch, gpu.max_binding_bytes, "fp32")
    engine = Engine(info, tensors, max_batch=max_batch, precision="fp32", max_logit_lines=busy,
                    max_step_tokens=max(busy, idle), gpu=gpu)  # fmt: skip
    tokenizer = Tokenizer.from_file()
    print(json.dumps({"device": engine.gpu.summary.name, "model": "demo", **vars(args)}), flush=True)
    warm = argparse.Namespace(**{**vars(args), "prompt_tokens": 2 * args.chunk, "settle": 3})
    for policy in args.policy:  # the step shapes both policies use, before anything is timed
        run(engine, tokenizer, policy, warm, beside=True)
    for case in args.case:  # the gaps first: the figure the issue asks for
        for policy in args.policy:
            print(json.dumps(run(engine, tokenizer, policy, args, beside=case == "beside")), flush=True)


if __name__ == "__main__":
    main()
