"""The scheduler's fairness policy (backend/step_budget.py) against the fake engine and a fake clock: a step of
n tokens takes `base + per_token * n` seconds there, so the pace the planner picks can be checked exactly. Big
prefill steps when no stream decodes; paced ones beside streams; the floor; a model that follows slower steps;
the fixed budget when pacing is off."""

from __future__ import annotations

import numpy as np

from backend.gpu.step_types import Logits, StepPlan
from backend.sampling.params import SamplerParams
from backend.step_budget import WARMUP, WINDOW, StepTimes
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_scheduler_policies import GREEDY, Harness, expected_output, prompt, tokens_of

STREAM = SamplerParams(max_tokens=150, temperature=0.0)


class Clock:
    """Fake time that a step advances by its cost."""

    def __init__(self, base: float, per_token: float) -> None:
        self.now, self.base, self.per_token = 0.0, base, per_token

    def __call__(self) -> float:
        return self.now


def timed(h: Harness, clock: Clock) -> Harness:
    """The harness's engine, each step taking the clock's cost of its tokens."""
    engine = h.engine

    def step(plan: StepPlan):
        clock.now += clock.base + clock.per_token * plan.n_tokens
        return FakeEngine.step(engine, plan)

    engine.step = step  # type: ignore[method-assign]
    return h


def harness(clock: Clock, **kwargs) -> Harness:
    return timed(Harness(clock=clock, **kwargs), clock)


def decode_rows(plan: StepPlan) -> int:
    return sum(1 for r in plan.rows if r.logits is Logits.LAST and len(r.tokens) == 1)


def start_streams(h: Harness, n: int) -> list:
    streams = [h.submit(f"s{i}", prompt(2, 10 * i + 1), params=STREAM) for i in range(n)]
    for _ in range(3):  # their prompts are in: every step from now on carries one token of each
        h.step()
    return streams


def prefill_shares(h: Harness, n_streams: int, steps: int) -> list[int]:
    """Prompt tokens of each of the next `steps` steps, checking that no stream misses one."""
    shares = []
    for _ in range(steps):
        plan = h.step()
        assert decode_rows(plan) == n_streams, "a decoding stream missed a step"
        shares.append(plan.n_tokens - n_streams)
    return shares


def sizes_alone(h: Harness, n_tokens: int) -> list[int]:
    """The step sizes of a prompt of `n_tokens` alone until its first token, checking its output after."""
    sink = h.submit("long", prompt(n_tokens, 7), params=GREEDY)
    sizes = []
    while not tokens_of(sink):
        sizes.append(h.step().n_tokens)
    h.run()
    assert tokens_of(sink) == expected_output(prompt(n_tokens, 7), 4)
    return sizes


def test_a_prompt_alone_is_prefilled_in_max_prefill_chunk_steps() -> None:
    sizes = sizes_alone(harness(Clock(0.01, 0.001), chunk=16, max_prefill_chunk=64, decode_gap_ms=50), 400)
    # token_chunk_size until a step was measured (the first WARMUP are not), then 64: nothing decodes, so
    # nothing waits on a step's length but a newcomer, and 74 ms is far under ten 50 ms gaps
    assert sizes[: WARMUP + 1] == [16] * (WARMUP + 1) and set(sizes[WARMUP + 1 : -1]) == {64}


def test_auto_gives_a_prompt_alone_the_engines_whole_room() -> None:
    # max_prefill_chunk "auto" reaches the planner as None: the engine was built for as much as memory allows
    h = harness(Clock(0.01, 0.0001), chunk=16, max_prefill_chunk=None, step_tokens=300, decode_gap_ms=50)
    sizes = sizes_alone(h, 1000)
    assert sizes[: WARMUP + 1] == [16] * (WARMUP + 1) and set(sizes[WARMUP + 1 : -1]) == {300}


def test_a_prefill_step_alone_is_held_to_ten_decode_gaps() -> None:
    # 10 ms + 10 ms a token: 49 tokens fill the 500 ms a request arriving meanwhile may wait
    h = harness(Clock(0.01, 0.01), chunk=16, max_prefill_chunk=256, decode_gap_ms=50)
    h.submit("long", prompt(600, 7), params=GREEDY)
    assert [h.step().n_tokens for _ in range(8)][-3:] == [49, 49, 49]


def test_a_prefill_step_alone_is_never_under_token_chunk_size() -> None:
    h = harness(Clock(1.0, 0.01), chunk=16, max_prefill_chunk=256, decode_gap_ms=50)
    h.submit("long", prompt(300, 7), params=GREEDY)
    assert {h.step().n_tokens for _ in range(8)} == {16}  # over 500 ms at any size: the old budget, no less


