"""The state cache on its own (backend/state_cache.py, backend/checkpoints.py): the radix index, the two tiers and
their LRU eviction, namespaces, and where a prompt's checkpoints fall. States move through the fake engine's
slots, whose "state" is the tokens fed, so a wrong copy shows as the wrong history."""

from __future__ import annotations

import time

import numpy as np

from backend.checkpoints import MAX_PER_PROMPT, TurnEnds, checkpoint_positions
from backend.state_cache import StateCache
from tests.unit.fake_engine import FakeEngine

NS = ("key-a", 0)
WORK = 0  # the generation slot states are saved from and restored into


def fed(engine: FakeEngine, tokens: tuple[int, ...]) -> None:
    """Put the state after `tokens` into the work slot."""
    engine.slots[WORK] = tokens


def cached(cache: StateCache, engine: FakeEngine, tokens: tuple[int, ...], ns: tuple = NS) -> tuple[int, ...] | None:
    """What a request for `tokens` starts from: the restored history, or None on a miss."""
    entry = cache.lookup(tokens, ns)
    if entry is None:
        return None
    engine.slots[WORK] = ()
    cache.restore(entry, engine, WORK)
    assert len(engine.slots[WORK]) == entry.depth
    return engine.slots[WORK]


def test_longest_cached_prefix_wins_and_leaves_a_token_to_feed() -> None:
    engine, cache = FakeEngine(4, 64), StateCache([1, 2, 3])
    for tokens in [(1, 2), (1, 2, 3, 4), (1, 2, 7, 8, 9)]:
        fed(engine, tokens)
        assert cache.checkpoint(tokens, NS, engine, WORK)
    assert cached(cache, engine, (1, 2, 3, 4, 5)) == (1, 2, 3, 4)
    assert cached(cache, engine, (1, 2, 3, 4)) == (1, 2)  # the exact key would leave nothing to feed
    assert cached(cache, engine, (1, 2, 7, 8, 9, 10)) == (1, 2, 7, 8, 9)
    assert cached(cache, engine, (1, 2, 7, 5)) == (1, 2)  # leaves an edge midway
    assert cached(cache, engine, (1, 3)) is None and cached(cache, engine, (1, 2)) is None


def test_a_full_gpu_tier_moves_its_oldest_state_to_host_memory_and_a_hit_there_is_uploaded() -> None:
    engine, cache = FakeEngine(3, 64), StateCache([1, 2], host_bytes=1 << 20, state_bytes=64)
    for tokens in [(1, 1, 1), (2, 2, 2), (3, 3, 3)]:
        fed(engine, tokens)
        cache.checkpoint(tokens, NS, engine, WORK)
    assert cache.tier_entries() == {"gpu": 2, "host": 1}
    assert cache.tier_bytes() == {"gpu": 128, "host": 64}
    entry = cache.lookup((1, 1, 1, 9), NS)
    assert entry is not None and entry.tier == "host"
    assert cached(cache, engine, (1, 1, 1, 9)) == (1, 1, 1)
    assert cached(cache, engine, (3, 3, 3, 9)) == (3, 3, 3)


def test_the_host_tier_evicts_the_least_recently_used_within_its_byte_budget() -> None:
    engine, cache = FakeEngine(1, 64), StateCache([], host_bytes=3 * 64)  # room for three 16-float states
    for t in range(1, 5):
        if t == 4:
            assert cached(cache, engine, (1, 1, 9)) == (1, 1)  # touch the oldest: (2, 2) goes instead
        fed(engine, (t, t))
        cache.checkpoint((t, t), NS, engine, WORK)
    assert cache.host_bytes <= 3 * 64 and len(cache) == 3
    assert cached(cache, engine, (2, 2, 9)) is None
    assert [cached(cache, engine, (t, t, 9)) for t in (1, 3, 4)] == [(1, 1), (3, 3), (4, 4)]


def test_an_evicted_state_leaves_the_index_consistent() -> None:
    engine, cache = FakeEngine(1, 64), StateCache([], host_bytes=2 * 64)
    for tokens in [(5, 6, 7, 8), (5, 6, 7, 9), (5, 6)]:  # splits the edge twice; the first then goes
        fed(engine, tokens)
        cache.checkpoint(tokens, NS, engine, WORK)
    assert cached(cache, engine, (5, 6, 7, 8, 1)) == (5, 6)
    assert cached(cache, engine, (5, 6, 7, 9, 1)) == (5, 6, 7, 9)
    fed(engine, (5, 6, 7, 8))
    cache.checkpoint((5, 6, 7, 8), NS, engine, WORK)  # back in, (5, 6) out: a folded node splits again
    assert cached(cache, engine, (5, 6, 7, 8, 1)) == (5, 6, 7, 8) and cached(cache, engine, (5, 6, 1)) is None


