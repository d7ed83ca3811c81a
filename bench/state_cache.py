"""Replay synthetic chat traffic with and without the state cache (`python -m bench.state_cache`, CPU: the demo
model on lavapipe). Several users share a few system prompts, hold multi-turn conversations (each turn sends the
whole history back, with the model's own replies, as a chat client does) and sometimes resend a request exactly
(a retry, a regenerate). Both runs see the same traffic on the same engine: greedy replies are the same with and
without the cache (tests/server/test_state_cache.py), so the histories match too.

Reports, per run: the hit rate (requests that started from a cached state; prompt tokens restored), the prompt
tokens prefilled, and time to first token (submit -> first token) p50/p99. Requests arrive in bursts of
`--concurrency` (the next turn of several conversations at once), so TTFT includes waiting behind each other.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from backend.chat import chat_prompt, chat_stop
from backend.gpu.engine import Engine
from backend.messages import Delta, Done, Started, Submit
from backend.metrics import SchedulerMetrics
from backend.planner import Planner
from backend.sampling.params import SamplerParams
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from backend.tokenizer import Tokenizer
from backend.tools.demo_model import ensure_demo_model

WORDS = ("river", "stone", "light", "garden", "winter", "letter", "music", "forest", "harbour", "window", "market",
         "bridge", "candle", "morning", "mountain", "village", "teacher", "kitchen", "lantern", "meadow", "story",
         "island", "valley", "orchard", "station", "thunder", "shadow", "mirror", "engine", "pocket", "ladder",
         "summer", "pepper", "silver", "castle", "whistle", "feather")  # fmt: skip
Messages = list[tuple[str, str, str | None]]


class TimedSink:
    """A request's events, and when its first token came."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.first_token_at = 0.0

    def put(self, event: Any) -> None:
        if isinstance(event, Delta) and event.tokens and not self.first_token_at:
            self.first_token_at = time.monotonic()
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Conversation:
    system: str
    questions: list[str]
    messages: Messages = field(default_factory=list)

    def next_turn(self) -> Messages | None:
        """The history with the next question, or None once every question was asked."""
        asked = sum(1 for role, _, _ in self.messages if role == "user")
        if asked == len(self.questions):
            return None
        base = self.messages or [("system", self.system, None)]
        return [*base, ("user", self.questions[asked], None)]


@dataclass
class Outcome:
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_traffic(args: argparse.Namespace) -> list[Conversation]:
    rng = random.Random(args.seed)
    systems = [f"You are assistant {i}. " + " ".join(sentence(rng, 9) for _ in range(args.system_sentences))
               for i in range(args.systems)]  # fmt: skip
    return [Conversation(systems[c % args.systems], [sentence(rng, args.question_words) for _ in range(args.turns)])
            for c in range(args.conversations)]  # fmt: skip


def replay(engine: Engine, tokenizer: Tokenizer, args: argparse.Namespace, cache: StateCache,
           metrics: SchedulerMetrics | None = None) -> list[Outcome]:  # fmt: skip
    """Every conversation turn by turn, `concurrency` requests at a time, with exact repeats mixed in."""
    planner = Planner(tokenizer, max_batch=args.max_batch, token_chunk_size=args.chunk, max_queue=64, cache=cache,
                      registry=StateRegistry(), metrics=metrics or SchedulerMetrics(),
                      checkpoint_every=args.checkpoint_every)  # fmt: skip
    planner.engine = engine
    rng, conversations, sent = random.Random(args.seed + 1), make_traffic(args), []
    params = SamplerParams(max_tokens=args.max_tokens, temperature=0.0, stop=chat_stop())
    outcomes: list[Outcome] = []
    while True:
        ready = [(c, m) for c in conversations if (m := c.next_turn()) is not None][: args.concurrency]
        if not ready:
            return outcomes
        burst: list[tuple[Conversation | None, Messages]] = list(ready)
        if sent and rng.random() < args.repeat:
            burst.append((None, rng.choice(sent)))  # a client resends an earlier request as it was
        sinks = []
        for i, (_, messages) in enumerate(burst):
            sink = TimedSink()
            tokens = tuple(tokenizer.encode(chat_prompt(messages)))
            sub = Submit(f"r{len(outcomes)}-{i}", tokens, params, sink)  # type: ignore[arg-type]
            planner.accept_submit(sub)
            sinks.append((sink, sub))
        run_until_idle(planner)
        for (conversation, messages), (sink, sub) in zip(burst, sinks, strict=True):
            started, done = sink.of(Started)[0], sink.of(Done)[0]
            ttft = sink.first_token_at - sub.submitted_at
            outcomes.append(Outcome(started.prompt_tokens, started.cached_tokens, ttft))
            if conversation is not None:
                conversation.messages = [*messages, ("assistant", done.text.strip() or "Yes.", None)]
                sent.append(messages)


