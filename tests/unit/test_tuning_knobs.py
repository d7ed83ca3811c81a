"""The engine's tuning knobs (DEVELOPERS.md): a bad value is refused naming its variable, and AI00_GEMM's text
round-trips the tiers it names."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backend.gpu import wkv7_chunk, wkv_chunk
from backend.gpu.gemm_slices import k_slices
from backend.gpu.matmul import (
    GEMM_TIERS,
    GEMM_TIERS_F16,
    gemm_kernel,
    gemm_tiers,
    matmul_plan,
    small_gemm_min,
    tiers_text,
    wkv_split,
)
from backend.gpu.ops import StepDims
from backend.gpu.shader_module import shader_checks

TILE_KERNEL = gemm_kernel(GEMM_TIERS[0][1], 9, 16)

READERS: dict[str, tuple[str, Callable[[], object]]] = {
    "AI00_MATMUL": ("tiled,gemm,vec", lambda: matmul_plan(None)),  # type: ignore[arg-type]  # refused before use
    "AI00_GEMM": ("9:32x16", gemm_tiers),
    "AI00_GEMM_SLICES": ("two", lambda: k_slices(TILE_KERNEL, 512, 2048, 64, 1 << 20)),
    "AI00_SMALL_GEMM_MIN": ("17.5", small_gemm_min),
    "AI00_WKV": ("parallel", lambda: wkv_split()(StepDims(64, 1, 1))),
    "AI00_WKV_CHUNKED_MIN": ("-1", wkv_chunk.chunked_min_tokens),
    "AI00_WKV_CHUNK_LEN": ("1", wkv_chunk.chunk_len),
    "AI00_WKV7_CHUNK_LEN": ("64", wkv7_chunk.chunk_len),
    "AI00_SHADER_CHECKS": ("yes", shader_checks),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_bad_knob_value_is_refused_naming_the_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value, read = READERS[name]
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"^{name}: "):
        read()


@pytest.mark.parametrize("tiers", [GEMM_TIERS, GEMM_TIERS_F16], ids=["f32", "f16"])
def test_gemm_tiers_text_names_the_same_tiers(tiers: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI00_GEMM", tiers_text(tiers))
    assert gemm_tiers() == tiers


def test_without_knobs_the_defaults_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in READERS:
        monkeypatch.delenv(name, raising=False)
    assert gemm_tiers(f16=True) == GEMM_TIERS_F16 and gemm_tiers(f16=False) == GEMM_TIERS
    assert small_gemm_min() == 17
    assert shader_checks()  # wgpu's runtime checks stay until a GPU times their absence
    assert k_slices(TILE_KERNEL, 512, 2048, 64, 1 << 20) > 1  # a 512-row weight of K 2,048 at 9-16 tokens: sliced
