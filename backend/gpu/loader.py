"""Model files -> the canonical layout: BlinkDL's official tensor names and shapes, as float32 numpy.

Two on-disk layouts are read: the official one (what `torch.save` of a trained model holds) and AI00's
converted one (renamed, some matrices transposed). Everything about AI00's layout lives in the `_AI00_*`
tables below, which both `to_ai00` (the writer, used by tools/convert.py) and this reader follow.

Canonical quirks the engine relies on:
  * v5.x/v6 bonus is always `att.time_faaaa`, the bonus `u` itself. Files that store it as `time_first`
    (official v5.0/v5.1: log-space, the reference uses exp(time_first)) are converted here.
  * v7 layer 0 always has `att.v0/v1/v2` (zeros when the file lacks them: the reference never reads them).
  * `blocks.{i}.att.time_state` (state tuning, v5+) is returned as saved, [H, N, N]; the v5/v6 reference
    starts from `time_state.transpose(1, 2)`, i.e. its own [head, key, value] state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.gpu.models.info import ModelInfo, Version

Shape = tuple[int, ...]
_BLOCK = re.compile(r"blocks\.(\d+)\.")


class ModelFormatError(ValueError):
    """The file is not an RWKV model this loader can read; the message names the file and the tensor."""


@dataclass(frozen=True)
class LoraDims:
    """Ranks of the low-rank projections inside v6/v7 blocks (0 where the version has none)."""

    mix: int = 0  # v6 att.time_maa_w1 [C, 5 * mix]
    decay: int = 0  # v6 att.time_decay_w1 [C, decay]
    w: int = 0  # v7 att.w1 [C, w]
    a: int = 0  # v7 att.a1 [C, a]
    v: int = 0  # v7 att.v1 [C, v]
    g: int = 0  # v7 att.g1 [C, g]
    deep: int = 0  # v7 DeepEmbed ffn.s1 [C, deep]; ffn.s_emb.weight [V, deep**2]


# ---------------------------------------------------------------------------------------------------
# The canonical layout


def canonical_shapes(info: ModelInfo, lora: LoraDims) -> dict[str, Shape]:
    """Every tensor of the canonical layout with its shape.

    Within a block, ln_x/gate/time_maa come before time_decay/time_faaaa: the reference detects the
    version while walking the keys in order, and this order lets it do so already in layer 0.
    """
    c, v = info.n_embd, info.n_vocab
    shapes: dict[str, Shape] = {"emb.weight": (v, c), "blocks.0.ln0.weight": (c,), "blocks.0.ln0.bias": (c,)}
    att, ffn = _att_shapes(info, lora), _ffn_shapes(info, lora)
    for i in range(info.n_layer):
        p = f"blocks.{i}."
        shapes |= {p + k: (c,) for k in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")}
        shapes |= {p + "att." + k: s for k, s in att.items()}
        shapes |= {p + "ffn." + k: s for k, s in ffn.items()}
    return shapes | {"ln_out.weight": (c,), "ln_out.bias": (c,), "head.weight": (v, c)}


def _att_shapes(info: ModelInfo, lora: LoraDims) -> dict[str, Shape]:
    c, h, n, ver = info.n_embd, info.n_head, info.head_size, info.version
    mix, mat = (1, 1, c), (c, c)
    s: dict[str, Shape] = {}
    if ver.major >= 5:
        s |= {"ln_x.weight": (c,), "ln_x.bias": (c,)}
    if ver is Version.V7:
        s |= dict.fromkeys(("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"), mix)
        for x, rank in (("w", lora.w), ("a", lora.a), ("v", lora.v), ("g", lora.g)):
            s |= {} if x == "g" else {x + "0": mix}
            s |= {x + "1": (c, rank), x + "2": (rank, c)}
        s |= {"k_k": mix, "k_a": mix, "r_k": (h, n)}
    elif ver is Version.V6:
        s["gate.weight"] = mat
        s |= {f"time_maa_{x}": mix for x in "xwkvrg"}
        s |= {"time_maa_w1": (c, 5 * lora.mix), "time_maa_w2": (5, lora.mix, c)}
        s |= {"time_decay": mix, "time_decay_w1": (c, lora.decay), "time_decay_w2": (lora.decay, c)}
        s["time_faaaa"] = (h, n)
    else:
        gated = ver in (Version.V5_1, Version.V5_2)
        s |= {"gate.weight": mat} if gated else {}
        s |= {f"time_mix_{x}": mix for x in ("kvrg" if gated else "kvr")}
        if ver is Version.V4:
            s |= {"time_decay": (c,), "time_first": (c,)}
        elif ver is Version.V5_2:
            s |= {"time_decay": (h, n), "time_faaaa": (h, n)}
        else:
            s |= {"time_decay": (h,), "time_faaaa": (h,)}
    return s | dict.fromkeys(("receptance.weight", "key.weight", "value.weight", "output.weight"), mat)


def _ffn_shapes(info: ModelInfo, lora: LoraDims) -> dict[str, Shape]:
    c, f, v = info.n_embd, info.n_ffn, info.n_vocab
    if info.version is Version.V7:
        s: dict[str, Shape] = {"x_k": (1, 1, c), "key.weight": (f, c), "value.weight": (c, f)}
        if info.deep_embed:
            d = lora.deep
            s |= {"s_emb.weight": (v, d * d), "s_emb_x.weight": (d * d, c)}
            s |= {"s0": (1, 1, f), "s1": (c, d), "s2": (d, f)}
        return s
    mix = "time_maa_" if info.version is Version.V6 else "time_mix_"
    return {
        mix + "k": (1, 1, c),
        mix + "r": (1, 1, c),
        "key.weight": (f, c),
        "receptance.weight": (c, c),
        "value.weight": (c, f),
    }


def detect_version(shapes: Mapping[str, Shape]) -> Version:
    """The version from tensor names (either layout), as the reference decides it."""
    keys = {name.split(".", 2)[2] for name in shapes if name.startswith("blocks.") and name.count(".") >= 2}
    if "att.r_k" in keys:
        return Version.V7
    # AI00 renames time_maa -> time_mix; time_mix_x and time_decay_w1 exist only in v6
    if "att.time_decay_w1" in keys or "att.time_mix_x" in keys or any("time_maa" in k for k in keys):
        return Version.V6
    if "att.ln_x.weight" not in keys:
        return Version.V4
    if len(_squeezed(shapes.get("blocks.0.att.time_decay", ()))) == 2:
        return Version.V5_2
    return Version.V5_1 if "att.gate.weight" in keys else Version.V5_0


def infer_info(shapes: Mapping[str, Shape], where: str = "model") -> tuple[ModelInfo, LoraDims]:
    """Sizes of a model in the canonical layout, from the shapes of a few tensors."""
    version = detect_version(shapes)

    def dims(name: str, ndim: int) -> Shape:
        if name not in shapes:
            raise ModelFormatError(f"{name}: missing in {where} (needed to size a {version} model)")
        if len(shapes[name]) < ndim:
            raise ModelFormatError(f"{name}: expected {ndim} dimensions, found shape {shapes[name]} in {where}")
        return shapes[name][-ndim:]

    n_vocab, c = dims("emb.weight", 2)
    n_layer = 1 + max((int(m[1]) for m in map(_BLOCK.match, shapes) if m), default=-1)
    n_ffn = dims("blocks.0.ffn.key.weight", 2)[0]
    head_size, lora = 0, LoraDims()
    if version in (Version.V5_0, Version.V5_1):
        head_size = c // max(1, int(np.prod(shapes.get("blocks.0.att.time_decay", (c,)))))
    elif version in (Version.V5_2, Version.V6):
        head_size = dims("blocks.0.att.time_faaaa", 2)[1]
    elif version is Version.V7:
        head_size = dims("blocks.0.att.r_k", 2)[1]
    if version is Version.V6:
        lora = LoraDims(mix=dims("blocks.0.att.time_maa_w1", 2)[1] // 5, decay=dims("blocks.0.att.time_decay_w1", 2)[1])
    elif version is Version.V7:
        rank = {x: dims(f"blocks.0.att.{x}1", 2)[1] for x in "wag"}
        # layer 0 never uses v1 (it makes v_first), so files may omit it there: size it from any layer
        v1 = [s[-1] for name, s in shapes.items() if name.endswith(".att.v1")]
        deep = dims("blocks.0.ffn.s1", 2)[1] if "blocks.0.ffn.s_emb.weight" in shapes else 0
        lora = LoraDims(w=rank["w"], a=rank["a"], v=v1[0] if v1 else rank["a"], g=rank["g"], deep=deep)
    if version is not Version.V4 and (head_size <= 0 or c % head_size):
        raise ModelFormatError(f"{where}: n_embd {c} is not a multiple of the head size {head_size}")
    info = ModelInfo(
        version=version,
        n_layer=n_layer,
        n_embd=c,
        n_vocab=n_vocab,
        n_ffn=n_ffn,
        head_size=0 if version is Version.V4 else head_size,
        deep_embed=lora.deep > 0,
    )
    return info, lora


def _squeezed(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


# ---------------------------------------------------------------------------------------------------
# AI00's layout (what its convert_safetensors.py writes and web-rwkv reads)

# (official substring, AI00 substring, which versions it applies to): v4 keeps its own time_first,
# v4/v5 already say time_mix. (AI00 also renames lora_A/lora_B -> lora.0/lora.1, in LoRA files only.)
_AI00_RENAMES: tuple[tuple[str, str, Callable[[Version], bool]], ...] = (
    ("time_faaaa", "time_first", lambda ver: ver.major >= 5),
    ("time_maa", "time_mix", lambda ver: ver is Version.V6),
)
# AI00 swaps the last two dims of a tensor whose (AI00) name contains any of these, once.
_AI00_TRANSPOSED = (
    "time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
    "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state", "lora.0",
)  # fmt: skip
# AI00 stores v5.1's per-head decay and bonus once per channel, [H] -> [H, N]. We do the same for
# v5.0 (AI00 leaves it per head, but nothing in AI00 runs v5.0): that makes the layout unambiguous.
_AI00_PER_CHANNEL = ("att.time_decay", "att.time_faaaa")


def to_ai00(name: str, array: np.ndarray, info: ModelInfo) -> tuple[str, np.ndarray]:
    """One canonical tensor -> its AI00 name and array."""
    if info.version in (Version.V5_0, Version.V5_1) and name.endswith(_AI00_PER_CHANNEL):
        array = np.repeat(array.reshape(-1, 1), info.head_size, axis=1)
    name = _ai00_name(name, info.version)
    if _ai00_transposed(name):
        array = np.swapaxes(array, -1, -2)
    return name, array


def _ai00_name(name: str, version: Version) -> str:
    for official, ai00, applies in _AI00_RENAMES:
        if applies(version):
            name = name.replace(official, ai00)
    return name.lower()


def _canonical_name(ai00_name: str, version: Version) -> str:
    for official, ai00, applies in _AI00_RENAMES:
        if applies(version):
            ai00_name = ai00_name.replace(ai00, official)
    return ai00_name


def _ai00_transposed(ai00_name: str) -> bool:
    return any(t in ai00_name for t in _AI00_TRANSPOSED)


def _detect_layout(src: _Source, version: Version) -> str:
    """'official' or 'ai00'. Where the two coincide (v4) the answer does not matter."""
    if src.metadata.get("layout") in ("official", "ai00"):  # written by our converter
        return src.metadata["layout"]
    shapes = src.shapes
    if version is Version.V6:
        return "ai00" if "blocks.0.att.time_mix_x" in shapes else "official"
    if version.major == 5:
        # official v5.x name the bonus time_faaaa, or time_first (log-space) next to a per-head decay
        per_channel = len(_squeezed(shapes.get("blocks.0.att.time_decay", ()))) == 2
        return "ai00" if per_channel and "blocks.0.att.time_first" in shapes else "official"
    if version is Version.V7:
        c = shapes["emb.weight"][-1]
        w1 = shapes.get("blocks.0.att.w1", (c, 0))
        return "ai00" if w1[-1] == c and w1[0] != c else "official"
    return "official"


# ---------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _Source:
    """An opened model file: tensor shapes up front, data on demand in the file's own float type."""

    path: Path
    shapes: dict[str, Shape]
    metadata: dict[str, str]
    load: Callable[[str], np.ndarray]


