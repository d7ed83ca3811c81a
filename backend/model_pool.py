"""Several models in one server, each served by one or more engines (one per GPU, data parallel).

The pool maps a served name to its ModelGroup; a group's EngineRouter stands where handlers used a scheduler:
a new request goes to the engine that holds its conversation's state (its session key, else the longest prompt
prefix routed there before), else to the least loaded engine; what follows for a request (cancel, update, save)
goes where it went. Each engine is a Scheduler with its own thread, slots and state cache, so a model added or
removed at run time never touches another model's engine.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backend.catalog import ModelSpec
from backend.config import Config, ModelSection
from backend.messages import Cancel, Failed, SaveState, Score, StateSaved, Submit, Update
from backend.scheduler import Scheduler
from backend.served_model import ServedModel

AFFINITY_BLOCK = 16  # prompt tokens per routed-prefix key: a follow-up shares its conversation's blocks
REMEMBERED = 1 << 16  # routed prefixes and sessions kept per model (LRU): a few MB of ints at most
HANDLE_PREFIX = "state-"  # how saved-state handles begin (state_registry.py); initial-state ids may not
LIVE_IDS = 1 << 12  # request ids kept for their cancels and saves (ids of finished requests age out)

__all__ = ["BudgetError", "Engine", "EngineRouter", "EveryEngine", "ModelGroup", "ModelPool", "UnknownModel",
           "build_group", "check_budget", "estimate_gpu_bytes", "load_group", "start_group", "stop_group",
           "unload_group", "wait_loaded"]


class UnknownModel(LookupError):
    """A request named a model the server does not serve (with strict_model_names)."""


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

    def put(self, event: Any) -> None:  # on the engine thread: one dict write, under the GIL
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


@dataclass
class ModelGroup:
    """One served model: its settings, and an engine per configured GPU adapter."""

    section: ModelSection
    engines: tuple[Engine, ...]
    router: EngineRouter

    @property
    def name(self) -> str:
        """The configured name, else the file the first engine serves (which a swap may change)."""
        return self.section.name or self.engines[0].model.id

    @property
    def model(self) -> ServedModel:
        return self.engines[0].model

    def gpu_bytes(self) -> int:
        return sum((e.model.catalog.gpu_bytes or 0) for e in self.engines if e.model.catalog is not None)


class EveryEngine:
    """A model's engines as the admin routes see one served model: read from the first; a change (adapters,
    initial states, the model file) made on each in turn, so that every engine serves the same."""

    CHANGES = ("load_adapter", "switch_adapters", "unload_adapter", "load_state", "unload_state", "swap")

    def __init__(self, group: ModelGroup) -> None:
        self.group = group

    def __getattr__(self, name: str) -> Any:
        if name in self.CHANGES and len(self.group.engines) > 1:
            return functools.partial(self._on_each, name)
        return getattr(self.group.model, name)

    async def _on_each(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The first engine's answer. A refusal there (a bad file, a taken name) changes none; a later engine
        failing after the first checked the same inputs would leave the earlier ones changed."""
        results = [await getattr(e.model, method)(*args, **kwargs) for e in self.group.engines]
        return results[0]


class ModelPool:
    """The served models by name, the first being the default; changed only on the event loop."""

    def __init__(self, config: Config, groups: Sequence[ModelGroup]) -> None:
        self.config = config
        self._groups = list(groups)

    def __iter__(self) -> Iterator[ModelGroup]:
        return iter(list(self._groups))

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def default(self) -> ModelGroup:
        return self._groups[0]

    def engines(self) -> Iterator[Engine]:
        for g in list(self._groups):
            yield from g.engines

    def get(self, name: str) -> ModelGroup | None:
        return next((g for g in self._groups if g.name == name), None)

    def lookup(self, name: str | None) -> ModelGroup:
        """The model a request names; no name, or (unless strict_model_names) an unknown one: the default, as
        AI00's clients expect of a server that answers whatever model they ask for."""
        if name is None:
            return self.default
        group = self.get(name)
        if group is not None:
            return group
        if self.config.strict_model_names:
            served = ", ".join(g.name for g in self._groups)
            raise UnknownModel(f"model: '{name}' is not served here (served: {served})")
        return self.default

    def add(self, group: ModelGroup) -> None:
        self._groups.append(group)

    def remove(self, group: ModelGroup) -> None:
        self._groups.remove(group)

    def gpu_bytes(self) -> int:
        return sum(g.gpu_bytes() for g in self._groups)

    # ---- the whole server's life (serve.py's drain, the app's exit) ----

    def drain(self) -> None:
        for e in self.engines():
            e.scheduler.drain()

    @property
    def busy(self) -> int:
        return sum(e.scheduler.busy for e in self.engines())

    def stop(self) -> None:
        """Blocking: run it off the event loop."""
        for g in self:
            stop_group(g)


