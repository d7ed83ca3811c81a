"""Which engine of a model a request runs on (one engine per GPU, data parallel).

The EngineRouter stands where handlers used a scheduler: a new request goes to the engine that holds its state
(the engine that saved its state handle; where its session key or its longest prompt prefix went before), else
to the least busy one; what follows for a request (cancel, update, save) goes where it went. Only typed messages
pass through it, to each engine's Scheduler.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backend.messages import Cancel, SaveState, Score, StateSaved, Submit, Update
from backend.scheduler import Scheduler
from backend.served_model import ServedModel

AFFINITY_BLOCK = 16  # prompt tokens per routed-prefix key: a follow-up shares its conversation's blocks
REMEMBERED = 1 << 16  # routed prefixes, sessions and handles kept per model (LRU): a few MB at most
HANDLE_PREFIX = "state-"  # how saved-state handles begin (state_registry.py); initial-state ids may not
LIVE_IDS = 1 << 12  # request ids kept for their cancels and saves (ids of finished requests age out)

__all__ = ["BoundRouter", "Engine", "EngineRouter", "prefix_keys"]


@dataclass(frozen=True)
class Engine:
    """One engine thread: its scheduler, and the served model (catalog, LoRAs, states) the admin routes change."""

    model: ServedModel
    scheduler: Scheduler
    index: int  # within its model: the `engine` label of its metrics

    @property
    def load(self) -> int:
        """Generations running or queued on it (a snapshot of the engine thread's count)."""
        return self.scheduler.busy


class _Lru(OrderedDict):
    """A bounded map: the oldest key goes when it is full; a read or a write makes a key the newest. Locked:
    the saved-handle map is written from engine threads."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self._lock = threading.Lock()

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self[key] = value
            self.move_to_end(key)
            if len(self) > self.size:
                self.popitem(last=False)

    def find(self, key: Hashable) -> Any:
        with self._lock:
            value = self.get(key)
            if value is not None:
                self.move_to_end(key)
            return value


def prefix_keys(tokens: Sequence[int]) -> list[int]:
    """One key per whole AFFINITY_BLOCK of the prompt, each naming the prefix up to its block's end; a rolling
    hash, so the cost grows with the prompt, not its square."""
    keys, h = [], 0
    for end in range(AFFINITY_BLOCK, len(tokens) + 1, AFFINITY_BLOCK):
        h = hash((h, tuple(tokens[end - AFFINITY_BLOCK : end])))
        keys.append(h)
    return keys


class EngineRouter:
    """A model's engines as one scheduler for the handlers (`submit`, `max_batch`, `free_slots`, ...)."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self.engines = tuple(engines)
        self._sessions = _Lru(REMEMBERED)  # session key -> engine index
        self._prefixes = _Lru(REMEMBERED)  # prefix key -> engine index
        self._ids = _Lru(LIVE_IDS)  # request id -> engine index
        self._handles = _Lru(REMEMBERED)  # saved-state handle -> the engine holding it
        self._turn = 0  # the next engine among equally loaded ones: a burst spreads before any is admitted

    def bind(self, session: str | None) -> BoundRouter:
        return BoundRouter(self, session)

    def submit(self, msg: Any, session: str | None = None) -> None:
        if isinstance(msg, Submit | Score):
            i = self._holder(msg.state)
            if i is None:
                i = self.choose(msg.tokens if isinstance(msg, Submit) else msg.context, session)
            self._ids.put(msg.id, i)
            self.engines[i].scheduler.submit(msg)
        elif isinstance(msg, SaveState) and (i := self._ids.find(msg.id)) is not None:
            self.engines[i].scheduler.submit(replace(msg, sink=_HandleSink(msg.sink, self._handles, i)))
        elif (i := self._ids.find(getattr(msg, "id", None))) is not None:
            self.engines[i].scheduler.submit(msg)
        elif isinstance(msg, Cancel | Update) or len(self.engines) == 1 or not hasattr(msg, "sink"):
            for e in self.engines:  # not routed here (or aged out): whichever engine knows the id acts on it
                e.scheduler.submit(msg)
        else:  # an answered message for no request this router placed: the first engine answers (or refuses)
            self.engines[0].scheduler.submit(msg)

    def choose(self, tokens: Sequence[int], session: str | None) -> int:
        """The engine for a new request: where its session or its longest routed prefix ran, unless that engine
        has no free slot while another has; else the least loaded (in turn among equals)."""
        keys = prefix_keys(tokens) if len(self.engines) > 1 else []
        i = self._sessions.find(session) if session else None
        if i is None:
            i = next((j for k in reversed(keys) if (j := self._prefixes.find(k)) is not None), None)
        if i is None or not self._has_room(i):
            n = len(self.engines)
            i = min(range(n), key=lambda j: (self.engines[j].load, (j - self._turn) % n))
            self._turn = (i + 1) % n
        if session:
            self._sessions.put(session, i)
        for k in keys:
            self._prefixes.put(k, i)
        return i

    def _holder(self, state: str | None) -> int | None:
        """The engine a saved-state handle lives on: the one whose generation it was saved from, else the first
        (where the admin routes import and list states). Initial states are on every engine: None."""
        if state is None or len(self.engines) == 1 or not state.startswith(HANDLE_PREFIX):
            return None
        return self._handles.find(state) or 0

    def engine_of(self, request_id: str) -> int | None:
        """The engine a recent request went to (tests, logs)."""
        return self._ids.get(request_id)

    def _has_room(self, i: int) -> bool:
        return self.engines[i].scheduler.free_slots > 0 or all(e.scheduler.free_slots == 0 for e in self.engines)

    # ---- what handlers and probes read of "the scheduler" ----

    @property
    def scheduler(self) -> Scheduler:
        return self.engines[0].scheduler

    @property
    def max_batch(self) -> int:  # one request's branches share one engine's slots
        return min(e.scheduler.max_batch for e in self.engines)

    @property
    def free_slots(self) -> int:
        return sum(e.scheduler.free_slots for e in self.engines)

    @property
    def busy(self) -> int:
        return sum(e.scheduler.busy for e in self.engines)

    @property
    def alive(self) -> bool:
        return all(e.scheduler.alive for e in self.engines)

    @property
    def error(self) -> BaseException | None:
        return next((e.scheduler.error for e in self.engines if e.scheduler.error is not None), None)

    def __getattr__(self, name: str) -> Any:  # the rest (tokenizer, metrics, ...): the first engine's
        if name == "engines":
            raise AttributeError(name)
        return getattr(self.engines[0].scheduler, name)


@dataclass(frozen=True)
class _HandleSink:
    """A SaveState's sink that notes on which engine the saved handle lives, then passes the event on."""

    sink: Any
    handles: _Lru
    engine: int

    def put(self, event: Any) -> None:  # on the engine thread (the handle map is locked)
        if isinstance(event, StateSaved):
            self.handles.put(event.handle, self.engine)
        self.sink.put(event)


@dataclass(frozen=True)
class BoundRouter:
    """A router with a request's session key: the handlers' `scheduler.submit(msg)` carries it along."""

    router: EngineRouter
    session: str | None

    def submit(self, msg: Any) -> None:
        self.router.submit(msg, self.session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)
