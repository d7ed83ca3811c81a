"""What the server serves, as an immutable snapshot the event loop reads: the model file and its shape, the LoRA
adapters (and which are merged), the initial states, the GPU. The admin routes replace it whole after each
change the engine thread confirmed; the engine thread never writes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.gpu.models.info import ModelInfo
from backend.lora import Adapter

if TYPE_CHECKING:
    from backend.gpu.device import AdapterSummary  # (not imported at run time: it loads wgpu)


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
    layers: tuple[np.ndarray, ...] = field(repr=False)  # host copy: registered again if a failed swap reloads

    @property
    def bytes(self) -> int:
        return sum(a.nbytes for a in self.layers)

    def registration(self) -> tuple[str, tuple[np.ndarray, ...], bool]:
        """What messages.AddInitialState / SwapModel carry for it."""
        return self.id, self.layers, self.default


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Catalog:
    spec: ModelSpec
    info: ModelInfo
    shapes: Mapping[str, tuple[int, ...]] = field(repr=False)  # canonical tensor shapes of the base model
    adapters: Mapping[str, Adapter] = field(default_factory=dict, repr=False)  # loaded, in load order
    active: tuple[str, ...] = ()  # merged into the weights, in this order
    states: Mapping[str, InitialState] = field(default_factory=dict)
    gpu: AdapterSummary | None = None
    gpu_bytes: int | None = None  # held by the engine: weights, states, workspace

    def __post_init__(self) -> None:
        for name in ("shapes", "adapters", "states"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def but(self, **changes: Any) -> Catalog:
        """A new snapshot with `changes`."""
        return replace(self, **changes)

    @property
    def id(self) -> str:
        return self.spec.path.stem

    @property
    def default_state(self) -> str | None:
        return next((s.id for s in self.states.values() if s.default), None)

    def describe(self) -> dict[str, Any]:
        info = self.info
        return {
            "model": {"id": self.id, "path": str(self.spec.path), "precision": self.spec.precision,
                      "version": str(info.version), "n_layer": info.n_layer, "n_embd": info.n_embd,
                      "n_head": info.n_head, "head_size": info.head_size, "n_vocab": info.n_vocab,
                      "size": self.spec.path.stat().st_size if self.spec.path.is_file() else None},
            "adapters": [self.describe_adapter(a) for a in self.adapters.values()],
            "active_adapters": list(self.active),
            "states": [describe_state(s) for s in self.states.values()],
            "default_state": self.default_state,
            "adapter": self.describe_gpu(),
        }  # fmt: skip

    def describe_gpu(self) -> dict[str, Any] | None:
        s = self.gpu
        if s is None:
            return None
        return {"name": s.name, "backend": s.backend, "type": s.kind, "features": list(s.features),
                "max_binding_bytes": s.max_binding_bytes}  # fmt: skip

    def describe_adapter(self, a: Adapter) -> dict[str, Any]:
        return {"name": a.name, "path": a.path, "alpha": a.alpha, "rank": a.rank, "tensors": len(a.targets),
                "active": a.name in self.active}  # fmt: skip


def describe_state(s: InitialState) -> dict[str, Any]:
    return {"id": s.id, "path": s.path, "default": s.default, "bytes": s.bytes}


def unique_name(stem: str, taken: Mapping[str, Any]) -> str:
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    return name
