"""The scheduler's policies against a fake engine that honours the step contract (tests/unit/fake_engine.py):
admission, the token budget, fairness between decoding and prefill, forks, cancellation, scoring beside
streams, the prefix cache, and typed admin messages. Milliseconds each; server tests keep the real engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from backend.catalog import Catalog
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.messages import (
    AddInitialState,
    Answered,
    Cancel,
    Delta,
    Done,
    DropSavedState,
    Embedded,
    EventSink,
    Failed,
    ListSavedStates,
    ReadSavedState,
    SaveState,
    Score,
    Scored,
    Started,
    StateSaved,
    StoreState,
    Submit,
    SwapModel,
    WriteWeights,
)
from backend.metrics import SchedulerMetrics
from backend.planner import Planner
from backend.sampling.params import SamplerParams
from backend.scheduler import Scheduler
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from tests.unit.fake_engine import VOCAB, FakeEngine, next_token

GREEDY = SamplerParams(max_tokens=4, temperature=0.0)


class ListSink:
    """A request's events, kept in order (the planner runs in the test's thread: no event loop needed)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def put(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Harness:
    def __init__(self, max_batch: int = 4, chunk: int = 16, max_queue: int = 4, prefix_cache: int = 0,
                 max_logit_lines: int | None = None, host_bytes: int = 0, checkpoint_every: int = 512,
                 shared: bool = False, max_prefill_chunk: int | None = 0, decode_gap_ms: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter, step_tokens: int = 0) -> None:  # fmt: skip
        # as engine_builder sizes it ("auto", None here, gives the engine the room `step_tokens`)
        step_tokens = max(chunk + max_batch, max_prefill_chunk or 0, step_tokens)
        self.engine = FakeEngine(max_batch + prefix_cache, step_tokens, max_logit_lines or chunk + max_batch)
        self.cache = StateCache(list(range(max_batch, max_batch + prefix_cache)), host_bytes, state_bytes=64,
                                shared=shared)  # fmt: skip
        self.planner = Planner(_tokenizer(), max_batch=max_batch, token_chunk_size=chunk, max_queue=max_queue,
                               cache=self.cache, registry=StateRegistry(), metrics=SchedulerMetrics(),
                               checkpoint_every=checkpoint_every, max_prefill_chunk=max_prefill_chunk,
                               decode_gap_ms=decode_gap_ms, clock=clock)  # fmt: skip
        self.planner.engine = self.engine
        self.slots = self.planner.slots

    def submit(self, id: str, prompt: tuple[int, ...], n: int = 1, params: SamplerParams = GREEDY,
               **kwargs: Any) -> ListSink:  # fmt: skip
        sink = ListSink()
        self.planner.accept_submit(Submit(id, prompt, params, sink, n=n, **kwargs))  # type: ignore[arg-type]
        return sink

    def step(self) -> StepPlan:
        """One turn of the engine thread's loop (without its inbox)."""
        self.planner.admit_waiting()
        plan, owners, drawers = self.planner.plan_step()
        if plan.rows:
            self.planner.run_step(plan, owners, drawers)
        return plan

    def run(self, max_steps: int = 200) -> int:
        for i in range(max_steps):
            if not self.step().rows:
                return i
        raise AssertionError("still running after max_steps")


_TOKENIZER = None


def _tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from backend.tokenizer import Tokenizer

        _TOKENIZER = Tokenizer.from_file()
    return _TOKENIZER


def prompt(n: int, start: int = 1) -> tuple[int, ...]:
    return tuple(range(start, start + n))


def expected_output(p: tuple[int, ...], n_tokens: int) -> list[int]:
    """What the fake model generates greedily after prompt `p`."""
    history, out = p, []
    for _ in range(n_tokens):
        out.append(next_token(history))
        history += (out[-1],)
    return out


def tokens_of(sink: ListSink, branch: int = 0) -> list[int]:
    return [t for d in sink.of(Delta) if d.branch == branch for t in d.tokens]


# ---- the fake itself ----


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ((StepRow(0, (1,)), StepRow(0, (2,))), "slot appears twice"),
        ((StepRow(9, (1,)),), "slot out of range"),
        ((StepRow(0, ()),), "no tokens"),
        ((StepRow(0, (VOCAB + 5,)),), "token id"),
        ((StepRow(0, tuple(range(1, 66)), Logits.NONE),), "max_step_tokens"),
    ],
)
def test_the_fake_refuses_what_the_engine_refuses(rows: tuple[StepRow, ...], message: str) -> None:
    """The same cases as tests/engine/test_step_contract.py."""
    with pytest.raises(ValueError, match=message):
        FakeEngine(4, 64).step(StepPlan(rows))


