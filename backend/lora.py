"""LoRA adapters: read RWKV LoRA checkpoints (.st) and merge them into a model's canonical weights.

Two namings are read:
  * RWKV-LM-LoRA / RWKV-PEFT: `{m}.lora_A` [r, in] and `{m}.lora_B` [out, r] for the matrix `{m}.weight`
    [out, in];
  * AI00's converted layout: `{m}.lora.0` [in, r] (lora_A transposed) and `{m}.lora.1` [out, r]; its
    other tensors carry AI00's names and orientations (see gpu/loader.py).
Merging follows the trainers' merge scripts: W += alpha / r * (B @ A), with r = B.shape[1]. Every other
tensor in the file (a trained layer norm, time_mix, ...) replaces the model's tensor, as merge_lora.py does
(`time_state` is skipped: load it as a tuned state). Several adapters apply in order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.gpu.loader import iter_model, to_ai00
from backend.gpu.models.info import ModelInfo
from backend.st_file import read_st

log = logging.getLogger("ai00.lora")

Shape = tuple[int, ...]
# tensors that engine.write_weights rewrites together with layer 0 (see Engine.write_weights)
COMMON = ("emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "ln_out.bias", "head.weight")
_PAIR = re.compile(r"^(?P<m>.+)\.(?:lora_(?P<ab>[AB])|lora\.(?P<i>[01]))$")


class LoraError(ValueError):
    """An adapter that does not fit the model; the message names the file and the tensor."""


@dataclass(frozen=True)
class Adapter:
    name: str
    path: str
    alpha: float
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]  # target `*.weight` -> (A [r, in], B [out, r]) f32
    replaced: Mapping[str, np.ndarray]  # canonical name -> tensor in the model's shape

    @property
    def targets(self) -> set[str]:
        return set(self.pairs) | set(self.replaced)

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.pairs.values()), default=0)


def read_adapter(source: str | Path, alpha: float, name: str, info: ModelInfo, shapes: Mapping[str, Shape]) -> Adapter:
    """Read a LoRA file and check it against a model (its canonical tensor shapes)."""
    tensors, metadata = read_st(source)
    where = Path(source).name
    halves: dict[str, dict[str, np.ndarray]] = {}
    others: dict[str, np.ndarray] = {}
    ai00 = metadata.get("layout") == "ai00"
    for key, x in tensors.items():
        m = _PAIR.match(key)
        if m is None:
            others[key] = x
            continue
        ai00 |= m["i"] is not None
        half = m["ab"] or "AB"[int(m["i"])]
        halves.setdefault(m["m"], {})[half] = x.T if m["i"] == "0" else x  # lora.0 is lora_A transposed
    pairs = {f"{m}.weight": _pair(m, h, where, shapes) for m, h in halves.items()}
    replaced = _replacements(others, ai00, info, shapes, where)
    if not pairs and not replaced:
        raise LoraError(f"{where}: no lora_A/lora_B (or lora.0/lora.1) pairs and no model tensors in it")
    return Adapter(name, str(source), float(alpha), pairs, replaced)


def _pair(m: str, h: dict[str, np.ndarray], where: str, shapes: Mapping[str, Shape]) -> tuple[np.ndarray, ...]:
    if set(h) != {"A", "B"}:
        missing = "B" if "A" in h else "A"
        raise LoraError(f"{m}: lora_{missing} is missing, its pair is in {where}")
    a, b, target = h["A"], h["B"], f"{m}.weight"
    if target not in shapes:
        raise LoraError(f"{m}: the model has no matrix '{target}' to adapt ({where})")
    out, inp = shapes[target] if len(shapes[target]) == 2 else (-1, -1)
    if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != (out, inp):
        raise LoraError(
            f"{m}: lora_A {a.shape} and lora_B {b.shape} do not make the model's {shapes[target]} "
            f"(expected A [r, {inp}], B [{out}, r]) in {where}"
        )
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _replacements(
    others: Mapping[str, np.ndarray], ai00: bool, info: ModelInfo, shapes: Mapping[str, Shape], where: str
) -> dict[str, np.ndarray]:
    """The adapter's whole tensors under canonical names, shaped as the model's."""
    renamed = _ai00_names(info, shapes) if ai00 else {}
    out = {}
    for key, x in others.items():
        if key.endswith("time_state"):
            log.warning("%s: %s skipped (a tuned state: load it with /api/models/state)", where, key)
            continue
        name, transposed = renamed.get(key, (key, False))
        if transposed:
            x = np.swapaxes(x, -1, -2)
        if name not in shapes:
            raise LoraError(f"{key}: the model has no such tensor ({where})")
        if tuple(d for d in x.shape if d != 1) != tuple(d for d in shapes[name] if d != 1):
            raise LoraError(f"{key}: shape {x.shape}, the model's is {shapes[name]} ({where})")
        out[name] = np.ascontiguousarray(x.reshape(shapes[name]))
    return out


def _ai00_names(info: ModelInfo, shapes: Mapping[str, Shape]) -> dict[str, tuple[str, bool]]:
    """AI00 name -> (canonical name, stored transposed), probed through the writer `to_ai00`."""
    out = {}
    for name, shape in shapes.items():
        probe = np.zeros((2, 3)) if len(shape) >= 2 else np.zeros(3)
        key, stored = to_ai00(name, probe, info)
        out[key] = (name, stored.shape == (3, 2))
    return out


def merge(base: Mapping[str, np.ndarray], adapters: Sequence[Adapter]) -> dict[str, np.ndarray]:
    """The tensors the adapters change, as new f32 arrays (`base` is left alone): replace, then add."""
    out: dict[str, np.ndarray] = {}
    for adapter in adapters:
        out |= {name: x.astype(np.float32) for name, x in adapter.replaced.items()}
        for target, (a, b) in adapter.pairs.items():
            w = out.get(target, base[target])
            out[target] = (w + np.float32(adapter.alpha / a.shape[0]) * (b @ a)).astype(np.float32)
    return out


def write_set(changed: Iterable[str], names: Collection[str]) -> set[str]:
    """What `Engine.write_weights` needs to rewrite `changed`: each touched layer whole; the common
    tensors (embedding, ln0, ln_out, head) all together, with layer 0 whose weights ln0 feeds."""
    layers, common = set(), False
    for name in changed:
        if name in COMMON:
            common = True
            layers.add(0)
        else:
            layers.add(int(name.split(".")[1]))
    keep = {n for n in names if n.startswith("blocks.") and n not in COMMON and int(n.split(".")[1]) in layers}
    keep = {n for n in keep if not n.endswith("time_state")}
    return keep | (set(COMMON) & set(names) if common else set())


def read_base(path: str | Path, names: Collection[str]) -> dict[str, np.ndarray]:
    """Some canonical tensors of a model file, as loaded (no adapters)."""
    _, tensors = iter_model(path)  # TODO: a loader reading only `names` would spare reading the rest
    return {name: x for name, x in tensors if name in names}
