"""Several models in one server ([[models]]), each served by one or more engines (one per GPU adapter).

The pool maps a served name to its ModelGroup: the model's settings, its engines, and their EngineRouter
(engine_router.py), which stands where handlers used a scheduler. Each engine is a Scheduler with its own thread,
slots and state cache, so a model added or removed at run time never touches another model's engines; a load
is checked against [gpu_budget_bytes] before it starts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.catalog import ModelSpec
from backend.config import Config, ModelSection
from backend.engine_router import Engine, EngineRouter
from backend.messages import Failed
from backend.scheduler import Scheduler
from backend.served_model import ServedModel

__all__ = ["BudgetError", "EveryEngine", "ModelGroup", "ModelPool", "UnknownModel", "build_group", "check_budget",
           "estimate_gpu_bytes", "load_group", "start_group", "stop_group", "unload_group", "wait_loaded"]


class UnknownModel(LookupError):
    """A request named a model the server does not serve (with strict_model_names)."""


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


def estimate_gpu_bytes(path: Path, section: ModelSection, n_engines: int) -> int:
    """What a model's engines will hold on the GPU, known before loading: its weights as the engine holds them
    (at `precision`, quantized layers at their packed size), and the workspace `max_prefill_chunk = "auto"`
    gives it beside them, once per engine (states are small beside them)."""
    from backend.gpu.step_room import WORKSPACE_SHARE, gpu_weight_bytes

    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    shapes = {name: t["shape"] for name, t in header.items() if name != "__metadata__"}
    quant = section.quant if section.quant_type != "none" else 0
    weights = gpu_weight_bytes(shapes, section.precision, quant, section.quant_type)
    return int(weights * (1 + WORKSPACE_SHARE)) * n_engines


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
            max_prefill_chunk=None if section.max_prefill_chunk == "auto" else section.max_prefill_chunk,
            decode_gap_ms=section.decode_gap_ms,
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
    need = estimate_gpu_bytes(path, section, len(section.engine_adapters()))
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
