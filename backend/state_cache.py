"""Prefix cache: which state slot holds the state after which token prefix (LRU). Knows slot ids, not GPUs."""

from __future__ import annotations

from collections import OrderedDict


class StateCache:
    """Maps token prefixes to the cache slots whose state is "zero state, then these tokens fed"."""

    def __init__(self, slots: list[int], min_tokens: int = 2) -> None:
        self._free = list(slots)
        self._entries: OrderedDict[tuple[int, ...], int] = OrderedDict()  # prefix -> slot, oldest first
        self.min_tokens = min_tokens  # shorter prefixes save too little to be worth a slot

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, tokens: tuple[int, ...]) -> tuple[int, int] | None:
        """(prefix length, slot) of the longest cached proper prefix of `tokens`, which leaves >= 1 token to feed."""
        best: tuple[int, ...] | None = None
        for key in self._entries:
            if (
                len(key) < len(tokens)
                and (best is None or len(key) > len(best))
                and tokens[: len(key)] == key
            ):
                best = key
        if best is None:
            return None
        self._entries.move_to_end(best)
        return len(best), self._entries[best]

    def get(self, tokens: tuple[int, ...]) -> int | None:
        """The slot holding exactly `tokens`, if cached."""
        slot = self._entries.get(tokens)
        if slot is not None:
            self._entries.move_to_end(tokens)
        return slot

    def insert(self, tokens: tuple[int, ...]) -> int | None:
        """Claim a slot for `tokens` (evicting the least recently used entry); None: nothing to copy."""
        if len(tokens) < self.min_tokens or (not self._free and not self._entries):
            return None
        if tokens in self._entries:
            self._entries.move_to_end(tokens)
            return None
        slot = self._free.pop() if self._free else self._entries.popitem(last=False)[1]
        self._entries[tokens] = slot
        return slot
