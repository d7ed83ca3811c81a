"""The served model as the admin routes see it, on the event loop: LoRA adapters, tuned initial states,
saved-state files, model swaps.

Files are read and weights merged in a worker thread; the engine work goes to the scheduler as typed messages
(messages.py), which it runs between two steps, so running streams never see a half-written model. What is
served is an immutable Catalog (catalog.py), replaced whole once the scheduler confirmed a change. One admin
operation runs at a time (a lock), so the catalog and the engine always agree.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.catalog import Catalog, InitialState, ModelSpec, describe_state, unique_name
from backend.config import Config
from backend.engine_builder import FILE_ERRORS, EngineBuilder, PreparedModel
from backend.gpu.loader import read_model
from backend.gpu.models.info import ModelInfo
from backend.lora import Adapter, merge, read_adapter, read_base, write_set
from backend.messages import (
    AddInitialState,
    AdminMessage,
    EventSink,
    Failed,
    ReadSavedState,
    RemoveInitialState,
    StoreState,
    SwapModel,
    WriteWeights,
)
from backend.readiness import Progress
from backend.state_file import read_state, state_file_bytes
from backend.state_registry import SHARED

if TYPE_CHECKING:
    from backend.scheduler import Scheduler

log = logging.getLogger("ai00.model")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # adapter names and initial-state ids
__all__ = ["AdminError", "InitialState", "ModelSpec", "ServedModel", "StateSource"]


def uninterrupted(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An admin operation runs to its end even when its client goes away: the catalog must match the engine."""

    @functools.wraps(method)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.shield(asyncio.ensure_future(method(*args, **kwargs)))

    return run