def test_a_state_larger_than_the_host_budget_or_a_disabled_cache_keeps_nothing() -> None:
    engine = FakeEngine(1, 64)
    fed(engine, (1, 2, 3))
    assert not StateCache([], host_bytes=10).checkpoint((1, 2, 3), NS, engine, WORK)
    assert not StateCache([]).checkpoint((1, 2, 3), NS, engine, WORK)
    assert not StateCache([1], min_tokens=4).checkpoint((1, 2, 3), NS, engine, WORK)


def test_one_keys_prefixes_are_never_anothers_unless_the_cache_is_shared() -> None:
    engine = FakeEngine(2, 64)
    for shared, expect in [(False, None), (True, (1, 2, 3))]:
        cache = StateCache([1], shared=shared)
        fed(engine, (1, 2, 3))
        cache.checkpoint((1, 2, 3), ("key-a", 0), engine, WORK)
        assert cached(cache, engine, (1, 2, 3, 4), ("key-b", 0)) == expect
        assert cached(cache, engine, (1, 2, 3, 4), ("key-a", 1)) is None  # another initial state: never


def test_a_finished_generations_state_reads_back_from_either_tier() -> None:
    engine, cache = FakeEngine(2, 64), StateCache([1], host_bytes=1 << 20)
    for tokens in [(1, 2), (3, 4)]:
        fed(engine, tokens)
        cache.checkpoint(tokens, NS, engine, WORK)
    for tokens in [(1, 2), (3, 4)]:  # host, then GPU
        layers = cache.read(tokens, NS, engine)
        assert layers is not None and tuple(int(t) for t in layers[0] if t > 0) == tokens
    assert cache.read((1,), NS, engine) is None


def _lookup_seconds(cache: StateCache, tokens: tuple[int, ...]) -> float:
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(200):
            cache.lookup(tokens, NS)
        best = min(best, time.perf_counter() - t0)
    return best


def test_lookup_time_does_not_grow_with_the_number_of_cached_states() -> None:
    engine = FakeEngine(1, 64)
    small, large = StateCache([], host_bytes=1 << 30), StateCache([], host_bytes=1 << 30)
    system = tuple(range(1, 201))
    conversations = [(*system, 1000 + i, 7, 8, 9) for i in range(3000)]  # 3000 entries sharing a long prefix
    for tokens in [system, *conversations]:
        fed(engine, tokens)
        large.checkpoint(tokens, NS, engine, WORK)
    fed(engine, system)
    small.checkpoint(system, NS, engine, WORK)
    query = conversations[1234] + (5,)
    assert large.lookup(query, NS).depth == len(query) - 1  # type: ignore[union-attr]
    # a linear scan would be ~3000x slower; the radix walk costs the same whatever else is cached
    assert _lookup_seconds(large, query) < 4 * _lookup_seconds(small, query) + 1e-3


# ---- where checkpoints fall ----


def _turns() -> TurnEnds:
    from tests.unit.test_scheduler_policies import _tokenizer

    return TurnEnds(_tokenizer())


def test_checkpoints_fall_at_turn_ends_and_one_token_before_the_prompts_end() -> None:
    from tests.unit.test_scheduler_policies import _tokenizer

    tok = _tokenizer()
    system, question = "System: Be brief.\n\n", "User: Hi.\n\nAssistant:"
    tokens = tok.encode(system + question)
    positions = checkpoint_positions(tokens, 0, 0, _turns())
    n_system = len(tok.encode(system))
    assert positions == [n_system, len(tok.encode(system + "User: Hi.\n\n")), len(tokens) - 1]
    assert tok.encode(system + "User: another question\n\nAssistant:")[:n_system] == tokens[:n_system]


def test_long_prompts_get_a_checkpoint_every_k_tokens_and_at_most_a_few_per_prompt() -> None:
    tokens = list(np.arange(1, 1001) % 200 + 10)  # no turn ends
    assert checkpoint_positions(tokens, 0, 256, _turns()) == [256, 512, 768, 999]
    assert checkpoint_positions(tokens, 300, 256, _turns()) == [512, 768, 999]  # only past the cached part
    many = checkpoint_positions(tokens, 0, 16, _turns())
    assert len(many) == MAX_PER_PROMPT and many[-1] == 999 and many[-2] == 992  # the latest are kept
