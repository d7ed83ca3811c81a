"""The served model and what is layered on it: LoRA adapters, tuned initial states, saved-state files.

The admin routes call this from the event loop. It reads files and merges weights in a worker thread, then
hands the engine work to the scheduler (`Scheduler.call`), which runs it between two steps; so running
streams never see a half-written model. One admin operation runs at a time (a lock), so this catalog and the
engine always agree.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.config import Config
from backend.gpu.loader import ModelFormatError, read_model
from backend.gpu.models.info import ModelInfo
from backend.lora import Adapter, LoraError, merge, read_adapter, read_base, write_set
from backend.model_read import read_model as read_model_reporting
from backend.readiness import Progress
from backend.scheduler import Busy
from backend.st_file import StFileError, check_model_header
from backend.state_file import StateFileError, read_state, state_file_bytes

if TYPE_CHECKING:
    from backend.scheduler import Scheduler

log = logging.getLogger("ai00.model")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # adapter names and initial-state ids
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, ModelFormatError, StFileError, LoraError, StateFileError)


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
class ModelSpec:
    path: Path
    precision: str = "fp16"
    quant: int = 0  # layers whose matrices are block-quantized
    quant_type: str = "none"  # "none", "int8" or "nf4"


@dataclass(frozen=True)
class InitialState:
    id: str
    path: str  # "" when it came from a saved state
    default: bool
    layers: list[np.ndarray]  # host copy: re-registered if a failed swap reloads this model

    @property
    def bytes(self) -> int:
        return sum(a.nbytes for a in self.layers)


@dataclass(frozen=True)
class StateSource:
    """Where an initial state comes from: a file, or a saved-state handle."""

    id: str | None = None
    path: str | None = None
    handle: str | None = None
    default: bool = False


class ServedModel:
    def __init__(self, config: Config, spec: ModelSpec) -> None:
        self.config, self.spec = config, spec
        self.info: ModelInfo | None = None  # known once the engine is loaded
        self.shapes: dict[str, tuple[int, ...]] = {}  # canonical tensor shapes of the base model
        self.adapters: dict[str, Adapter] = {}  # loaded, in load order
        self.active: tuple[str, ...] = ()  # merged into the weights, in this order
        self.states: dict[str, InitialState] = {}
        self.scheduler: Scheduler | None = None
        self.lock = asyncio.Lock()
        self._configured_loras = config.model.loras  # read against the model at the first load
        self._gpu: Any = None  # the engine thread's device and pipeline cache, kept across model swaps
        self._progress = Progress("start")  # of the first load; upload's `bytes` is the GPU's count before it

    @property
    def id(self) -> str:
        return self.spec.path.stem

    # ---- the engine thread ----

    def load_engine(self, n_slots: int) -> Any:
        """The engine of `spec` with the active adapters merged: at start, and to fall back after a failed swap."""
        if self.spec.path.suffix == ".st":
            check_model_header(self.spec.path)
        info, tensors = read_model_reporting(self.spec.path, self._report)
        shapes = {name: x.shape for name, x in tensors.items()}
        if self._configured_loras is not None:
            for i, entry in enumerate(self._configured_loras):
                name = unique_name(Path(entry.path).stem, self.adapters)
                with _as_config_error(f"model.loras.{i}.path"):
                    self.adapters[name] = read_adapter(entry.path, entry.alpha, name, info, shapes)
            self.active, self._configured_loras = tuple(self.adapters), None
        tensors |= merge(tensors, [self.adapters[n] for n in self.active])
        self.info, self.shapes = info, shapes
        self._report(Progress("upload", self._gpu[0].allocated_bytes if self._gpu is not None else 0))
        return self.build_engine(info, tensors, n_slots, self.spec)

    def _report(self, progress: Progress) -> None:
        self._progress = progress  # one reference swapped: the event loop reads whole Progress values

    def load_progress(self) -> Progress:
        """Where the first load stands (/health): bytes read, or bytes on the GPU so far while uploading."""
        p = self._progress
        if p.phase == "upload" and self._gpu is not None:
            return Progress("upload", self._gpu[0].allocated_bytes - p.bytes)
        return p

    def build_engine(self, info: ModelInfo, tensors: dict[str, np.ndarray], n_slots: int, spec: ModelSpec) -> Any:
        from backend.gpu.adapters import choose_adapter
        from backend.gpu.device import Gpu
        from backend.gpu.engine import Engine
        from backend.gpu.pipelines import PipelineCache

        m = self.config.model
        quant = min(spec.quant, info.n_layer) if spec.quant_type != "none" else 0
        if self._gpu is None:
            gpu = Gpu(adapter=choose_adapter(m.adapter))
            log.info("GPU adapter: %s (%s, %s), features %s", gpu.summary.name, gpu.summary.backend,
                     gpu.summary.kind, ", ".join(gpu.summary.features) or "none")  # fmt: skip
            self._gpu = (gpu, PipelineCache(gpu.device))
        gpu, pipelines = self._gpu
        return Engine(info, tensors, max_batch=n_slots, max_step_tokens=m.token_chunk_size + m.max_batch,
                      precision=spec.precision, gpu=gpu, pipelines=pipelines,
                      quant=quant, quant_type=spec.quant_type if quant else "int8")  # fmt: skip

    # ---- the event loop: the admin routes ----

    async def on_engine(self, fn: Callable[[Scheduler], Any], drain: bool = False, timeout: float | None = None):
        assert self.scheduler is not None
        return await asyncio.wrap_future(self.scheduler.call(fn, drain=drain, timeout=timeout))

    async def start(self) -> None:
        """After the engine loaded: register the configured initial states (errors stop the start)."""
        if self.info is None:  # a custom engine loader (tests)
            self.info = await self.on_engine(lambda s: s.engine.info)
        for i, entry in enumerate(self.config.model.states):
            source = StateSource(entry.name or None, entry.path, None, entry.default)
            try:
                await self.load_state(source)
            except AdminError as e:
                raise ValueError(f"model.states.{i}: {e.message}") from None

    def describe(self) -> dict[str, Any]:
        info = self.info
        assert info is not None
        return {
            "model": {"id": self.id, "path": str(self.spec.path), "precision": self.spec.precision,
                      "version": str(info.version), "n_layer": info.n_layer, "n_embd": info.n_embd,
                      "n_head": info.n_head, "head_size": info.head_size, "n_vocab": info.n_vocab,
                      "size": self.spec.path.stat().st_size if self.spec.path.is_file() else None},
            "adapters": [self.describe_adapter(a) for a in self.adapters.values()],
            "active_adapters": list(self.active),
            "states": [self.describe_state(s) for s in self.states.values()],
            "default_state": next((s.id for s in self.states.values() if s.default), None),
            "adapter": self.describe_gpu(),
        }  # fmt: skip

    def describe_gpu(self) -> dict[str, Any] | None:
        """The GPU adapter serving the model (a test's own engine loader may keep its own device)."""
        engine = self.scheduler.engine if self.scheduler is not None else None
        gpu = self._gpu[0] if self._gpu is not None else getattr(engine, "gpu", None)
        if gpu is None:
            return None
        s = gpu.summary
        return {"name": s.name, "backend": s.backend, "type": s.kind, "features": list(s.features),
                "max_binding_bytes": s.max_binding_bytes}

    def describe_adapter(self, a: Adapter) -> dict[str, Any]:
        return {
            "name": a.name,
            "path": a.path,
            "alpha": a.alpha,
            "rank": a.rank,
            "tensors": len(a.targets),
            "active": a.name in self.active,
        }

    @staticmethod
    def describe_state(s: InitialState) -> dict[str, Any]:
        return {"id": s.id, "path": s.path, "default": s.default, "bytes": s.bytes}

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
            if active:
                await self._apply({**self.adapters, name: adapter}, (*self.active, name), drain, timeout)
            self.adapters[name] = adapter
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
            self.adapters = adapters

    @uninterrupted
    async def unload_adapter(self, name: str, drain: bool, timeout: float) -> None:
        async with self.lock:
            if name not in self.adapters:
                raise AdminError(404, f"name: no adapter '{name}' is loaded", "name", "adapter_not_found")
            if name in self.active:
                await self._apply(self.adapters, tuple(n for n in self.active if n != name), drain, timeout)
            del self.adapters[name]

    async def _apply(self, adapters: dict[str, Adapter], active: tuple[str, ...], drain: bool, timeout: float):
        """Rewrite the weights the old and the new adapter sets touch: base tensors re-read, new set merged."""
        old, new = [self.adapters[n] for n in self.active], [adapters[n] for n in active]
        names = write_set(set().union(*(a.targets for a in old + new)), self.shapes)

        def prepare() -> dict[str, np.ndarray]:
            base = read_base(self.spec.path, names)
            return base | merge(base, new)

        tensors = await asyncio.to_thread(prepare)
        if tensors:
            await self._busy_as_409(self.on_engine(lambda s: s.write_weights(tensors), drain, timeout))
        self.active = active

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
                    layers = await asyncio.to_thread(read_state, source.path, self.info)
            else:
                layers = await self.on_engine(lambda s: s.saved_state(source.handle))
                if layers is None:
                    raise AdminError(404, f"handle: no saved state '{source.handle}'", "handle", "state_not_found")
            await self.on_engine(lambda s: s.add_initial_state(state_id, layers, source.default))
            if source.default:
                self.states = {k: replace(v, default=False) for k, v in self.states.items()}
            state = InitialState(state_id, source.path or "", source.default, layers)
            self.states[state_id] = state
            return state

    @uninterrupted
    async def unload_state(self, state_id: str) -> None:
        async with self.lock:
            if state_id not in self.states:
                raise AdminError(404, f"id: no state '{state_id}' is loaded", "id", "state_not_found")
            await self.on_engine(lambda s: s.remove_initial_state(state_id))
            del self.states[state_id]

    # -- saved states (handles) --

    async def export_state(self, handle: str) -> bytes:
        layers = await self.on_engine(lambda s: s.saved_state(handle))
        if layers is None:
            raise AdminError(404, f"handle: no saved state '{handle}'", "handle", "state_not_found")
        return await asyncio.to_thread(state_file_bytes, layers, self.info, self.id)

    async def import_state(self, source: bytes | str) -> tuple[str, int]:
        """A saved-state handle for a state file (given as bytes, or a path on the server)."""
        with _file_error("path" if isinstance(source, str) else "body"):
            layers = await asyncio.to_thread(read_state, source, self.info)
        handle = await self.on_engine(lambda s: s.store_state(layers))
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
                    initial.append(InitialState(s.id or Path(s.path or "").stem, s.path or "", s.default, layers))
                tensors |= merge(tensors, list(adapters.values()))
                return info, tensors, shapes, adapters, initial

            info, tensors, shapes, adapters, initial = await asyncio.to_thread(prepare)
            previous = list(self.states.values())

            def swap_on_engine(s: Scheduler) -> None:
                try:
                    s.replace_engine(lambda n: self.build_engine(info, tensors, n, spec))
                except Exception:
                    for st in previous:  # the old model is back: so are its states
                        s.add_initial_state(st.id, st.layers, st.default)
                    raise
                for st in initial:
                    s.add_initial_state(st.id, st.layers, st.default)

            try:
                await self._busy_as_409(self.on_engine(swap_on_engine, drain=True, timeout=timeout if wait else 0))
            except AdminError:
                raise
            except Exception as e:
                raise AdminError(500, f"path: the model failed to load ({e}); still serving {self.id}", "path",
                                 "load_failed") from e  # fmt: skip
            self.spec, self.info, self.shapes = spec, info, shapes
            self.adapters, self.active = adapters, tuple(adapters)
            self.states = {st.id: st for st in initial}
            log.info("now serving %s (%s, %d layers)", self.id, info.version, info.n_layer)

    @staticmethod
    async def _busy_as_409(awaitable):
        try:
            return await awaitable
        except Busy as e:
            raise AdminError(409, f"busy: {e}; retry, or wait longer (`timeout_s`)", None, "model_busy") from None


def check_name(name: str, param: str, what: str) -> str:
    if not NAME.match(name):
        raise AdminError(400, f"{param}: {what} {name!r} must be 1-64 letters, digits, '_', '.', '-'", param)
    return name


def unique_name(stem: str, taken: dict[str, Any]) -> str:
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    return name


@contextmanager
def _file_error(param: str) -> Iterator[None]:
    """A file that is missing or does not fit the model is the client's error, naming the field."""
    try:
        yield
    except FILE_ERRORS as e:
        raise AdminError(400, f"{param}: {e}", param, "invalid_file") from None


@contextmanager
def _as_config_error(field: str) -> Iterator[None]:
    try:
        yield
    except FILE_ERRORS as e:
        raise ValueError(f"{field}: {e}") from None
