"""The demo model, and random-init RWKV models in the official layout (test models for the oracle).

The demo model is a tiny RWKV-7 trained by `backend.tools.train_demo` on public-domain and DFSG-free text
from Debian packages (assets/models/README.md); the package keeps it xz-compressed and `ensure_demo_model`
unpacks it at first use into the writable models folder.

The random init is meant to look like a trained model to the math (layer norms near 1, matrices scaled by
1/sqrt(fan_in), every per-step decay well inside (0, 1)), so that comparing two implementations on it
means something. The text a random model writes is gibberish by design.

    python -m backend.tools.demo_model [--version v7] [--layers 2] [--embd 128] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import logging
import lzma
import math
import os
import shutil
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.gpu.loader import LoraDims, Shape, canonical_shapes
from backend.gpu.models.info import ModelInfo, Version
from backend.resources import ASSETS, writable_models_dir
from backend.tools.convert import DTYPES, LAYOUTS, save_st

__all__ = ["demo_model_path", "ensure_demo_model", "ensure_random_model", "make_random_model", "save_pth", "save_st"]

DEMO_MODEL_NAME = "demo-rwkv7-tiny.st"
DEMO_MODEL_PACKED = ASSETS / "models" / f"{DEMO_MODEL_NAME}.xz"  # the trained demo model, as the package keeps it
RANDOM_MODEL_NAME = "random-rwkv7-tiny.st"  # the generator's default file
DEMO_NOTE = "UNTRAINED random weights: a demo model that writes gibberish"

log = logging.getLogger("ai00.demo_model")

Init = Callable[[Shape, np.random.Generator], np.ndarray]


def make_random_model(
    version: Version | str,
    n_layer: int,
    n_embd: int,
    n_vocab: int = 65536,
    seed: int = 0,
    head_size: int = 64,
    ffn: int | None = None,
    deep_embed: bool = False,
) -> dict[str, np.ndarray]:
    """A random model in the official layout, f32; each tensor depends only on (seed, its name)."""
    version = Version(version)
    if version is not Version.V4 and n_embd % head_size:
        raise ValueError(f"n_embd: {n_embd} is not a multiple of head_size {head_size}")
    if deep_embed and version is not Version.V7:
        raise ValueError("deep_embed: only v7 has the DeepEmbed variant")
    info = ModelInfo(
        version=version,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_ffn=ffn or default_ffn(version, n_embd),
        head_size=0 if version is Version.V4 else head_size,
        deep_embed=deep_embed,
    )
    tensors = {}
    for name, shape in canonical_shapes(info, default_lora(info)).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        tensors[name] = _initializer(name, version)(shape, rng).astype(np.float32).reshape(shape)
    return tensors


def default_ffn(version: Version, n_embd: int) -> int:
    """The official trainers' FFN width: 4C for v4 and v7, 3.5C (rounded down to 32) for v5/v6."""
    return 4 * n_embd if version in (Version.V4, Version.V7) else int(n_embd * 3.5) // 32 * 32


def default_lora(info: ModelInfo) -> LoraDims:
    """LoRA ranks that grow with n_embd like the official trainers' (multiples of 32)."""
    c = info.n_embd

    def rank(scale: float, power: float) -> int:
        return max(32, round(scale * c**power / 32) * 32)

    if info.version is Version.V6:
        return LoraDims(mix=32, decay=64)
    if info.version is Version.V7:
        deep = 32 if info.deep_embed else 0  # the reference hard-codes DeepEmbed's 32x32
        return LoraDims(w=rank(1.8, 0.5), a=rank(1.8, 0.5), v=rank(1.3, 0.5), g=rank(0.6, 0.8), deep=deep)
    return LoraDims()


# --- init rules: a tensor's key is its name without "blocks.{i}." ---------------------------------


def _normal(std: float) -> Init:
    return lambda shape, rng: rng.normal(0.0, std, shape)


def _uniform(lo: float, hi: float) -> Init:
    return lambda shape, rng: rng.uniform(lo, hi, shape)


def _around(mean: float, std: float) -> Init:
    return lambda shape, rng: mean + rng.normal(0.0, std, shape)


def _fan_in(axis: int, gain: float = 1.0) -> Init:
    """N(0, gain / sqrt(fan_in)): unit-scale outputs for unit-scale inputs."""
    return lambda shape, rng: rng.normal(0.0, gain / math.sqrt(shape[axis]), shape)


# per-step decay exp(-exp(d)) from 0.999 (d = -6.9) down to 0.5 (d = -0.37), as trained models spread it
_LOG_LOG_DECAY = _uniform(-6.9, -0.37)

