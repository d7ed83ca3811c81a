"""What the scheduler's own Python costs a decode step, without any engine: the host time between two GPU steps
that no recording ahead can hide (the planner hands the next plan to the engine only after it has taken every
token of the last one).

    python -m bench.planner_cost [--streams 1 64 128 256] [--steps 100]

The real planner (backend/planner.py: plan, draws, delivery, sessions' detokenizing and stop strings, metrics)
drives an engine that answers at once: each draw returns a token from a fixed table, with no logits. Every stream
samples (temperature 1, top-p 0.5, a seed), as AI00's defaults do, with no stop strings and no grammar. Prints one
JSON line per stream count: `host_ms` per decode step (the planner's wall time less the engine's), and `us_per_stream`.
The events go to plain lists here; in the server each step's events then reach the event loop in one wake-up.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from backend.gpu.step_types import Drawn, Logits, StepPlan, StepResult, check_plan
from backend.messages import Submit
from backend.metrics import SchedulerMetrics
from backend.planner import Planner
from backend.sampling.params import SamplerParams
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from backend.tokenizer import Tokenizer

PROMPT = 24


class InstantEngine:
    """The step contract (gpu/step_types.check_plan) with no work: draws take tokens from a fixed table."""

    def __init__(self, slots: int, max_step_tokens: int) -> None:
        self.max_batch, self.max_step_tokens, self.max_logit_lines = slots, max_step_tokens, max_step_tokens
        self.tokens = np.random.default_rng(0).integers(300, 30000, 4096).tolist()  # ordinary World tokens
        self.n = 0
        self.seconds = 0.0

    def reset_slot(self, slot: int, state_id: str = "") -> None:
        pass

    def copy_slot(self, src: int, dst: int) -> None:
        pass

    def step(self, plan: StepPlan) -> StepResult:
        t0 = time.perf_counter()
        check_plan(plan, self.max_batch, self.max_step_tokens, self.max_logit_lines)
        assert all(r.logits is not Logits.ALL for r in plan.rows)
        offsets = tuple(range(len(plan.rows)))
        drawn = []
        for _ in plan.draws:
            self.n += 1
            drawn.append(Drawn(self.tokens[self.n % len(self.tokens)]))
        result = StepResult(np.zeros((0, 1), np.float32), offsets, tuple(drawn))
        self.seconds += time.perf_counter() - t0
        return result


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def put(self, event: object) -> None:
        self.events.append(event)


def step_cost(tokenizer: Tokenizer, streams: int, steps: int) -> dict:
    engine = InstantEngine(streams, 256 + streams)
    planner = Planner(tokenizer, max_batch=streams, token_chunk_size=256, max_queue=streams,
                      cache=StateCache([], 0, state_bytes=0), registry=StateRegistry(),
                      metrics=SchedulerMetrics())  # fmt: skip
    planner.engine = engine
    params = SamplerParams(max_tokens=steps + 10, temperature=1.0, top_p=0.5, seed=1)
    for i in range(streams):
        prompt = tuple(engine.tokens[(i * 7 + j) % 4096] for j in range(PROMPT))
        planner.accept_submit(Submit(f"g{i}", prompt, params, Sink()))  # type: ignore[arg-type]

    def turn() -> None:
        planner.admit_waiting()
        plan, owners, drawers = planner.plan_step()
        planner.run_step(plan, owners, drawers)

    while any(s.status.name != "DECODE" for s in planner.slots.running):  # the prompts, and every first token
        turn()
    engine.seconds, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        turn()
    host = (time.perf_counter() - t0 - engine.seconds) / steps
    return {"streams": streams, "steps": steps, "host_ms": round(host * 1e3, 3),
            "us_per_stream": round(host * 1e6 / streams, 2),
            "engine_ms": round(engine.seconds / steps * 1e3, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    tokenizer = Tokenizer.from_file()
    for n in args.streams:
        print(json.dumps(step_cost(tokenizer, n, args.steps)), flush=True)


if __name__ == "__main__":
    main()
