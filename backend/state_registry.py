"""The states requests may start from, as the scheduler thread keeps them: saved-state handles (host copies, an
LRU, each visible to the tenant that saved it), initial states (id -> prefix-cache namespace, the default one),
and which finished generations' states the prefix cache may still hold (so `state.save` works after `done`)."""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict

import numpy as np

SAVED_STATES = 64  # saved-state handles kept in host memory
FINISHED_KEPT = 256  # finished (id, branch) -> fed tokens, so state.save works after `done`
SHARED = "*"  # the tenant that sees every saved state (the admin key; states the admin routes bring in)

Namespace = tuple[str, int | str]  # (tenant, initial-state number or "saved:HANDLE"): a state-cache key space


class StateRegistry:
    def __init__(self) -> None:
        self._saved: OrderedDict[str, list[np.ndarray]] = OrderedDict()
        self._owners: dict[str, str] = {}  # saved-state handle -> the tenant that saved it
        self._finished: OrderedDict[tuple[str, int], tuple[Namespace, tuple[int, ...]]] = OrderedDict()
        self.initial_states: dict[str, int] = {"": 0}  # initial-state id -> its prefix-cache namespace
        self.default_state = ""  # where a generation that names no state starts
        self._namespaces = itertools.count(1)

    # ---- saved states ----

    def store(self, layers: list[np.ndarray], tenant: str = SHARED) -> str:
        """Keep a copy of a state under a new handle (the oldest go beyond SAVED_STATES); only `tenant` sees it
        (SHARED: every tenant, for states the admin routes bring in)."""
        handle = f"state-{uuid.uuid4().hex[:16]}"
        self._saved[handle] = [np.array(a, np.float32, copy=True) for a in layers]
        self._owners[handle] = tenant
        while len(self._saved) > SAVED_STATES:
            self._owners.pop(self._saved.popitem(last=False)[0], None)
        return handle

    def _visible(self, handle: str, tenant: str) -> bool:
        return handle in self._saved and (tenant == SHARED or self._owners.get(handle) in (tenant, SHARED))

    def saved(self, handle: str, tenant: str = SHARED) -> list[np.ndarray] | None:
        return self._saved.get(handle) if self._visible(handle, tenant) else None

    def handles(self, tenant: str = SHARED) -> dict[str, int]:
        """handle -> bytes, oldest first, of the states `tenant` sees."""
        return {h: sum(a.nbytes for a in layers) for h, layers in self._saved.items() if self._visible(h, tenant)}

    def drop(self, handle: str, tenant: str = SHARED) -> bool:
        if not self._visible(handle, tenant):
            return False
        self._owners.pop(handle, None)
        return self._saved.pop(handle, None) is not None

    def knows(self, state: str, tenant: str) -> bool:
        """A request may start from `state`: a loaded initial state or a handle its tenant sees."""
        return state in self.initial_states or self.saved(state, tenant) is not None

    # ---- initial states ----

    def add_initial(self, state_id: str, default: bool) -> None:
        self.initial_states[state_id] = next(self._namespaces)  # a fresh namespace: a reloaded id starts clean
        if default:
            self.default_state = state_id

    def remove_initial(self, state_id: str) -> None:
        del self.initial_states[state_id]
        if self.default_state == state_id:
            self.default_state = ""

    # ---- finished generations ----

    def remember_finished(self, key: tuple[str, int], ns: Namespace, fed: tuple[int, ...]) -> None:
        self._finished[key] = (ns, fed)
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)

    def finished(self, key: tuple[str, int]) -> tuple[Namespace, tuple[int, ...]] | None:
        return self._finished.get(key)

    def new_model(self) -> None:
        """Another model serves: initial states, finished generations and saved states belong to the old one."""
        self._finished.clear()
        self.initial_states, self.default_state = {"": 0}, ""

    def clear_saved(self) -> None:
        self._saved.clear()
        self._owners.clear()