@dataclass(frozen=True)
class _Entry:
    """Where a canonical tensor comes from, and what turns the file's tensor into it."""

    raw: str  # name in the file; "" for a tensor made here
    transform: str = ""  # "", "t" (swap last two dims), "per_head" ([H, N] -> [H]), "exp", "zeros"


_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "": lambda x: x,
    "t": lambda x: np.swapaxes(x, -1, -2),
    "per_head": lambda x: x[..., 0],
    "exp": lambda x: np.exp(x.astype(np.float32)),
}


def read_model(path: str | Path) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """A .st model (official or AI00 layout; f16, bf16 or f32) -> its info and canonical tensors."""
    info, tensors = _read(_open_st(Path(path)))
    return info, dict(tensors)


def read_model_pth(path: str | Path) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """A .pth model (needs torch; for the converter and tests) -> its info and canonical tensors."""
    info, tensors = _read(_open_pth(Path(path)))
    return info, dict(tensors)


def iter_model(path: str | Path) -> tuple[ModelInfo, Iterator[tuple[str, np.ndarray]]]:
    """.st or .pth: validate first, then yield canonical tensors one at a time (the converter's memory)."""
    path = Path(path)
    return _read(_open_pth(path) if path.suffix == ".pth" else _open_st(path))


def _read(src: _Source) -> tuple[ModelInfo, Iterator[tuple[str, np.ndarray]]]:
    info, plan = _plan(src)
    return info, ((name, _materialize(src, entry, shape)) for name, (entry, shape) in plan.items())


