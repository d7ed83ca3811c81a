"""Records a step's dispatch list into a compute pass with as little host work as possible.

wgpu-py's pass methods check their arguments and build cffi objects on every call (about 10 µs
per dispatch on the H100 machine's CPU), and a step has hundreds of dispatches. So the recorder
takes the native handles once and calls wgpu-native's three C functions directly; where this
wgpu build does not expose them it uses the public API.
"""

from __future__ import annotations

from collections.abc import Sequence

import wgpu

from backend.gpu.ops import Dispatch, StepDims

try:  # private to wgpu-py: pinned by pyproject (wgpu<0.33), checked by the tests on every run
    from wgpu.backends.wgpu_native._api import ffi, libf

    _NATIVE = all(
        hasattr(libf, f)
        for f in (
            "wgpuComputePassEncoderSetPipeline",
            "wgpuComputePassEncoderSetBindGroup",
            "wgpuComputePassEncoderDispatchWorkgroups",
        )
    )
except ImportError:  # pragma: no cover - another wgpu backend
    _NATIVE = False


class Recorder:
    def __init__(self, dispatches: Sequence[Dispatch], native: bool | None = None) -> None:
        self.dispatches = list(dispatches)  # keeps pipelines and bind groups alive
        self.native = _NATIVE if native is None else native
        if self.native:
            self._items = [(d.pipeline._internal, d.bind_group._internal, d.grid) for d in self.dispatches]

    def record(
        self, compute: wgpu.GPUComputePassEncoder, dims: StepDims, start: int = 0, end: int | None = None
    ) -> int:
        """Encode dispatches [start, end) whose grid is non-empty for `dims`; returns how many."""
        if not self.native:
            return self._record_public(compute, dims, start, end)
        set_pipeline = libf.wgpuComputePassEncoderSetPipeline
        set_bind_group = libf.wgpuComputePassEncoderSetBindGroup
        dispatch = libf.wgpuComputePassEncoderDispatchWorkgroups
        handle, null = compute._internal, ffi.NULL
        count = 0
        for pipeline, bind_group, grid in self._items[start:end]:
            x, y, z = grid(dims)
            if x and y and z:
                set_pipeline(handle, pipeline)
                set_bind_group(handle, 0, bind_group, 0, null)
                dispatch(handle, x, y, z)
                count += 1
        return count

    def _record_public(self, compute: wgpu.GPUComputePassEncoder, dims: StepDims, start: int, end: int | None) -> int:
        count = 0
        for d in self.dispatches[start:end]:
            x, y, z = d.grid(dims)
            if x and y and z:
                compute.set_pipeline(d.pipeline)
                compute.set_bind_group(0, d.bind_group)
                compute.dispatch_workgroups(x, y, z)
                count += 1
        return count