_RULES: dict[str, Init] = {
    "emb.weight": _normal(0.1),  # ln0 normalizes it; fp16 keeps 0.1-sized values exact enough
    "head.weight": _fan_in(-1),
    "att.time_decay": _LOG_LOG_DECAY,
    "att.time_first": _uniform(-1.5, 0.5),  # v4: log-space bonus added to k
    "att.time_faaaa": _uniform(-0.3, 1.0),  # v5+: the bonus itself
    # v6: token-shift and decay LoRAs add ~0.05 to the mixes and ~0.3 to the log-log decay
    "att.time_maa_w1": _fan_in(0),
    "att.time_maa_w2": _fan_in(-2, 0.1),
    "att.time_decay_w1": _fan_in(0),
    "att.time_decay_w2": _fan_in(0, 0.3),
    # v7: decay exp(-0.606531 * sigmoid(w0 + lora)) spans ~0.99 (w0 = -4) to ~0.6 (w0 = 1.5)
    "att.w0": _uniform(-4.0, 1.5),
    "att.a0": _uniform(-0.5, 0.5),
    "att.v0": _uniform(-0.5, 1.0),
    "att.w2": _fan_in(0, 0.3),
    "att.a2": _fan_in(0, 0.3),
    "att.v2": _fan_in(0, 0.3),
    "att.g2": _fan_in(0),  # g = sigmoid(.) @ g2 should stay O(1): it scales the whole att output
    "att.k_k": _around(0.85, 0.05),
    "att.k_a": _around(1.0, 0.05),
    "att.r_k": _normal(0.1),
    # v7 DeepEmbed: ffn key scaled by ((x @ s1) @ s_emb[token] @ s2 + s0) ~ 1 + 0.1 noise
    "ffn.s_emb.weight": lambda shape, rng: rng.normal(0.0, math.isqrt(shape[-1]) ** -0.5, shape),  # rows: [d, d]
    "ffn.s_emb_x.weight": _fan_in(-1, 0.1),
    "ffn.s0": _around(1.0, 0.05),
    "ffn.s1": _fan_in(0),
    "ffn.s2": _fan_in(0, 0.1),
}


def _initializer(name: str, version: Version) -> Init:
    key = name.split(".", 2)[2] if name.startswith("blocks.") else name
    if key in _RULES:
        return _RULES[key]
    last = key.rsplit(".", 1)[-1]
    if key.startswith(("ln", "att.ln_x")):  # layer and group norms: weight ~ 1, bias ~ 0
        return _around(1.0, 0.05) if last == "weight" else _normal(0.05)
    if key.startswith(("att.time_mix", "ffn.time_mix", "att.time_maa", "ffn.time_maa", "att.x_", "ffn.x_")):
        return _uniform(0.0, 1.0)  # token-shift mixes
    if last in ("w1", "a1", "v1", "g1"):
        return _fan_in(0)  # x @ w1: fan-in is the row count
    if last == "weight":
        return _fan_in(-1)  # nn.Linear [out, in]
    raise KeyError(f"{name}: no init rule for this {version} tensor")


# --- files ------------------------------------------------------------------------------------------


def save_pth(tensors: dict[str, np.ndarray], path: str | Path) -> Path:
    """torch.save the tensors (what the reference `rwkv` package loads); needs torch."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)
    return path


def write_demo_model(
    path: Path,
    version: Version = Version.V7,
    n_layer: int = 2,
    n_embd: int = 128,
    seed: int = 0,
    layout: str = "official",
    dtype: type[np.floating] = np.float16,
) -> Path:
    tensors = make_random_model(version, n_layer, n_embd, seed=seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a half-written model must never be loadable
    save_st(tensors, tmp, layout=layout, dtype=dtype, metadata={"note": DEMO_NOTE})
    tmp.replace(path)
    return path


def demo_model_path() -> Path:
    """assets/models/demo-rwkv7-tiny.st, or the user's cache where the package's folder is read-only."""
    return writable_models_dir() / DEMO_MODEL_NAME


def ensure_demo_model(path: str | Path | None = None, packed: Path = DEMO_MODEL_PACKED) -> Path:
    """The demo model's path (the server's model when none is configured), unpacking the trained model first
    where the file is missing or is not the packed one (an older checkout generated a random model there).
    Without the packed file (a package built without it) the random model is generated, with a warning."""
    path = Path(path) if path else demo_model_path()
    if not packed.is_file():
        if not path.is_file():
            log.warning("%s is missing: generating an UNTRAINED random demo model at %s", packed, path)
            write_demo_model(path)
        return path
    if not (path.is_file() and _st_header(path) == _st_header(packed)):
        _unpack(packed, path)
    return path


def ensure_random_model(path: str | Path | None = None) -> Path:
    """The untrained random model (v7, 2 x 128, seed 0), generated once: what tests of the server's plumbing
    serve, since it never ends a text before max_tokens and runs 2.3x faster than the demo model on lavapipe."""
    path = Path(path) if path else writable_models_dir() / RANDOM_MODEL_NAME
    return path if path.is_file() else write_demo_model(path)


def _unpack(packed: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a half-written model must never be loadable
    with lzma.open(packed) as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    tmp.chmod(0o644)
    tmp.replace(path)


def _st_header(path: Path) -> bytes:
    """A safetensors file's header (its tensors' names, shapes, offsets and metadata), read from the .st or
    decompressed from the start of the .st.xz: enough to tell two demo models apart without unpacking."""
    with lzma.open(path) if path.suffix == ".xz" else path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(min(size, 1 << 24))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", type=Version, choices=list(Version), default=Version.V7)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=LAYOUTS, default="official")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    parser.add_argument("--out", type=Path, help="default: assets/models/" + RANDOM_MODEL_NAME)
    args = parser.parse_args(argv)
    args.out = args.out or writable_models_dir() / RANDOM_MODEL_NAME
    write_demo_model(args.out, args.version, args.layers, args.embd, args.seed, args.layout, DTYPES[args.dtype])
    print(
        f"wrote {args.out}: RWKV {args.version}, {args.layers} layers, n_embd {args.embd}, vocab 65536, "
        f"{args.dtype}, {args.layout} layout, seed {args.seed}"
    )
    print(f"NOTE: {DEMO_NOTE}. Use a trained model for real output.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