def run_until_idle(planner: Planner) -> None:
    while True:
        planner.admit_waiting()
        plan, owners, drawers = planner.plan_step()
        if not plan.rows:
            return
        planner.run_step(plan, owners, drawers)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, outcomes: list[Outcome]) -> dict[str, Any]:
    ttft = [o.ttft_s for o in outcomes]
    prompt = sum(o.prompt_tokens for o in outcomes)
    cached = sum(o.cached_tokens for o in outcomes)
    hits = sum(o.cached_tokens > 0 for o in outcomes)
    return {"run": name, "requests": len(outcomes), "hit_rate": hits / len(outcomes),
            "prompt_tokens": prompt, "cached_tokens": cached, "prefilled": prompt - cached,
            "ttft_p50_s": statistics.median(ttft), "ttft_p99_s": percentile(ttft, 0.99)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=6)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--systems", type=int, default=2, help="system prompts the conversations share")
    p.add_argument("--system-sentences", type=int, default=5)
    p.add_argument("--question-words", type=int, default=8)
    p.add_argument("--repeat", type=float, default=0.5, help="chance a burst carries an exact repeat")
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--prefix-cache", type=int, default=8, help="GPU slots of the hot tier")
    p.add_argument("--host-bytes", type=int, default=256 << 20)
    p.add_argument("--checkpoint-every", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    tokenizer = Tokenizer.from_file()
    # fp32: lavapipe emulates f16, so f32 weights are its faster path
    engine = Engine.load(ensure_demo_model(), max_batch=args.max_batch + args.prefix_cache,
                         max_step_tokens=args.chunk + args.max_batch, precision="fp32")  # fmt: skip
    warm = argparse.Namespace(**{**vars(args), "conversations": 1, "turns": 1, "repeat": 0.0, "seed": 99})
    replay(engine, tokenizer, warm, StateCache([]))  # records the step shapes both runs use
    slots = list(range(args.max_batch, args.max_batch + args.prefix_cache))
    cache, metrics = StateCache(slots, args.host_bytes, state_bytes=engine.state_bytes), SchedulerMetrics()
    rows = [summary("without cache", replay(engine, tokenizer, args, StateCache([]))),
            summary("with cache", replay(engine, tokenizer, args, cache, metrics))]  # fmt: skip
    print(f"demo model on {engine.gpu.summary.name}, {vars(args)}")
    print("| run | requests | hit rate | prompt tokens | restored | prefilled | TTFT p50 s | TTFT p99 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = (r["run"], r["requests"], f"{r['hit_rate']:.0%}", r["prompt_tokens"], r["cached_tokens"],
                 r["prefilled"], f"{r['ttft_p50_s']:.2f}", f"{r['ttft_p99_s']:.2f}")  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    hits = {t: metrics.registry.get_sample_value("ai00:state_cache_hits_total", {"tier": t}) for t in ("gpu", "host")}
    print(f"with cache: hits by tier {hits}; at the end, states {cache.tier_entries()}, bytes {cache.tier_bytes()}")


if __name__ == "__main__":
    main()
