"""RWKV states as .st files: tuned initial states (what state tuning writes) and exported saved states.

The file layout (safetensors; f32 when we write it, f16/bf16/f32 read), for each layer i:
  blocks.{i}.att.time_state  [H, N, N]  the wkv matrix state, oriented as state tuning saves it
                                        ([head, value, key]), so an exported state loads as a tuned state
  blocks.{i}.att.x_prev      [C]        time-mix token shift: the previous token's ln1 output
  blocks.{i}.ffn.x_prev      [C]        channel-mix token shift: the previous token's ln2 output
RWKV-4 has no matrix state: blocks.{i}.att.aa, .bb, .pp [C] (the reference's numerator, denominator and
running max exponent) instead of time_state.
Metadata: format "pt", kind "ai00-state", version, n_layer, n_embd, head_size, and the model's file stem.

A file without the x_prev vectors is a tuned state: its token shifts start at zero. AI00's converted
layout (metadata layout "ai00") stores time_state transposed; such files are read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from backend.gpu.models.info import ModelInfo, StateLayout, Version
from backend.gpu.state_pool import initial_layer_state, state_from_time_state, unpack_layer_state
from backend.st_file import read_st, st_bytes

KIND = "ai00-state"
_V4_PARTS = ("aa", "bb", "pp")


class StateFileError(ValueError):
    """A state file that does not fit the model; the message names the file and the tensor."""


def read_state(source: str | Path | bytes, info: ModelInfo, where: str = "") -> list[np.ndarray]:
    """Per-layer flat f32 states (StateLayout) from a tuned-state or exported-state file."""
    where = where or ("upload" if isinstance(source, bytes) else Path(source).name)
    tensors, metadata = read_st(source, where)
    if (version := metadata.get("version")) and version != info.version.value:
        raise StateFileError(f"{where}: a state of an RWKV {version} model, this model is {info.version}")
    parts = ("att.x_prev", "ffn.x_prev", *(f"att.{p}" for p in _V4_PARTS), "att.time_state")
    known = {f"blocks.{i}.{part}" for i in range(info.n_layer) for part in parts}
    if extra := sorted(set(tensors) - known):
        raise StateFileError(f"{extra[0]}: not a tensor of this {info.n_layer}-layer model's state, in {where}")
    for name, x in tensors.items():  # a NaN or an infinity would spread to every token generated from it
        if not np.isfinite(x).all():
            raise StateFileError(f"{name}: holds NaN or infinite values, in {where}")
    layers = (
        _v4_layers(tensors, info, where)
        if info.version is Version.V4
        else _matrix_layers(tensors, info, metadata.get("layout") == "ai00", where)
    )
    layout, c = StateLayout.of(info), info.n_embd
    for i, state in enumerate(layers):
        for part, offset in (("att", layout.att_x_prev), ("ffn", layout.ffn_x_prev)):
            if (x := tensors.get(f"blocks.{i}.{part}.x_prev")) is not None:
                state[offset : offset + c] = _sized(x, c, f"blocks.{i}.{part}.x_prev", where)
    return layers


def _matrix_layers(tensors: Mapping[str, np.ndarray], info: ModelInfo, ai00: bool, where: str) -> list[np.ndarray]:
    h, n = info.n_head, info.head_size
    time_state = []
    for i in range(info.n_layer):
        name = f"blocks.{i}.att.time_state"
        if name not in tensors:
            raise StateFileError(f"{name}: missing in {where} (a state of {info.n_layer} layers)")
        x = _sized(tensors[name], h * n * n, name, where).reshape(h, n, n)
        time_state.append(x.transpose(0, 2, 1) if ai00 else x)
    return state_from_time_state(info, time_state)


def _v4_layers(tensors: Mapping[str, np.ndarray], info: ModelInfo, where: str) -> list[np.ndarray]:
    layout, c = StateLayout.of(info), info.n_embd
    layers = []
    for i in range(info.n_layer):
        state = initial_layer_state(info)
        for k, part in enumerate(_V4_PARTS):
            name = f"blocks.{i}.att.{part}"
            if name not in tensors:
                raise StateFileError(f"{name}: missing in {where} (RWKV-4 states have no tuned form)")
            start = layout.recurrent + k * c
            state[start : start + c] = _sized(tensors[name], c, name, where)
        layers.append(state)
    return layers


def _sized(x: np.ndarray, size: int, name: str, where: str) -> np.ndarray:
    if x.size != size:
        raise StateFileError(f"{name}: shape {x.shape} ({x.size} values), expected {size}, in {where}")
    return x.reshape(-1)


def state_file_bytes(layers: list[np.ndarray], info: ModelInfo, model: str = "") -> bytes:
    """The .st file of one sequence's state (per-layer flat f32, as Engine.read_slot gives it)."""
    tensors = {}
    for i, flat in enumerate(layers):
        parts = unpack_layer_state(info, np.asarray(flat, np.float32).reshape(-1))
        p = f"blocks.{i}."
        tensors[p + "att.x_prev"], tensors[p + "ffn.x_prev"] = parts[0], parts[-1]
        if info.version is Version.V4:
            tensors |= {p + "att." + part: x for part, x in zip(_V4_PARTS, parts[1:4], strict=True)}
        else:
            kv = parts[1]  # v5/v6 hold [head, key, value]; files hold [head, value, key], as v7 does
            tensors[p + "att.time_state"] = kv if info.version is Version.V7 else kv.transpose(0, 2, 1)
    metadata = {"kind": KIND, "version": info.version.value, "n_layer": str(info.n_layer),
                "n_embd": str(info.n_embd), "head_size": str(info.head_size), "model": model}  # fmt: skip
    return st_bytes(tensors, metadata)