# ---- admission ----


def test_a_request_is_admitted_in_arrival_order_with_one_slot_per_branch() -> None:
    h = Harness(max_batch=4)
    first = h.submit("a", prompt(3), n=3)
    second = h.submit("b", prompt(3), n=2)  # needs 2 slots, only 1 is free
    third = h.submit("c", prompt(3), n=1)  # would fit, but does not overtake the request before it
    assert first.of(Started) and not second.of(Started) and not third.of(Started)
    assert len(h.slots.free) == 1
    h.run()
    assert all(len(s.of(Done)) == k for s, k in ((first, 3), (second, 2), (third, 1)))
    assert second.events.index(second.of(Started)[0]) == 0 and len(h.slots.free) == 4


def test_a_full_queue_answers_overloaded_at_once() -> None:
    h = Harness(max_batch=1, max_queue=1)
    h.submit("running", prompt(2))
    h.submit("queued", prompt(2))
    refused = h.submit("refused", prompt(2))
    assert [(f.code, f.id) for f in refused.of(Failed)] == [("overloaded", "refused")]
    assert h.submit("running", prompt(2)).of(Failed)[0].code == "duplicate_id"


def test_an_unknown_state_is_refused_naming_the_field() -> None:
    failed = Harness().submit("a", prompt(2), state="nope").of(Failed)[0]
    assert (failed.code, failed.param) == ("invalid_request", "state")


# ---- the budget and fairness ----


