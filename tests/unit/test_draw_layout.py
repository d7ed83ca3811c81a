"""The host's Draw rows (gpu/sampler.py's structured dtype) mirror shaders/sample.wgsl's `struct Draw` field by
field: same names, same order, same 4-byte types, so a field added on one side only fails here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from backend.gpu.sampler import DRAW, DRAW_FIELDS
from backend.gpu.step_types import Draw

WGSL = (Path(__file__).resolve().parents[2] / "shaders" / "sample.wgsl").read_text()
WGSL_TYPES = {"u32": np.dtype("<u4"), "f32": np.dtype("<f4")}


def wgsl_struct(name: str) -> list[tuple[str, str]]:
    body = re.search(rf"struct {name} \{{(.*?)\n\}}", WGSL, re.S)
    assert body, f"sample.wgsl has no struct {name}"
    return re.findall(r"^\s*(\w+)\s*:\s*(\w+)\s*,", body.group(1), re.M)


def test_the_draw_dtype_is_the_wgsl_struct_field_by_field():
    fields = wgsl_struct("Draw")
    assert [name for name, _ in fields] == list(DRAW.names)
    for name, wgsl_type in fields:
        assert DRAW.fields[name][0] == WGSL_TYPES[wgsl_type], name
    assert DRAW.itemsize == 4 * len(fields) == 4 * DRAW_FIELDS and DRAW.itemsize % 16 == 0  # array stride


def test_every_setting_of_a_host_draw_has_its_field():
    settings = {"temperature", "top_k", "top_p", "min_p", "presence", "frequency", "decay", "slot", "logprobs"}
    assert settings | {"key"} <= set(Draw.__dataclass_fields__)
    assert settings | {"key_lo", "key_hi"} <= set(DRAW.names)  # the 64-bit key as two words