def _materialize(src: _Source, entry: _Entry, shape: Shape) -> np.ndarray:
    if entry.transform == "zeros":
        return np.zeros(shape, np.float32)
    x = _TRANSFORMS[entry.transform](src.load(entry.raw))
    return np.ascontiguousarray(x, dtype=np.float32).reshape(shape)  # one copy: cast and layout together


def _plan(src: _Source) -> tuple[ModelInfo, dict[str, tuple[_Entry, Shape]]]:
    """Map every canonical tensor to its source and check presence and shape, before reading any data."""
    if "emb.weight" not in src.shapes:
        raise ModelFormatError(f"emb.weight: missing in {src.path.name} (not an RWKV model?)")
    layout, entries = _entries(src)
    shapes = {k: _shape_after(src.shapes[e.raw], e.transform) for k, e in entries.items()}
    info, lora = infer_info(shapes, src.path.name)
    expected = canonical_shapes(info, lora) | _time_state_shapes(info, entries, src.path.name)
    if info.version is Version.V7 and "blocks.0.att.v1" not in entries:
        entries |= {f"blocks.0.att.{x}": _Entry("", "zeros") for x in ("v0", "v1", "v2")}
    plan = {}
    for name, shape in expected.items():
        entry = entries.get(name)
        if entry is None:
            shown = _ai00_name(name, info.version) if layout == "ai00" else name
            raise ModelFormatError(f"{shown}: missing in {src.path.name} ({info.version}, {info.n_layer} layers)")
        if entry.transform != "zeros" and _squeezed(shapes[name]) != _squeezed(shape):
            found = src.shapes[entry.raw]
            expect = _shape_before(shape, entry.transform, found)
            raise ModelFormatError(f"{entry.raw}: expected shape {expect}, found {found} in {src.path.name}")
        plan[name] = (entry, shape)
    return info, plan


