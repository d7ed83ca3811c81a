"""Prefix cache: which state slot holds the state after which token prefix (LRU). Knows slot ids, not GPUs."""

from __future__ import annotations

from collections import OrderedDict


class StateCache:
    """Maps token prefixes to the cache slots whose state is "initial state, then these tokens fed".

    `ns` names the initial state (0: the zero state; the scheduler numbers tuned states), so a prefix fed
    from one initial state never matches a request starting from another.
    """

    def __init__(self, slots: list[int], min_tokens: int = 2) -> None:
        self._free = list(slots)
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], int] = OrderedDict()  # (ns, prefix) -> slot
        self.min_tokens = min_tokens  # shorter prefixes save too little to be worth a slot

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, tokens: tuple[int, ...], ns: int = 0) -> tuple[int, int] | None:
        """(prefix length, slot) of the longest cached proper prefix of `tokens`, which leaves >= 1 token to feed."""
        best: tuple[int, tuple[int, ...]] | None = None
        for key in self._entries:
            n, prefix = key
            if (
                n == ns
                and len(prefix) < len(tokens)
                and (best is None or len(prefix) > len(best[1]))
                and tokens[: len(prefix)] == prefix
            ):
                best = key
        if best is None:
            return None
        self._entries.move_to_end(best)
        return len(best[1]), self._entries[best]

    def get(self, tokens: tuple[int, ...], ns: int = 0) -> int | None:
        """The slot holding exactly `tokens`, if cached."""
        slot = self._entries.get((ns, tokens))
        if slot is not None:
            self._entries.move_to_end((ns, tokens))
        return slot

    def insert(self, tokens: tuple[int, ...], ns: int = 0) -> int | None:
        """Claim a slot for `tokens` (evicting the least recently used entry); None: nothing to copy."""
        key = (ns, tokens)
        if len(tokens) < self.min_tokens or (not self._free and not self._entries):
            return None
        if key in self._entries:
            self._entries.move_to_end(key)
            return None
        slot = self._free.pop() if self._free else self._entries.popitem(last=False)[1]
        self._entries[key] = slot
        return slot

    def clear(self) -> None:
        """Forget every prefix (the weights changed, so the cached states are stale); the slots stay."""
        self._free.extend(self._entries.values())
        self._entries.clear()