@pytest.mark.parametrize(("chunk", "n_streams"), [(16, 3), (8, 7)])  # (8, 7): decoding alone would fill it
def test_every_step_keeps_to_the_budget_and_decoding_never_waits_for_a_prefill(chunk: int, n_streams: int) -> None:
    h = Harness(max_batch=n_streams + 1, chunk=chunk)
    params = SamplerParams(max_tokens=150, temperature=0.0)
    streams = [h.submit(f"s{i}", prompt(2, 10 * i + 1), params=params) for i in range(n_streams)]
    for _ in range(3):
        h.step()
    long = h.submit("long", prompt(200, 7), params=GREEDY)
    share = max(chunk - n_streams, chunk // 4)  # a quarter of the budget is always the prompts'
    remaining, prefill_steps = 200, 0
    while remaining:
        plan = h.step()
        decode = [r for r in plan.rows if r.logits is Logits.LAST and len(r.tokens) == 1]
        assert len(decode) == n_streams, "a decoding stream missed a step"
        assert plan.n_tokens - len(decode) == min(remaining, share)
        remaining -= plan.n_tokens - len(decode)
        prefill_steps += 1
    assert prefill_steps == -(-200 // share)
    h.run()
    for i, s in enumerate(streams):
        assert tokens_of(s) == expected_output(prompt(2, 10 * i + 1), 150)
    assert tokens_of(long) == expected_output(prompt(200, 7), 4)


def test_prompts_are_fed_in_admission_order_within_the_budget() -> None:
    h = Harness(max_batch=4, chunk=8)
    h.submit("a", prompt(10, 1))
    h.submit("b", prompt(10, 50))
    plan = h.step()
    assert [len(r.tokens) for r in plan.rows] == [8]  # a's first chunk takes the whole budget
    plan = h.step()
    assert [len(r.tokens) for r in plan.rows] == [2, 6]  # a's rest, then b


# ---- forks ----


def test_branches_share_one_prefill_then_fork_the_state() -> None:
    h = Harness(max_batch=4)
    p = prompt(5, 3)
    sink = h.submit("fork", p, n=3)
    first = h.step()
    assert len(first.rows) == 1 and first.rows[0].tokens == p  # one prefill row, for branch 0
    assert len(first.draws) == 3 and {d.row for d in first.draws} == {0}  # every branch draws from its line
    h.run()
    for b in range(3):  # each branch's slot got the prompt's state: all continue the same prompt
        assert tokens_of(sink, b) == expected_output(p, 4)
    assert sorted(d.branch for d in sink.of(Done)) == [0, 1, 2]
    assert len(h.slots.free) == 4


# ---- cancellation ----


def test_cancel_frees_the_slot_at_once_and_the_stream_ends_cancelled() -> None:
    h = Harness(max_batch=2)
    sink = h.submit("c", prompt(3), params=SamplerParams(max_tokens=50, temperature=0.0))
    other = h.submit("o", prompt(3, 9), params=SamplerParams(max_tokens=6, temperature=0.0))
    for _ in range(3):
        h.step()
    h.slots.cancel("c")
    assert len(h.slots.free) == 1 and [d.finish_reason for d in sink.of(Done)] == ["cancelled"]
    plan = h.step()
    assert len(plan.rows) == 1  # only the other stream runs
    h.run()
    assert [d.finish_reason for d in other.of(Done)] == ["length"] and len(h.slots.free) == 2


def test_cancel_of_a_waiting_request_sends_its_done_without_a_slot() -> None:
    h = Harness(max_batch=1)
    h.submit("running", prompt(3))
    waiting = h.submit("waiting", prompt(3))
    h.slots.cancel("waiting")
    assert [d.finish_reason for d in waiting.of(Done)] == ["cancelled"] and not h.slots.waiting


# ---- scoring, embeddings, the prefix cache ----


def test_scoring_rides_in_the_same_steps_as_streams_within_the_budget() -> None:
    chunk = 8
    h = Harness(max_batch=4, chunk=chunk)
    stream = h.submit("s", prompt(2), params=SamplerParams(max_tokens=20, temperature=0.0))
    h.step()
    sink = ListSink()
    h.planner.accept_score(Score("score", prompt(30, 5), ((7, 8, 9), (10, 11)), sink))  # type: ignore[arg-type]
    steps = 0
    while not sink.events:
        plan = h.step()
        assert plan.n_tokens <= chunk and any(len(r.tokens) == 1 and r.slot == 0 for r in plan.rows)
        steps += 1
    scored = sink.of(Scored)[0]
    assert steps > 1 and len(scored.log_likelihood) == 2 and scored.tokens_fed == 30 + 2 + 1
    h.run()
    assert tokens_of(stream) == expected_output(prompt(2), 20) and len(h.slots.free) == 4


def test_an_embedding_is_a_prefill_without_logits() -> None:
    h = Harness()
    sink = h.submit("e", prompt(20), params=SamplerParams(), embed=True)
    h.run()
    assert all(r.logits is Logits.NONE for p in h.engine.plans for r in p.rows)
    (embedded,) = sink.of(Embedded)
    assert embedded.prompt_tokens == 20 and np.isclose(np.linalg.norm(embedded.vector), 1.0)
    assert not sink.of(Done) and len(h.slots.free) == 4


def test_a_prompt_that_continues_a_finished_one_starts_from_the_prefix_cache() -> None:
    h = Harness(max_batch=2, prefix_cache=2)
    p = prompt(12, 4)
    first = h.submit("a", p)
    h.run()
    follow_up = p + tuple(tokens_of(first)[:3]) + (5, 6)  # a chat's next turn: what was fed, then more
    again = h.submit("b", follow_up)
    assert again.of(Started)[0].cached_tokens == 15  # the prompt and the first 3 tokens (the 4th was never fed)
    h.run()
    assert tokens_of(again) == expected_output(follow_up, 4)  # the cached state is the right one


def test_a_saved_state_continues_where_the_generation_was() -> None:
    h = Harness(max_batch=2)
    p = prompt(6)
    sink = h.submit("a", p)
    h.step()
    h.step()  # the prompt and the first drawn token are in the slot
    h.slots.save_state(SaveState("a", sink))  # type: ignore[arg-type]
    (saved,) = sink.of(StateSaved)
    h.run()
    more = (40, 41)
    resumed = h.submit("b", more, state=saved.handle)
    h.run()
    assert tokens_of(resumed) == expected_output(p + tuple(tokens_of(sink)[:1]) + more, 4)
    assert h.submit("c", more, state=saved.handle, tenant="another key").of(Failed)[0].param == "state"


# ---- the scheduler thread: typed admin messages, answered as data ----


class FakeSource:
    def __init__(self, fail_build: bool = False) -> None:
        self.fail_build, self.built = fail_build, []

    def load(self, n_slots: int) -> tuple[FakeEngine, str]:
        return FakeEngine(n_slots, 64), "the catalog"

    def build(self, model: Any, n_slots: int) -> FakeEngine:
        self.built.append(model)
        if self.fail_build and model == "new":
            raise RuntimeError("no such model")
        return FakeEngine(n_slots, 64)

    def close(self) -> None:
        pass


async def ask(scheduler: Scheduler, make) -> Any:
    sink = EventSink()
    scheduler.submit(make(sink))
    return await asyncio.wait_for(sink.get(), 5)


def with_scheduler(test, source: FakeSource | None = None):
    async def go():
        s = Scheduler(source or FakeSource(), _tokenizer(), max_batch=2, token_chunk_size=16, prefix_cache=1)
        s.start()
        try:
            assert await asyncio.wrap_future(s.started) == "the catalog"
            await test(s)
        finally:
            s.stop()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_saved_states_are_stored_read_listed_and_dropped_by_message() -> None:
    async def test(s: Scheduler) -> None:
        layers = (np.ones((2, 3), np.float32),)
        handle = (await ask(s, lambda k: StoreState(layers, "t1", k))).value
        assert (await ask(s, lambda k: ListSavedStates("t1", k))).value == {handle: 24}
        assert (await ask(s, lambda k: ListSavedStates("t2", k))).value == {}  # another key sees none
        read = (await ask(s, lambda k: ReadSavedState(handle, "t1", k))).value
        assert np.array_equal(read[0], layers[0])
        assert (await ask(s, lambda k: DropSavedState(handle, "t2", k))).value is False
        assert (await ask(s, lambda k: DropSavedState(handle, "t1", k))).value is True

    with_scheduler(test)


def test_a_draining_admin_message_waits_for_the_streams_then_fails_as_data_at_its_deadline() -> None:
    async def test(s: Scheduler) -> None:
        sink = EventSink()
        s.submit(Submit("long", prompt(3), SamplerParams(max_tokens=10_000, temperature=0.0), sink))
        assert isinstance(await sink.get(), Started)
        busy = await ask(s, lambda k: WriteWeights({"w": np.zeros(1)}, k, drain=True, deadline=0.0))
        assert isinstance(busy, Failed) and busy.code == "model_busy"
        now = await ask(s, lambda k: WriteWeights({"w": np.zeros(1)}, k))  # no drain: between two steps
        assert now == Answered(["w"])
        s.submit(Cancel("long"))

    with_scheduler(test)


def test_a_failed_swap_serves_the_old_model_again_and_answers_load_failed() -> None:
    source = FakeSource(fail_build=True)

    async def test(s: Scheduler) -> None:
        state = ("tuned", (np.zeros(2, np.float32),), True)
        assert await ask(s, lambda k: AddInitialState(*state, k)) == Answered(None)
        failed = await ask(s, lambda k: SwapModel("new", "old", (), (state,), k))
        assert isinstance(failed, Failed) and failed.code == "load_failed" and "no such model" in failed.message
        assert source.built == ["new", "old"] and s.registry.default_state == "tuned"
        sink = EventSink()
        s.submit(Submit("after", prompt(3), GREEDY, sink))
        events = [await sink.get() for _ in range(2)]
        assert isinstance(events[0], Started)

    with_scheduler(test, source)


def test_the_catalog_type_is_what_the_builder_publishes() -> None:
    """The engine thread hands the event loop an immutable snapshot, never a live object."""
    assert Catalog.__dataclass_params__.frozen  # type: ignore[attr-defined]