def _entries(src: _Source) -> tuple[str, dict[str, _Entry]]:
    """The file's layout, and for each canonical name the file's tensor and its transform."""
    version = detect_version(src.shapes)
    layout = _detect_layout(src, version)
    entries = {}
    for raw in src.shapes:
        if layout == "ai00":
            entries[_canonical_name(raw, version)] = _Entry(raw, "t" if _ai00_transposed(raw) else "")
        elif version in (Version.V5_0, Version.V5_1) and raw.endswith("att.time_first"):
            entries[raw.replace("time_first", "time_faaaa")] = _Entry(raw, "exp")  # u = exp(time_first)
        else:
            entries[raw] = _Entry(raw)
    if layout == "ai00" and version is Version.V5_2 and _is_per_head(src, entries):
        entries |= {k: _Entry(e.raw, "per_head") for k, e in entries.items() if k.endswith(_AI00_PER_CHANNEL)}
    return layout, entries


def _time_state_shapes(info: ModelInfo, entries: Mapping[str, _Entry], where: str) -> dict[str, Shape]:
    names = [f"blocks.{i}.att.time_state" for i in range(info.n_layer)]
    names = [name for name in names if name in entries]
    if names and info.version is Version.V4:
        raise ModelFormatError(f"{names[0]}: v4 has no matrix state to tune, in {where}")
    return dict.fromkeys(names, (info.n_head, info.head_size, info.head_size))