def test_beside_running_streams_a_prefill_step_is_sized_to_keep_the_decode_gap() -> None:
    # 10 ms + 1 ms a token, a 50 ms target: 40 tokens a step, 37 of them the prompt's beside 3 streams
    h = harness(Clock(0.01, 0.001), max_batch=4, chunk=64, max_prefill_chunk=256, decode_gap_ms=50)
    streams = start_streams(h, 3)
    long = h.submit("long", prompt(300, 7), params=GREEDY)
    shares = prefill_shares(h, 3, 6)
    assert shares[0] == 64 // 4  # no step with a prompt measured yet: the floor first
    assert shares[-3:] == [37, 37, 37]  # then the fit is exact: 3 + 37 tokens take 50 ms
    h.run()
    for i, s in enumerate(streams):
        assert tokens_of(s) == expected_output(prompt(2, 10 * i + 1), 150)
    assert tokens_of(long) == expected_output(prompt(300, 7), 4)


def test_beside_few_streams_a_paced_step_fills_the_gap_up_to_the_idle_room() -> None:
    h = harness(Clock(0.001, 0.0001), max_batch=4, chunk=32, max_prefill_chunk=256, decode_gap_ms=100)
    start_streams(h, 3)
    h.submit("long", prompt(3000, 7), params=GREEDY)
    # 1,000 tokens would fit in 100 ms: the prompt gets all of max_prefill_chunk but the decode rows
    assert prefill_shares(h, 3, 8)[-4:] == [256 - 3] * 4


def test_beside_streams_auto_fills_the_gap_up_to_the_engines_room() -> None:
    h = harness(Clock(0.001, 0.0001), max_batch=4, chunk=32, max_prefill_chunk=None, step_tokens=600,
                decode_gap_ms=50)  # fmt: skip
    start_streams(h, 3)
    h.submit("long", prompt(5000, 7), params=GREEDY)
    assert prefill_shares(h, 3, 8)[-4:] == [490 - 3] * 4  # (50 - 1) / 0.1 ms: 490 tokens keep the 50 ms gap


def test_a_fit_without_slope_grows_a_paced_step_at_most_twofold() -> None:
    # every step 10 ms whatever its tokens: the fit says anything fits 50 ms; trusted only up to twice the
    # largest step measured, the steps beside the streams double until the room, none jumping to it
    h = harness(Clock(0.01, 0.0), max_batch=4, chunk=16, max_prefill_chunk=None, step_tokens=600,
                decode_gap_ms=50)  # fmt: skip
    start_streams(h, 3)
    h.submit("long", prompt(5000, 7), params=GREEDY)
    shares = prefill_shares(h, 3, 12)
    largest = 3  # the decode-only steps'
    for share in shares:
        assert share + 3 <= max(2 * largest, 16), shares
        largest = max(largest, share + 3)
    assert shares[-1] == 600 - 3


def test_prefill_never_drops_under_the_floor_when_even_decoding_alone_is_over_the_gap() -> None:
    h = harness(Clock(0.2, 0.001), max_batch=4, chunk=64, max_prefill_chunk=256, decode_gap_ms=50)
    start_streams(h, 3)
    h.submit("long", prompt(300, 7), params=GREEDY)
    assert set(prefill_shares(h, 3, 8)) == {64 // 4}  # a 200 ms step is over 50 ms at any size: the prompt still moves


def test_the_pace_follows_steps_that_get_slower() -> None:
    clock = Clock(0.01, 0.001)
    h = harness(clock, max_batch=4, chunk=64, max_prefill_chunk=256, decode_gap_ms=50)
    start_streams(h, 3)
    h.submit("long", prompt(2000, 7), params=GREEDY)
    assert prefill_shares(h, 3, 6)[-1] == 37
    clock.per_token = 0.002  # something else now shares the GPU: (50 - 10) / 2 = 20 tokens a step
    shares = prefill_shares(h, 3, WINDOW)
    assert shares[-1] == 20 - 3 and all(s <= 37 for s in shares)


def test_decode_gap_0_keeps_the_fixed_budget_however_slow_the_steps() -> None:
    h = harness(Clock(0.5, 0.01), max_batch=4, chunk=16, decode_gap_ms=0)
    start_streams(h, 3)
    h.submit("long", prompt(100, 7), params=GREEDY)
    assert set(prefill_shares(h, 3, 5)) == {16 - 3}  # today's budget: the chunk less the decode rows


def test_the_step_time_fit_ignores_warmup_and_outliers() -> None:
    times, rng = StepTimes(), np.random.default_rng(0)
    for _ in range(WARMUP):
        times.record(8, 5.0)  # first steps of an engine: pipelines and driver caches, not the step's cost
    for i in range(WINDOW):
        n = int(rng.integers(4, 140))
        slow = 10.0 if i % 8 == 3 else 1.0  # every eighth step slowed by something else on the machine
        times.record(n, slow * (0.02 + 0.0005 * n))
    a, b = times.fit()  # type: ignore[misc]
    assert abs(a - 0.02) < 0.002 and abs(b - 0.0005) < 0.00005
    assert times.tokens_within(0.07) in range(95, 105)
