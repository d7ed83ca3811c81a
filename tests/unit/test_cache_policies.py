"""The state cache as chat traffic meets it, through the scheduler's policies and the fake engine (whose next
token depends on the whole history, so a wrong restored state changes the output): exact repeats, a shared
system prompt, follow-up turns, an edited earlier turn, eviction under a small budget, and the same output with
and without the cache."""

from __future__ import annotations

import random

from prometheus_client import generate_latest

from backend.messages import Done, SaveState, Started, StateSaved
from tests.unit.test_scheduler_policies import Harness, ListSink, expected_output, prompt, tokens_of

END = 261  # "\n\n" in the World vocab: the end of a chat turn
SYSTEM = (*prompt(30, 100), END)


def turn(start: int, n: int = 6) -> tuple[int, ...]:
    return (*prompt(n, start), END)


def cached_of(sink: ListSink) -> int:
    return sink.of(Started)[0].cached_tokens


def ask(h: Harness, id: str, tokens: tuple[int, ...], **kwargs: object) -> ListSink:
    sink = h.submit(id, tokens, **kwargs)
    h.run()
    assert tokens_of(sink) == expected_output(tokens, 4), "the cache changed the output"
    return sink


def test_an_exact_repeat_restores_all_but_the_last_prompt_token_and_feeds_that_one() -> None:
    h = Harness(max_batch=2, prefix_cache=2, host_bytes=1 << 20)
    p = SYSTEM + turn(300)
    ask(h, "a", p)
    plans = len(h.engine.plans)
    again = ask(h, "b", p)
    assert cached_of(again) == len(p) - 1
    assert h.engine.plans[plans].rows[0].tokens == p[-1:]  # its logits come from feeding it again
    assert again.of(Done)[0].usage.cached_tokens == len(p) - 1


def test_a_shared_system_prompt_with_a_new_question_feeds_only_the_question() -> None:
    h = Harness(max_batch=2, prefix_cache=2, host_bytes=1 << 20)
    ask(h, "a", SYSTEM + turn(300) + (7,))
    second = ask(h, "b", SYSTEM + turn(400, 9) + (7,))
    assert cached_of(second) == len(SYSTEM)
    assert cached_of(ask(h, "c", SYSTEM + turn(500, 3) + (7,), tenant="another key")) == 0


def test_each_follow_up_turn_starts_where_the_last_answer_ended() -> None:
    h = Harness(max_batch=2, prefix_cache=2, host_bytes=1 << 20)
    history, previous_fed = SYSTEM + turn(300), 0
    for i in range(3):
        sink = ask(h, f"t{i}", history)
        if i:
            assert cached_of(sink) == previous_fed
        previous_fed = len(history) + 3  # the prompt and the answer but its last token (never fed)
        history += (*tuple(tokens_of(sink)[:3]), END, *turn(400 + 10 * i))


def test_editing_an_earlier_turn_restarts_from_the_turn_before_it() -> None:
    h = Harness(max_batch=2, prefix_cache=4, host_bytes=1 << 20)
    before = SYSTEM + turn(300) + turn(310)  # user, assistant
    ask(h, "a", before + turn(320) + turn(330) + turn(340))
    edited = ask(h, "b", before + turn(900) + turn(330))
    assert cached_of(edited) == len(before)


def test_a_chunk_stops_at_each_checkpoint_so_its_state_can_be_kept() -> None:
    h = Harness(max_batch=2, chunk=64, prefix_cache=4, checkpoint_every=16)
    p = SYSTEM + prompt(40, 300)
    ask(h, "a", p)
    ends, fed = [], 0
    for plan in h.engine.plans:  # one request: each step's first row is its prompt's next chunk, then decode
        if fed < len(p):
            fed += len(plan.rows[0].tokens)
            ends.append(fed)
    assert ends == [16, len(SYSTEM), 32, 48, 64, len(p) - 1, len(p)]


def test_eviction_under_a_small_budget_keeps_to_it_and_never_changes_an_answer() -> None:
    budget = 6 * 4 * 64  # a handful of ~64-token states (the fake reads 4 bytes a token)
    h = Harness(max_batch=2, prefix_cache=1, host_bytes=budget)
    rng = random.Random(5)
    hits = 0
    for i in range(40):
        system = SYSTEM if rng.random() < 0.7 else (*prompt(30, 2000), END)
        sink = ask(h, f"r{i}", system + turn(rng.randrange(300, 330)) + (7,))
        hits += cached_of(sink) > 0
        assert h.cache.host_bytes <= budget and h.cache.tier_entries()["gpu"] <= 1
    assert h.cache.tier_entries()["host"] > 0 and hits > 20


def _replay(h: Harness, trace: list[tuple[int, ...]]) -> list[list[int]]:
    """Submit the trace two requests at a time (so cached states are saved and restored mid-batch)."""
    out = []
    for i in range(0, len(trace), 2):
        sinks = [h.submit(f"r{i + j}", p) for j, p in enumerate(trace[i : i + 2])]
        h.run()
        out += [tokens_of(s) for s in sinks]
    return out


def test_the_cache_changes_no_answer_only_what_is_fed() -> None:
    rng = random.Random(7)
    trace = [SYSTEM + turn(rng.randrange(300, 305)) + (7,) * rng.randrange(1, 30) for _ in range(24)]
    trace += trace[:6]  # exact repeats
    with_cache, without = Harness(max_batch=4, prefix_cache=2, host_bytes=1 << 20), Harness(max_batch=4)
    assert _replay(with_cache, trace) == _replay(without, trace)
    fed = [sum(plan.n_tokens for plan in h.engine.plans) for h in (with_cache, without)]
    assert fed[0] < fed[1] / 2


def test_the_metrics_count_queries_hits_tokens_saved_and_bytes_per_tier() -> None:
    h = Harness(max_batch=2, prefix_cache=1, host_bytes=1 << 20)
    p = SYSTEM + turn(300)
    ask(h, "a", p)
    ask(h, "b", p)
    text = generate_latest(h.planner.metrics.registry).decode()
    for line in ["ai00:state_cache_queries_total 2.0", 'ai00:state_cache_hits_total{tier="host"} 1.0',
                 f"ai00:state_cache_tokens_saved_total {len(p) - 1}.0", 'ai00:state_cache_bytes{tier="gpu"} 64.0',
                 'ai00:state_cache_entries{tier="host"}']:  # fmt: skip
        assert line in text, line


def test_a_conversation_carried_on_from_a_saved_state_reuses_its_own_turns_and_can_be_saved_again() -> None:
    h = Harness(max_batch=2, prefix_cache=2, host_bytes=1 << 20)
    p = SYSTEM + turn(300)
    first = ask(h, "a", p)
    h.slots.save_state(SaveState("a", first))  # type: ignore[arg-type]
    handle = first.of(StateSaved)[0].handle
    base = (*p, *tokens_of(first)[:3])  # what the saved state has seen
    second_turn = turn(400)
    second = h.submit("b", second_turn, state=handle)
    h.run()
    assert tokens_of(second) == expected_output(base + second_turn, 4)
    h.slots.save_state(SaveState("b", second))  # type: ignore[arg-type]
    assert second.of(StateSaved), "the state of a generation started from a handle is kept after its done"
    third_turn = (*second_turn, *tokens_of(second)[:3], END, *turn(500))
    third = h.submit("c", third_turn, state=handle)
    h.run()
    assert cached_of(third) == len(second_turn) + 3
    assert tokens_of(third) == expected_output(base + third_turn, 4)