def _is_per_head(src: _Source, entries: Mapping[str, _Entry]) -> bool:
    """Whether an AI00 v5 file's per-channel decay and bonus are really per head (v5.0/v5.1)."""
    for name, entry in entries.items():
        if name.endswith(_AI00_PER_CHANNEL):
            x = src.load(entry.raw)
            if x.ndim != 2 or not np.array_equal(x, np.broadcast_to(x[:, :1], x.shape)):
                return False
    return True


def _shape_after(shape: Shape, transform: str) -> Shape:
    if transform == "t" and len(shape) >= 2:
        return (*shape[:-2], shape[-1], shape[-2])
    return shape[:-1] if transform == "per_head" else shape


def _shape_before(shape: Shape, transform: str, found: Shape) -> Shape:
    """The expected shape in the file's own orientation, for error messages."""
    if transform == "per_head":
        return (*shape, found[-1])
    return _shape_after(shape, transform)


# ---------------------------------------------------------------------------------------------------
# File formats


def _open_st(path: Path) -> _Source:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"{path.name}: empty file (0 bytes), not a safetensors model")
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as err:  # safetensors reports a bad header with its own exception types
        hint = "; convert .pth files with ai00-convert" if path.suffix == ".pth" else ""
        raise ModelFormatError(f"{path.name}: not a safetensors file ({err}){hint}") from err
    shapes, dtypes = {}, {}
    for name in handle.keys():  # noqa: SIM118 -- a safe_open handle is not a mapping
        tensor = handle.get_slice(name)
        shapes[name], dtypes[name] = tuple(tensor.get_shape()), tensor.get_dtype()
    for name, dtype in dtypes.items():
        if dtype not in ("F16", "BF16", "F32", "F64"):
            raise ModelFormatError(f"{name}: dtype {dtype} is not a float type we read, in {path.name}")

    def load(name: str) -> np.ndarray:
        # numpy has no bfloat16, so safetensors cannot hand one out: read the raw bits instead
        return _read_bf16(path, name) if dtypes[name] == "BF16" else handle.get_tensor(name)

    return _Source(path, shapes, dict(handle.metadata() or {}), load)


def _read_bf16(path: Path, name: str) -> np.ndarray:
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_len))[name]
    begin, end = entry["data_offsets"]
    bits = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=8 + header_len + begin)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])  # bf16 = f32's top half


def _open_pth(path: Path) -> _Source:
    import torch  # optional dependency: only the converter and tests read .pth

    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # torch raises several types for a file it cannot unpickle
        raise ModelFormatError(f"{path.name}: not a readable .pth file ({err})") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    tensors = {k: t for k, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}

    def load(name: str) -> np.ndarray:
        t = tensors[name]
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    return _Source(path, {k: tuple(t.shape) for k, t in tensors.items()}, {}, load)
