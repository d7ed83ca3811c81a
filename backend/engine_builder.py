"""Engines, built on the engine thread (the scheduler's engine source): the configured model at start, another
model at a swap, the old one again when a swap fails, all on one device of the configured adapter, taken from
the process's idle ones (with its pipeline cache) and given back when the engine thread ends.

What it learns while loading (the model's shape, the configured LoRAs) leaves as an immutable Catalog that the
scheduler hands to the event loop; the event loop reads nothing else of it but the load's progress."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.catalog import Catalog, ModelSpec, unique_name
from backend.config import Config
from backend.gpu.loader import ModelFormatError, read_model
from backend.gpu.models.info import ModelInfo
from backend.lora import Adapter, LoraError, merge, read_adapter
from backend.model_read import read_model as read_model_reporting
from backend.readiness import Progress
from backend.st_file import StFileError, check_model_header
from backend.state_file import StateFileError

log = logging.getLogger("ai00.model")

FILE_ERRORS = (FileNotFoundError, IsADirectoryError, ModelFormatError, StFileError, LoraError, StateFileError)


@dataclass(frozen=True)
class PreparedModel:
    """A model read and merged off the engine thread, ready to upload (messages.SwapModel's `model`)."""

    spec: ModelSpec
    info: ModelInfo
    tensors: Mapping[str, np.ndarray] = field(repr=False)


class EngineBuilder:
    def __init__(self, config: Config, spec: ModelSpec) -> None:
        self.config, self.spec = config, spec
        self._gpu: Any = None  # (Gpu, PipelineCache): taken on the engine thread, given back by close()
        self._progress = Progress("start")  # of the first load; upload's `bytes` is the GPU's count before it
        self._thread = 0  # the engine thread's id: the device counts the bytes each thread uploads

    def load(self, n_slots: int) -> tuple[Any, Catalog]:
        """The configured model with the configured LoRAs merged, and its catalog."""
        spec = self.spec
        if spec.path.suffix == ".st":
            check_model_header(spec.path)
        info, tensors = read_model_reporting(spec.path, self._report)
        shapes = {name: x.shape for name, x in tensors.items()}
        adapters: dict[str, Adapter] = {}
        for i, entry in enumerate(self.config.model.loras):
            name = unique_name(Path(entry.path).stem, adapters)
            with as_config_error(f"model.loras.{i}.path"):
                adapters[name] = read_adapter(entry.path, entry.alpha, name, info, shapes)
        tensors |= merge(tensors, list(adapters.values()))
        self._thread = threading.get_ident()
        self._report(Progress("upload", self._device()[0].allocated_by()))
        engine = self._build(info, tensors, n_slots, spec)
        catalog = Catalog(spec, info, shapes, adapters, tuple(adapters), gpu=getattr(engine.gpu, "summary", None),
                          gpu_bytes=engine.gpu_bytes)  # fmt: skip
        return engine, catalog

    def build(self, model: PreparedModel | Catalog, n_slots: int) -> Any:
        """A prepared model's engine, or (a swap's fallback) the engine of a catalog's model read again."""
        if isinstance(model, PreparedModel):
            return self._build(model.info, dict(model.tensors), n_slots, model.spec)
        info, tensors = read_model(model.spec.path)
        tensors |= merge(tensors, [model.adapters[n] for n in model.active])
        return self._build(info, tensors, n_slots, model.spec)

    def _report(self, progress: Progress) -> None:
        self._progress = progress  # one reference swapped: the event loop reads whole Progress values

    def load_progress(self) -> Progress:
        """Where the first load stands (/health): bytes read, or bytes on the GPU so far while uploading."""
        p, gpu = self._progress, self._gpu
        if p.phase == "upload" and gpu is not None:
            return Progress("upload", gpu[0].allocated_by(self._thread) - p.bytes)
        return p

    def close(self) -> None:
        """The engine thread ended: its device goes back for the next model on the adapter."""
        from backend.gpu.device_pool import give_back

        if self._gpu is not None:
            give_back(self.config.model.adapter, self._gpu)
            self._gpu = None

    def _device(self) -> Any:
        """(Gpu, PipelineCache) of the configured adapter, taken on first use (on the engine thread)."""
        from backend.gpu.device_pool import take_device

        if self._gpu is None:
            self._gpu = take_device(self.config.model.adapter)
            gpu = self._gpu[0]
            log.info("GPU adapter: %s (%s, %s), features %s", gpu.summary.name, gpu.summary.backend,
                     gpu.summary.kind, ", ".join(gpu.summary.features) or "none")  # fmt: skip
        return self._gpu

    def _build(self, info: ModelInfo, tensors: dict[str, np.ndarray], n_slots: int, spec: ModelSpec) -> Any:
        from backend.gpu.engine import Engine
        from backend.gpu.step_room import check_room, prefill_room

        m = self.config.model
        quant = min(spec.quant, info.n_layer) if spec.quant_type != "none" else 0
        gpu, pipelines = self._device()
        # the most a step carries: a busy step's chunk beside every slot's decode row, or an idle step's prefill;
        # logit lines stay what a busy step may ask (one per row, scoring's max_batch): a prefill needs one
        busy = m.token_chunk_size + m.max_batch
        check_room(info, tensors, busy, n_slots, gpu.max_binding_bytes, "token_chunk_size + max_batch")
        idle = prefill_room(m.max_prefill_chunk, info, tensors, n_slots, gpu.max_binding_bytes, spec.precision,
                            quant, spec.quant_type)  # fmt: skip
        return Engine(info, tensors, max_batch=n_slots, max_step_tokens=max(busy, idle),
                      max_logit_lines=busy,
                      precision=spec.precision, gpu=gpu, pipelines=pipelines,
                      quant=quant, quant_type=spec.quant_type if quant else "int8")  # fmt: skip


@contextmanager
def as_config_error(field: str) -> Iterator[None]:
    try:
        yield
    except FILE_ERRORS as e:
        raise ValueError(f"{field}: {e}") from None
