"""One wgpu device and pipeline cache per adapter choice for the whole process.

Every model and every engine of a pool on an adapter shares them: a shader variant compiles once per process
(on lavapipe a model's first steps spend seconds compiling), and a model unloaded or swapped leaves no device
behind (wgpu frees a dropped engine's buffers at the device's next submission, which the next engine makes).
"""

from __future__ import annotations

import threading

from backend.gpu.adapters import choose_adapter
from backend.gpu.device import Gpu
from backend.gpu.pipelines import PipelineCache

_lock = threading.Lock()  # two models loading at once on their engine threads get one device
_devices: dict[str, tuple[Gpu, PipelineCache]] = {}


def shared_device(adapter: str | int = "auto") -> tuple[Gpu, PipelineCache]:
    """The process's device on the adapter `adapter` chooses (config `model.adapter`), made on first use."""
    key = str(adapter)
    with _lock:
        if key not in _devices:
            gpu = Gpu(adapter=choose_adapter(adapter))
            _devices[key] = (gpu, PipelineCache(gpu.device))
        return _devices[key]
