from backend.state_cache import StateCache


def test_longest_proper_prefix_wins_and_leaves_a_token_to_feed():
    cache = StateCache([10, 11, 12])
    a, b = cache.insert((1, 2)), cache.insert((1, 2, 3, 4))
    assert {a, b} <= {10, 11, 12} and a != b
    assert cache.match((1, 2, 3, 4, 5)) == (4, b)
    assert cache.match((1, 2, 3, 4)) == (2, a)  # the exact key would leave nothing to feed
    assert cache.match((1, 3)) is None
    assert cache.match((1, 2)) is None


def test_least_recently_used_entry_is_evicted_and_its_slot_reused():
    cache = StateCache([10, 11])
    s1 = cache.insert((1, 1))
    s2 = cache.insert((2, 2))
    cache.match((1, 1, 9))  # touch (1, 1)
    s3 = cache.insert((3, 3))
    assert s3 == s2
    assert cache.get((2, 2)) is None
    assert cache.get((1, 1)) == s1 and cache.get((3, 3)) == s3


def test_reinserting_or_tiny_or_no_slots_gives_nothing_to_copy():
    cache = StateCache([5], min_tokens=2)
    assert cache.insert((7,)) is None
    assert cache.insert((7, 8)) == 5
    assert cache.insert((7, 8)) is None
    assert StateCache([]).insert((1, 2, 3)) is None
    assert len(cache) == 1
