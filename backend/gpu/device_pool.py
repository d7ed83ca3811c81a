"""wgpu devices lent to engine threads, and kept for the next one when an engine thread ends.

No two live engine threads hold one device: each steps and waits on its own, as data-parallel engines on one
adapter must. What an ended thread gives back (a model unloaded, a server stopped) the next model on that
adapter takes, with its pipeline cache: no shader variant compiles twice (on lavapipe a model's first steps
spend seconds compiling), and no abandoned device piles up in the process (wgpu frees a dropped engine's
buffers at that device's next submission, which the next engine on it makes).
"""

from __future__ import annotations

import threading

from backend.gpu.adapters import choose_adapter
from backend.gpu.device import Gpu
from backend.gpu.pipelines import PipelineCache

Device = tuple[Gpu, PipelineCache]

_lock = threading.Lock()  # engine threads take and give back devices at once
_idle: dict[str, list[Device]] = {}  # by adapter choice: devices no engine thread holds


def take_device(adapter: str | int = "auto") -> Device:
    """A device on the adapter `adapter` chooses (config `model.adapter`) that no engine thread holds: one given
    back before, else a new one."""
    with _lock:
        idle = _idle.get(str(adapter))
        if idle:
            return idle.pop()
    gpu = Gpu(adapter=choose_adapter(adapter))
    return gpu, PipelineCache(gpu.device)


def give_back(adapter: str | int, device: Device) -> None:
    """`device` (taken for `adapter`) is no longer used by its engine thread; the next one may take it."""
    with _lock:
        _idle.setdefault(str(adapter), []).append(device)