def estimate_gpu_bytes(path: Path, precision: str, n_engines: int) -> int:
    """What a model's engines will hold on the GPU, known before loading: its weights at `precision`, once per
    engine (states and workspace are small beside them; quantization only makes it less)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    n = sum(_numel(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return n * (4 if precision == "fp32" else 2) * n_engines


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def build_group(config: Config, section: ModelSection, path: Path, tokenizer: Any) -> ModelGroup:
    """A model's engines, one per adapter, each with its own scheduler (not started yet)."""
    spec = ModelSpec(path, section.precision, section.quant, section.quant_type)
    n_engines = sum(len(m.engine_adapters()) for m in config.served())
    engines = []
    for i, adapter in enumerate(section.engine_adapters()):
        own = config.for_engine(section, adapter)
        model = ServedModel(own, spec)
        model.scheduler = Scheduler(
            model.builder,
            tokenizer,
            max_batch=section.max_batch,
            token_chunk_size=section.token_chunk_size,
            prefix_cache=section.prefix_cache,
            max_queue=config.limits.max_queue,
            cache_host_bytes=config.cache.host_budget // n_engines,  # [cache] host_bytes is the server's
            checkpoint_every=config.cache.checkpoint_every,
            cache_shared=config.cache.shared,
        )
        engines.append(Engine(model, model.scheduler, i))
    return ModelGroup(section, tuple(engines), EngineRouter(engines))


def start_group(group: ModelGroup) -> None:
    """Start every engine thread: each loads its copy of the model while the port already answers."""
    for e in group.engines:
        e.scheduler.start()


async def wait_loaded(group: ModelGroup) -> None:
    """Wait for every engine's load, then its configured initial states; a failure raises ValueError."""
    for e in group.engines:
        started = await asyncio.wrap_future(e.scheduler.started)  # the engine thread's catalog, or Failed
        if isinstance(started, Failed):
            raise ValueError(started.message)
        await e.model.start(started)


def stop_group(group: ModelGroup) -> None:
    """End every engine thread (blocking: run it off the event loop); its streams end cancelled."""
    for e in group.engines:
        e.scheduler.stop()


class BudgetError(Exception):
    """A model that would not fit in [gpu_budget_bytes] beside the ones served: refused before loading."""


def check_budget(pool: ModelPool, path: Path, section: ModelSection, loaded: int) -> None:
    """Refuse a load whose estimate, over the `loaded` bytes the served engines hold, passes the budget."""
    budget = pool.config.gpu_budget_bytes
    need = estimate_gpu_bytes(path, section.precision, len(section.engine_adapters()))
    if budget and loaded + need > budget:
        raise BudgetError(f"gpu_budget_bytes: the model needs about {need} bytes of GPU memory; the served ones "
                          f"hold {loaded} of the budget {budget} (unload one, or quantize)")  # fmt: skip


async def load_group(pool: ModelPool, section: ModelSection, path: Path, tokenizer: Any) -> ModelGroup:
    """Start serving another model beside the others (its own engine threads); a failed load leaves nothing."""
    check_budget(pool, path, section, pool.gpu_bytes())
    group = build_group(pool.config, section, path, tokenizer)
    start_group(group)
    try:
        await wait_loaded(group)
    except BaseException:
        await asyncio.to_thread(stop_group, group)
        raise
    pool.add(group)
    return group


async def unload_group(pool: ModelPool, group: ModelGroup) -> None:
    """Stop serving a model: new requests stop reaching it at once, its own streams end cancelled; the other
    models' engines are separate threads and never notice."""
    pool.remove(group)
    await asyncio.to_thread(stop_group, group)