class AdminError(Exception):
    """A refused admin request: HTTP status, message, the field at fault, an error code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass(frozen=True)
class StateSource:
    """Where an initial state comes from: a file, or a saved-state handle."""

    id: str | None = None
    path: str | None = None
    handle: str | None = None
    default: bool = False


class ServedModel:
    def __init__(self, config: Config, spec: ModelSpec) -> None:
        self.config = config
        self.builder = EngineBuilder(config, spec)  # the scheduler's engine source: the engine thread's own
        self.catalog: Catalog | None = None  # known once the engine is loaded; replaced whole, never changed
        self.scheduler: Scheduler | None = None
        self.lock = asyncio.Lock()
        self._first_spec = spec

    # ---- the catalog, read-only ----

    def _catalog(self) -> Catalog:
        assert self.catalog is not None, "the model is not loaded yet"
        return self.catalog

    @property
    def spec(self) -> ModelSpec:
        return self.catalog.spec if self.catalog is not None else self._first_spec

    @property
    def id(self) -> str:
        return self.spec.path.stem

    @property
    def info(self) -> ModelInfo | None:
        return self.catalog.info if self.catalog is not None else None

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]:
        return self._catalog().shapes

    @property
    def adapters(self) -> Mapping[str, Adapter]:
        return self.catalog.adapters if self.catalog is not None else {}

    @property
    def active(self) -> tuple[str, ...]:
        return self.catalog.active if self.catalog is not None else ()

    @property
    def states(self) -> Mapping[str, InitialState]:
        return self.catalog.states if self.catalog is not None else {}

    def describe(self) -> dict[str, Any]:
        return self._catalog().describe()

    def describe_gpu(self) -> dict[str, Any] | None:
        return self.catalog.describe_gpu() if self.catalog is not None else None

    def describe_adapter(self, a: Adapter) -> dict[str, Any]:
        return self._catalog().describe_adapter(a)

    describe_state = staticmethod(describe_state)

    def load_progress(self) -> Progress:
        return self.builder.load_progress()

    # ---- the engine thread, through messages ----

    async def ask(self, msg: AdminMessage) -> Any:
        """Send an admin message to the scheduler and wait for its answer; a refusal raises AdminError."""
        assert self.scheduler is not None
        self.scheduler.submit(msg)
        event = await msg.sink.get()
        if not isinstance(event, Failed):
            return event.value
        if event.code == "model_busy":
            raise AdminError(409, f"busy: {event.message}; retry, or wait longer (`timeout_s`)", None, event.code)
        if event.code == "load_failed":
            raise AdminError(500, f"path: the model failed to load ({event.message}); still serving {self.id}",
                             "path", event.code)  # fmt: skip
        raise AdminError(500, event.message, event.param, event.code)

    async def start(self, catalog: Catalog) -> None:
        """After the engine loaded: its catalog, then the configured initial states (errors stop the start)."""
        self.catalog = catalog
        for i, entry in enumerate(self.config.model.states):
            source = StateSource(entry.name or None, entry.path, None, entry.default)
            try:
                await self.load_state(source)
            except AdminError as e:
                raise ValueError(f"model.states.{i}: {e.message}") from None

    # -- LoRA --

    @uninterrupted
    async def load_adapter(self, path: str, alpha: float, name: str | None, active: bool, drain: bool,
                           timeout: float) -> Adapter:  # fmt: skip
        async with self.lock:
            name = check_name(name or Path(path).stem, "name", "adapter name")
            if name in self.adapters:
                raise AdminError(409, f"name: adapter '{name}' is already loaded (unload it first)", "name",
                                 "adapter_exists")  # fmt: skip
            with _file_error("path"):
                adapter = await asyncio.to_thread(read_adapter, path, alpha, name, self.info, self.shapes)
            adapters = {**self.adapters, name: adapter}
            active_names = (*self.active, name) if active else self.active
            if active:
                await self._apply(adapters, active_names, drain, timeout)
            self.catalog = self._catalog().but(adapters=adapters, active=active_names)
            return adapter

    @uninterrupted
    async def switch_adapters(self, active: Sequence[tuple[str, float | None]], drain: bool, timeout: float) -> None:
        """Make exactly `active` (name, alpha or None to keep it) the merged adapters, in that order."""
        async with self.lock:
            adapters = dict(self.adapters)
            for i, (name, alpha) in enumerate(active):
                if name not in adapters:
                    raise AdminError(404, f"active.{i}: no adapter '{name}' is loaded", f"active.{i}",
                                     "adapter_not_found")  # fmt: skip
                if alpha is not None:
                    adapters[name] = replace(adapters[name], alpha=alpha)
            names = tuple(name for name, _ in active)
            if len(set(names)) != len(names):
                raise AdminError(400, "active: an adapter is listed twice", "active")
            await self._apply(adapters, names, drain, timeout)
            self.catalog = self._catalog().but(adapters=adapters, active=names)

    @uninterrupted
    async def unload_adapter(self, name: str, drain: bool, timeout: float) -> None:
        async with self.lock:
            if name not in self.adapters:
                raise AdminError(404, f"name: no adapter '{name}' is loaded", "name", "adapter_not_found")
            active = tuple(n for n in self.active if n != name)
            if name in self.active:
                await self._apply(self.adapters, active, drain, timeout)
            adapters = {k: v for k, v in self.adapters.items() if k != name}
            self.catalog = self._catalog().but(adapters=adapters, active=active)

    async def _apply(self, adapters: Mapping[str, Adapter], active: tuple[str, ...], drain: bool, timeout: float):
        """Rewrite the weights the old and the new adapter sets touch: base tensors re-read, new set merged."""
        old, new = [self.adapters[n] for n in self.active], [adapters[n] for n in active]
        names = write_set(set().union(*(a.targets for a in old + new)), self.shapes)

        def prepare() -> dict[str, np.ndarray]:
            base = read_base(self.spec.path, names)
            return base | merge(base, new)

        tensors = await asyncio.to_thread(prepare)
        if tensors:
            await self.ask(WriteWeights(tensors, EventSink(), drain, time.monotonic() + timeout))

    # -- initial states --

    @uninterrupted
    async def load_state(self, source: StateSource) -> InitialState:
        async with self.lock:
            if (source.path is None) == (source.handle is None):
                raise AdminError(400, "give exactly one of `path` and `handle`", "path")
            state_id = check_name(source.id or Path(source.path or "").stem, "id", "state id")
            if state_id.startswith("state-"):
                raise AdminError(400, "id: 'state-...' is how saved-state handles begin; pick another", "id")
            if state_id in self.states:
                raise AdminError(409, f"id: state '{state_id}' is already loaded (unload it first)", "id",
                                 "state_exists")  # fmt: skip
            if source.path is not None:
                with _file_error("path"):
                    layers = tuple(await asyncio.to_thread(read_state, source.path, self.info))
            else:
                layers = await self.ask(ReadSavedState(source.handle or "", SHARED, EventSink()))
                if layers is None:
                    raise AdminError(404, f"handle: no saved state '{source.handle}'", "handle", "state_not_found")
            state = InitialState(state_id, source.path or "", source.default, layers)
            await self.ask(AddInitialState(*state.registration(), EventSink()))
            states = dict(self.states)
            if source.default:
                states = {k: replace(v, default=False) for k, v in states.items()}
            self.catalog = self._catalog().but(states={**states, state_id: state})
            return state

    @uninterrupted
    async def unload_state(self, state_id: str) -> None:
        async with self.lock:
            if state_id not in self.states:
                raise AdminError(404, f"id: no state '{state_id}' is loaded", "id", "state_not_found")
            await self.ask(RemoveInitialState(state_id, EventSink()))
            self.catalog = self._catalog().but(states={k: v for k, v in self.states.items() if k != state_id})

    # -- saved states (handles) --

    async def export_state(self, handle: str, tenant: str = SHARED) -> bytes:
        layers = await self.ask(ReadSavedState(handle, tenant, EventSink()))
        if layers is None:
            raise AdminError(404, f"handle: no saved state '{handle}'", "handle", "state_not_found")
        return await asyncio.to_thread(state_file_bytes, list(layers), self.info, self.id)

    async def import_state(self, source: bytes | str) -> tuple[str, int]:
        """A saved-state handle for a state file (given as bytes, or a path on the server)."""
        with _file_error("path" if isinstance(source, str) else "body"):
            layers = await asyncio.to_thread(read_state, source, self.info)
        handle = await self.ask(StoreState(tuple(layers), SHARED, EventSink()))
        return handle, sum(a.nbytes for a in layers)

    # -- the model --

    @uninterrupted
    async def swap(self, spec: ModelSpec, loras: Sequence[tuple[str, float]], states: Sequence[StateSource],
                   wait: bool, timeout: float) -> None:  # fmt: skip
        """Load another model (with its adapters and states) once the running generations end, and serve it."""
        async with self.lock:
            for i, s in enumerate(states):
                check_name(s.id or Path(s.path or "").stem, f"states.{i}.id", "state id")

            def prepare():
                with _file_error("path"):
                    info, tensors = read_model(spec.path)
                shapes = {name: x.shape for name, x in tensors.items()}
                adapters: dict[str, Adapter] = {}
                for i, (path, alpha) in enumerate(loras):
                    name = unique_name(Path(path).stem, adapters)
                    with _file_error(f"loras.{i}.path"):
                        adapters[name] = read_adapter(path, alpha, name, info, shapes)
                initial = []
                for i, s in enumerate(states):
                    with _file_error(f"states.{i}.path"):
                        layers = read_state(s.path or "", info)
                    initial.append(InitialState(s.id or Path(s.path or "").stem, s.path or "", s.default,
                                                tuple(layers)))  # fmt: skip
                tensors |= merge(tensors, list(adapters.values()))
                return info, tensors, shapes, adapters, initial

            info, tensors, shapes, adapters, initial = await asyncio.to_thread(prepare)
            swap = SwapModel(PreparedModel(spec, info, tensors), self._catalog(),
                             tuple(st.registration() for st in initial),
                             tuple(st.registration() for st in self.states.values()), EventSink(),
                             time.monotonic() + (timeout if wait else 0))  # fmt: skip
            gpu_bytes = await self.ask(swap)
            self.catalog = self._catalog().but(spec=spec, info=info, shapes=shapes, adapters=adapters,
                                               active=tuple(adapters), states={st.id: st for st in initial},
                                               gpu_bytes=gpu_bytes)  # fmt: skip
            log.info("now serving %s (%s, %d layers)", self.id, info.version, info.n_layer)


def check_name(name: str, param: str, what: str) -> str:
    if not NAME.match(name):
        raise AdminError(400, f"{param}: {what} {name!r} must be 1-64 letters, digits, '_', '.', '-'", param)
    return name


@contextmanager
def _file_error(param: str) -> Iterator[None]:
    """A file that is missing or does not fit the model is the client's error, naming the field."""
    try:
        yield
    except FILE_ERRORS as e:
        raise AdminError(400, f"{param}: {e}", param, "invalid_file") from None
