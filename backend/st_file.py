"""Small whole .st (safetensors) files -- LoRA adapters, states -- as f32 numpy, from a path or uploaded bytes.

Models go through `gpu/loader.py`, which reads lazily; these files are read at once. safetensors parses
the file; numpy has no bfloat16, so BF16 tensors are widened here from their raw bits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import safetensors
from safetensors.numpy import save

_FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}


class StFileError(ValueError):
    """Not a safetensors file of float tensors; the message names the file (and the tensor)."""


def read_st(source: str | Path | bytes, where: str = "") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors as f32, metadata) of a whole .st file, given its path or its bytes."""
    if isinstance(source, bytes):
        data, where = source, where or "upload"
    else:
        path = Path(source)
        where = where or path.name
        if not path.is_file():
            raise FileNotFoundError(f"file '{source}' not found")
        data = path.read_bytes()
    try:
        entries = safetensors.deserialize(data)
    except Exception as err:  # the parser reports a bad header with its own exception types
        raise StFileError(f"{where}: not a safetensors file ({err})") from None
    tensors = {}
    for name, entry in entries:
        kind = _FLOATS.get(entry["dtype"])
        if kind is None:
            raise StFileError(f"{name}: dtype {entry['dtype']} is not a float type, in {where}")
        x = np.frombuffer(entry["data"], kind)
        if entry["dtype"] == "BF16":
            x = (x.astype(np.uint32) << 16).view(np.float32)  # bf16 is the top half of an f32
        tensors[name] = x.astype(np.float32).reshape(entry["shape"])
    return tensors, _metadata(data)


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")  # safetensors has already checked the header
    return dict(json.loads(data[8 : 8 + header_len]).get("__metadata__") or {})


def st_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """A .st file of f32 tensors; "format: pt" as AI00's converter writes it."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    return save(arrays, metadata={"format": "pt", **metadata})
