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
        self.template = [gpu.upload(initial_layer_state(info), f"state_template.{i}") for i in range(info.n_layer)]
        # WebGPU cannot copy inside one buffer, so forks go through this scratch slot
        self.scratch = gpu.empty(self.slot_bytes, "state_scratch")

    def _check(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise IndexError(f"state slot {slot} out of range 0..{self.slots - 1}")

    def _submit(self, record: callable) -> None:
        encoder = self.gpu.device.create_command_encoder()
        record(encoder)
        self.gpu.queue.submit([encoder.finish()])

    def reset(self, slot: int) -> None:
        self._check(slot)

        def record(enc: wgpu.GPUCommandEncoder) -> None:
            for layer, template in zip(self.layers, self.template, strict=True):
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
        if len(layers) != len(self.layers):
            raise ValueError(f"state has {len(layers)} layers, model has {len(self.layers)}")
        for i, (buffer, data) in enumerate(zip(self.layers, layers, strict=True)):
            data = np.asarray(data, np.float32).reshape(-1)
            if data.size != self.layout.size:
                raise ValueError(f"state layer {i}: {data.size} floats, expected {self.layout.size}")
            self.gpu.write(buffer, data, slot * self.slot_bytes)


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
