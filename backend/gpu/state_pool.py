"""The recurrent states of all sequences: one GPU buffer per layer, [slots, layer_state] f32.

A slot is reset from a template (zeros, or a tuned initial state), copied for forks and
the prefix cache, read back to save, and written to restore.
"""

from __future__ import annotations

import numpy as np
import wgpu

from backend.gpu.device import Gpu
from backend.gpu.models.info import ModelInfo, StateLayout, Version

F32 = 4


def initial_layer_state(info: ModelInfo) -> np.ndarray:
    """A fresh sequence's layer state; RWKV-4 starts its running max pp at -1e30."""
    layout = StateLayout.of(info)
    state = np.zeros(layout.size, np.float32)
    if info.version is Version.V4:
        c = info.n_embd
        state[layout.recurrent + 2 * c : layout.recurrent + 3 * c] = -1e30
    return state


class StatePool:
    def __init__(self, gpu: Gpu, info: ModelInfo, slots: int) -> None:
        self.gpu, self.info, self.slots = gpu, info, slots
        self.layout = StateLayout.of(info)
        self.slot_bytes = self.layout.size * F32
        init = np.tile(initial_layer_state(info), slots)
        self.layers = [gpu.upload(init, f"state.{i}") for i in range(info.n_layer)]
        # state id -> per-layer template buffers; "" is the fresh (zero) state
        self.templates: dict[str, list[wgpu.GPUBuffer]] = {
            "": [gpu.upload(initial_layer_state(info), f"state_template.{i}") for i in range(info.n_layer)]
        }
        # WebGPU cannot copy inside one buffer, so forks go through this scratch slot
        self.scratch = gpu.empty(self.slot_bytes, "state_scratch")

    def _check(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise IndexError(f"state slot {slot} out of range 0..{self.slots - 1}")

    def _submit(self, record: callable) -> None:
        encoder = self.gpu.device.create_command_encoder()
        record(encoder)
        self.gpu.queue.submit([encoder.finish()])

    def add_template(self, state_id: str, layers: list[np.ndarray]) -> None:
        """Register an initial state (e.g. a tuned one) that `reset(slot, state_id)` starts from."""
        if not state_id:
            raise ValueError("state id: must not be empty")
        checked = self._checked(layers)
        self.templates[state_id] = [self.gpu.upload(data, f"state_template.{state_id}") for data in checked]

    def remove_template(self, state_id: str) -> None:
        if state_id == "" or state_id not in self.templates:
            raise KeyError(f"state id {state_id!r} is not loaded")
        for buffer in self.templates.pop(state_id):
            buffer.destroy()

    def reset(self, slot: int, state_id: str = "") -> None:
        self._check(slot)
        if state_id not in self.templates:
            raise KeyError(f"state id {state_id!r} is not loaded")

        def record(enc: wgpu.GPUCommandEncoder) -> None:
            for layer, template in zip(self.layers, self.templates[state_id], strict=True):
                enc.copy_buffer_to_buffer(template, 0, layer, slot * self.slot_bytes, self.slot_bytes)

        self._submit(record)

    def copy(self, src: int, dst: int) -> None:
        self._check(src)
        self._check(dst)
        if src == dst:
            return

        def record(enc: wgpu.GPUCommandEncoder) -> None:
            for layer in self.layers:
                enc.copy_buffer_to_buffer(layer, src * self.slot_bytes, self.scratch, 0, self.slot_bytes)
                enc.copy_buffer_to_buffer(self.scratch, 0, layer, dst * self.slot_bytes, self.slot_bytes)

        self._submit(record)

    def read(self, slot: int) -> list[np.ndarray]:
        """Per-layer flat f32 state of `slot` (layout: StateLayout)."""
        self._check(slot)
        return [self.gpu.read(layer, self.slot_bytes, slot * self.slot_bytes) for layer in self.layers]

    def write(self, slot: int, layers: list[np.ndarray]) -> None:
        self._check(slot)
        for buffer, data in zip(self.layers, self._checked(layers), strict=True):
            self.gpu.write(buffer, data, slot * self.slot_bytes)

    def _checked(self, layers: list[np.ndarray]) -> list[np.ndarray]:
        if len(layers) != len(self.layers):
            raise ValueError(f"state has {len(layers)} layers, model has {len(self.layers)}")
        out = []
        for i, data in enumerate(layers):
            data = np.asarray(data, np.float32).reshape(-1)
            if data.size != self.layout.size:
                raise ValueError(f"state layer {i}: {data.size} floats, expected {self.layout.size}")
            out.append(data)
        return out


def unpack_layer_state(info: ModelInfo, flat: np.ndarray) -> list[np.ndarray]:
    """One layer's flat state in the reference's order and shapes (for comparisons and export)."""
    lo = StateLayout.of(info)
    c = info.n_embd
    att, ffn = flat[lo.att_x_prev : lo.att_x_prev + c], flat[lo.ffn_x_prev : lo.ffn_x_prev + c]
    rec = flat[lo.recurrent : lo.recurrent + lo.recurrent_size]
    if info.version is Version.V4:
        return [att, rec[:c], rec[c : 2 * c], rec[2 * c :], ffn]
    n = info.head_size
    return [att, rec.reshape(info.n_head, n, n), ffn]


def state_from_time_state(info: ModelInfo, time_state: list[np.ndarray]) -> list[np.ndarray]:
    """Per-layer flat states from a state-tuning file's `blocks.{i}.att.time_state` [H, N, N].

    The files hold [head, value, key] (the reference starts v5/v6 from its transpose); v5/v6 keep
    [head, key, value] here, v7 keeps [head, value, key] like the files. Token shifts start at zero.
    """
    if info.version is Version.V4:
        raise ValueError("time_state: RWKV-4 has no tuned-state format")
    if len(time_state) != info.n_layer:
        raise ValueError(f"time_state: {len(time_state)} layers, model has {info.n_layer}")
    layout = StateLayout.of(info)
    n = info.head_size
    out = []
    for i, kv in enumerate(time_state):
        kv = np.asarray(kv, np.float32)
        if kv.size != info.n_head * n * n:
            raise ValueError(f"blocks.{i}.att.time_state: shape {kv.shape}, expected ({info.n_head}, {n}, {n})")
        kv = kv.reshape(info.n_head, n, n)
        if info.version is not Version.V7:
            kv = kv.transpose(0, 2, 1)
        state = np.zeros(layout.size, np.float32)
        state[layout.recurrent : layout.recurrent + layout.recurrent_size] = kv.reshape(-1)
        out.append(state)
    return out
