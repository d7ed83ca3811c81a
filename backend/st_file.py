"""Small whole .st (safetensors) files -- LoRA adapters, states -- as f32 numpy, from a path or uploaded bytes.

Models go through `gpu/loader.py`, which reads lazily; these files are read at once. safetensors parses
the file; numpy has no bfloat16, so BF16 tensors are widened here from their raw bits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import safetensors
from safetensors.numpy import save

_FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}


class StFileError(ValueError):
    """Not a safetensors file of float tensors; the message names the file (and the tensor)."""


MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on the JSON header
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def check_model_header(path: str | Path) -> None:
    """Refuse a model file whose header claims more than its tensors can hold, before anything is sized from
    it: layer indices must run 0..n-1 with no gap, and n can be at most the number of tensors (a file of a few
    hundred bytes naming blocks.99999999 would otherwise have the loader plan a hundred million layers)."""
    path = Path(path)
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= min(MAX_HEADER_BYTES, path.stat().st_size - 8):
            raise StFileError(f"{path.name}: not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except (ValueError, RecursionError) as e:
            raise StFileError(f"{path.name}: not a safetensors file (header: {e})") from None
    if not isinstance(header, dict):
        raise StFileError(f"{path.name}: not a safetensors file (header is not an object)")
    n_tensors = sum(1 for k in header if k != "__metadata__")
    layers = {int(m[1]) for name in header if (m := _BLOCK.match(name))}
    if layers and (max(layers) >= n_tensors or len(layers) != max(layers) + 1):
        missing = min(set(range(min(max(layers), n_tensors) + 1)) - layers, default=max(layers))
        raise StFileError(f"{path.name}: layer indices must run 0..n-1 within its {n_tensors} tensors; "
                          f"found up to {max(layers)}, layer {missing} missing")  # fmt: skip


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
