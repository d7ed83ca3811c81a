"""ai00-convert: an RWKV .pth (or .st) -> .st in AI00's layout (default, so AI00 and web-rwkv load it too)
or the official one.

    ai00-convert --input RWKV-x070-World-0.1B.pth --output RWKV-x070-World-0.1B.st [--layout ai00] [--dtype fp16]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from backend.gpu.loader import ModelFormatError, infer_info, iter_model, to_ai00
from backend.gpu.models.info import ModelInfo

LAYOUTS = ("ai00", "official")
DTYPES = {"fp16": np.float16, "fp32": np.float32}


def save_st(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    path: str | Path,
    layout: str = "official",
    dtype: type[np.floating] = np.float32,
    info: ModelInfo | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write canonical tensors as a .st file in `layout`; an iterable is consumed one tensor at a time."""
    from safetensors.numpy import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not one of {LAYOUTS}")
    if isinstance(tensors, Mapping):
        if layout == "ai00" and info is None:
            info = infer_info({k: v.shape for k, v in tensors.items()})[0]
        tensors = tensors.items()
    if layout == "ai00" and info is None:
        raise ValueError("info: the AI00 layout depends on the model version; pass info or a mapping")
    out = {}
    for name, array in tensors:
        key, value = to_ai00(name, array, info) if layout == "ai00" else (name, array)
        out[key] = np.ascontiguousarray(value, dtype=dtype)  # cast as we go: peak memory ~ the output
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # "format: pt" is what AI00's converter writes; "layout" lets our loader skip guessing
    save_file(out, str(path), metadata={"format": "pt", "layout": layout, **(metadata or {})})
    path.chmod(0o644)  # safetensors creates files owner-only; a model is no secret and may be served by another user
    return path


def convert(src: str | Path, dst: str | Path, layout: str = "ai00", dtype: str = "fp16") -> ModelInfo:
    """Read any model file we understand and write it as .st."""
    info, tensors = iter_model(src)
    save_st(tensors, dst, layout=layout, dtype=DTYPES[dtype], info=info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ai00-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="RWKV model: .pth (needs torch) or .st")
    parser.add_argument("--output", required=True, type=Path, help="the .st file to write")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="ai00",
        help="ai00 (default): loads in AI00/web-rwkv too; official: BlinkDL's names and shapes",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    args = parser.parse_args(argv)
    try:
        info = convert(args.input, args.output, args.layout, args.dtype)
    except (FileNotFoundError, ModelFormatError) as err:
        print(f"ai00-convert: {err}", file=sys.stderr)
        return 1
    except ImportError as err:  # torch is an optional extra, needed only for .pth input
        print(f"ai00-convert: {err}; install it with `pip install ai00-server-py[convert]`", file=sys.stderr)
        return 1
    print(
        f"{args.output}: RWKV {info.version}, {info.n_layer} layers, n_embd {info.n_embd}, "
        f"vocab {info.n_vocab} ({args.layout} layout, {args.dtype})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
