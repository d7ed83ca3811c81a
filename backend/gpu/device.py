"""The wgpu device: adapter choice, features and limits, buffer creation, upload and readback."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import wgpu

STORAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
UNIFORM = wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST

# The engine binds many buffers per kernel and large weight matrices; wgpu's defaults
# (8 storage buffers, 128 MiB bindings) are far below what real adapters offer.
_BINDING_LIMIT = "max-storage-buffer-binding-size"
_RAISED_LIMITS = (
    _BINDING_LIMIT,
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroups-per-dimension",
    "max-bind-groups",
    "max-bindings-per-bind-group",
)
_WANTED_FEATURES = ("shader-f16", "subgroup", "timestamp-query")


@dataclass(frozen=True)
class AdapterSummary:
    name: str
    backend: str
    kind: str
    features: tuple[str, ...]
    max_binding_bytes: int


class Gpu:
    """One wgpu device; every engine object on it shares this handle."""

    def __init__(self, power_preference: str = "high-performance", adapter: wgpu.GPUAdapter | None = None,
                 max_binding_bytes: int | None = None) -> None:  # fmt: skip
        """`max_binding_bytes`: a storage binding's limit below the adapter's, as a smaller GPU has it."""
        self.adapter = adapter or wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        if self.adapter is None:
            raise RuntimeError("no GPU adapter found: install a Vulkan driver (mesa-vulkan-drivers for CPU)")
        features = [f for f in _WANTED_FEATURES if f in self.adapter.features]
        limits = {k: self.adapter.limits[k] for k in _RAISED_LIMITS if k in self.adapter.limits}
        if max_binding_bytes is not None:
            limits[_BINDING_LIMIT] = min(max_binding_bytes, limits.get(_BINDING_LIMIT, 128 << 20))
        self.device = self.adapter.request_device_sync(required_features=features, required_limits=limits)
        self.queue = self.device.queue
        self.features = frozenset(features)
        # bytes each thread created, for memory reports: an engine is built on one thread, maybe beside another
        self._allocated_by: dict[int, int] = {}
        self.max_binding_bytes = int(limits.get(_BINDING_LIMIT, 128 << 20))
        info = self.adapter.info
        self.subgroup_size = self._probe_subgroup_size() if "subgroup" in self.features else 0
        self.summary = AdapterSummary(
            name=str(info.get("device", "?")),
            backend=str(info.get("backend_type", "?")),
            kind=str(info.get("adapter_type", "?")),
            features=tuple(sorted(features)),
            max_binding_bytes=self.max_binding_bytes,
        )

    def _probe_subgroup_size(self) -> int:
        """The subgroup width compute shaders get here, or 0 when it differs between invocations.
        (Adapters report only a min..max range; kernels written for 32 lanes need the real one.)"""
        source = """
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) n: u32) { out[i] = n; }"""
        module = self.device.create_shader_module(code=source)
        pipeline = self.device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
        out = self.empty(256 * 4, "subgroup_probe")
        group = self.device.create_bind_group(
            layout=pipeline.get_bind_group_layout(0), entries=[{"binding": 0, "resource": {"buffer": out}}]
        )
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(1)
        compute.end()
        self.queue.submit([encoder.finish()])
        sizes = set(self.read(out, 256 * 4, dtype=np.uint32).tolist())
        out.destroy()
        return sizes.pop() if len(sizes) == 1 else 0

    @property
    def is_cpu(self) -> bool:
        return self.summary.kind.lower() == "cpu" or os.environ.get("AI00_FORCE_CPU_ADAPTER") == "1"

    def upload(self, array: np.ndarray, label: str = "") -> wgpu.GPUBuffer:
        data = np.ascontiguousarray(array)
        if data.nbytes == 0:  # wgpu refuses empty bindings; keep one padded word
            data = np.zeros(4, np.uint8)
        padded = _pad_to_multiple(data.view(np.uint8).reshape(-1), 16)
        self._count(padded.nbytes)
        return self.device.create_buffer_with_data(data=padded, usage=STORAGE, label=label)

    def empty(self, nbytes: int, label: str = "", usage: int = STORAGE) -> wgpu.GPUBuffer:
        size = max(16, _round_up(nbytes, 16))
        self._count(size)
        return self.device.create_buffer(size=size, usage=usage, label=label)

    def allocated_by(self, thread: int | None = None) -> int:
        """Bytes the thread `thread` (this one by default) created on this device so far."""
        return self._allocated_by.get(threading.get_ident() if thread is None else thread, 0)

    def _count(self, nbytes: int) -> None:
        thread = threading.get_ident()
        self._allocated_by[thread] = self._allocated_by.get(thread, 0) + nbytes

    def write(self, buffer: wgpu.GPUBuffer, array: np.ndarray, offset: int = 0) -> None:
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.queue.write_buffer(buffer, offset, _pad_to_multiple(data, 4))

    def read(self, buffer: wgpu.GPUBuffer, nbytes: int, offset: int = 0, dtype: type = np.float32) -> np.ndarray:
        view = self.queue.read_buffer(buffer, offset, _round_up(nbytes, 4))
        return np.frombuffer(view, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize).copy()


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _pad_to_multiple(data: np.ndarray, m: int) -> np.ndarray:
    extra = (-data.size) % m
    return data if extra == 0 else np.concatenate([data, np.zeros(extra, np.uint8)])
