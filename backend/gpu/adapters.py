"""The wgpu adapters of this machine, described for /api/adapters, and the one `[model] adapter` chooses."""

from __future__ import annotations

from typing import Any

import wgpu

# the limits that bound what the engine can do on an adapter (largest weight matrix, kernel shapes)
LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroups-per-dimension",
)


class AdapterError(ValueError):
    """`model.adapter` names no adapter of this machine; the message lists those there are."""


def describe(adapter: wgpu.GPUAdapter, index: int) -> dict[str, Any]:
    info, features = adapter.info, adapter.features
    return {
        "index": index,
        "name": str(info.get("device", "?")),
        "vendor": str(info.get("vendor", "")),
        "backend": str(info.get("backend_type", "?")),
        "type": str(info.get("adapter_type", "?")),
        "driver": str(info.get("description", "")),
        "shader_f16": "shader-f16" in features,
        "subgroups": "subgroup" in features,
        "limits": {k: int(adapter.limits[k]) for k in LIMITS if k in adapter.limits},
    }


def list_adapters() -> list[dict[str, Any]]:
    return [describe(a, i) for i, a in enumerate(wgpu.gpu.enumerate_adapters_sync())]


def choose_adapter(choice: str | int) -> wgpu.GPUAdapter | None:
    """`"auto"`: None (wgpu's own high-performance pick); an index into the enumeration; or the first adapter
    whose "name (backend, type)" contains `choice`, case-insensitively."""
    if choice == "auto":
        return None
    adapters = wgpu.gpu.enumerate_adapters_sync()
    described = [describe(a, i) for i, a in enumerate(adapters)]
    if isinstance(choice, int) or choice.isdigit():
        if 0 <= int(choice) < len(adapters):
            return adapters[int(choice)]
    else:
        for adapter, d in zip(adapters, described, strict=True):
            if choice.lower() in label(d).lower():
                return adapter
    listing = "; ".join(f"{d['index']}: {label(d)}" for d in described) or "none (install a Vulkan driver)"
    raise AdapterError(f"model.adapter: no GPU adapter matches {choice!r}; available: {listing}")


def label(d: dict[str, Any]) -> str:
    return f"{d['name']} ({d['backend']}, {d['type']})"
