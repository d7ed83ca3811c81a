"""The matmul op: kernel choice by token count, segments, LN input, epilogues, weights bound in slices.

One matmul dispatch computes y[t, o] = epilogue(in[t, :] . W[o, :]) for every row o of a weight.
A weight may stack several projections that read the same K-wide input (`Segment`s: r, k, v and a
LoRA's first stage, say); each segment reads its own group of the input and writes its own place
with its own activation, so they cost one dispatch. The input is either a buffer or (`LnInput`)
the token-shifted mix of LayerNorm(x), computed inside the kernel. The kernel is picked by the
step's token count (matmul_plan: the GEMV-shaped kernel for few tokens, then one GEMM tile per tier of
counts); kernels that cannot take an input form get an equivalent path (the GEMM gets a separate ln_mix
dispatch before it, over the same token counts).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import wgpu

from backend.gpu.device import Gpu
from backend.gpu.knobs import env_count
from backend.gpu.op_types import Binding, Grid, StepDims, Tensor, ceil_div

WKV_FUSED_MAX_TOKENS = 8  # steps up to this many tokens run the recurrence in one kernel (wkv_split)
PRE_TT = 8  # tokens per workgroup of the split recurrence's LoRA pass (wkv7_pre, wkv6_pre): rows read once for 8
GEMV_MAX_TOKENS = 8  # steps up to this many tokens use the GEMV-shaped kernels, larger ones the GEMM
ACTIVATIONS = {None: 0, "sigmoid": 1, "tanh": 2, "relu_sq": 3, "silu": 4}


@dataclass(frozen=True)
class GemmTile:
    """matmul_gemm.wgsl's shape: a bm-row x bt-token tile per workgroup, tm x tn outputs per invocation,
    K in stages of bk4 vec4s, ks groups of invocations splitting K. Big tiles read each weight fewer times
    and spend less workgroup-memory traffic per multiply-add; small ones, and K split inside the tile, give
    a step of few tokens enough invocations to fill the GPU."""

    bm: int
    bt: int
    tm: int
    tn: int
    bk4: int = 4
    ks: int = 1
    half: bool = False  # f16 stages and multiply-adds (matmul_gemm.wgsl HALF; inputs a LayerNorm bounds only)

    def __post_init__(self) -> None:
        threads, group = self.threads, self.threads // self.ks
        if self.tn not in (4, 8) or self.bm % self.tm or self.bt % self.tn or not 32 <= threads <= 256:
            raise ValueError(f"GEMM tile {self}: tn 4 or 8, tm | bm, tn | bt, 32..256 invocations")
        if (self.bm * self.bk4) % group or (self.bt * self.bk4) % group:
            raise ValueError(f"GEMM tile {self}: a stage's bm x bk4 and bt x bk4 vec4s must split over {group}")

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bt // self.tn) * self.ks

    def fits(self, k: int) -> bool:
        """Whether K (floats) is a whole number of the tile's ks x bk4-vec4 steps."""
        return (k // 4) % (self.ks * self.bk4) == 0

    def defines(self) -> dict[str, int | bool | str]:
        group = self.threads // self.ks
        return {"BM": self.bm, "BT": self.bt, "BK4": self.bk4, "TM": self.tm, "TN": self.tn, "TN8": self.tn == 8,
                "TYS": self.bm // self.tm, "TXS": self.bt // self.tn, "KS": self.ks, "SPLIT_K": self.ks > 1,
                "LW": self.bm * self.bk4 // group, "LX": self.bt * self.bk4 // group,
                "HALF": self.half, "WT": "vec4<f16>" if self.half else "vec4<f32>"}  # fmt: skip

    @property
    def text(self) -> str:
        """The tile as AI00_GEMM spells it (parse's inverse)."""
        return f"{self.bm}x{self.bt}x{self.tm}x{self.tn}x{self.bk4}x{self.ks}" + ("h" if self.half else "")

    @classmethod
    def parse(cls, text: str) -> GemmTile:
        """'BMxBTxTMxTN[xBK4[xKS]][h]', as AI00_GEMM names tiles (h: f16 multiply-adds)."""
        half = text.endswith("h")
        sizes = [int(v) for v in text.removesuffix("h").split("x")]
        if not 4 <= len(sizes) <= 6:
            raise ValueError(f"a tile has 4 to 6 sizes, got {text!r}")
        return cls(*sizes, half=half)


@dataclass(frozen=True)
class MatmulKernel:
    shader: str
    rows: int  # output rows per workgroup
    tokens: int  # tokens per workgroup
    threads: int  # invocations per workgroup
    ln_input: bool  # can compute the LN input itself
    ln_input_small_only: bool = False  # ... but only for small weights (see KERNELS)
    min_count: int = 0  # used when the step's count lies in [min_count, max_count]
    max_count: int = 1 << 30
    tile: GemmTile | None = None  # the GEMM's shape
    slices: int = 1  # workgroups splitting K (the GEMM; gemm_slices.py; matmul_reduce.wgsl adds their sums)

    def defines(self, k: int) -> dict[str, int | bool | str]:
        if self.tile is None:
            return {}
        slicing = {"SLICED": self.slices > 1, "SLICES": self.slices, "SLICE_K4": k // 4 // self.slices}
        return self.tile.defines() | slicing


def gemm_kernel(tile: GemmTile, min_count: int = 0, max_count: int = 1 << 30) -> MatmulKernel:
    return MatmulKernel("matmul_gemm.wgsl", tile.bm, tile.bt, tile.threads, False, False, min_count, max_count, tile)


# tiled: 64 lanes share a row (coalesced, portable); vec: a 32-wide subgroup per row (GPUs with
# 32-lane subgroups); gemm: tiles through workgroup memory, shaped by the step's token count (GEMM_TIERS;
# the entry here is the tile AI00_MATMUL=...,gemm names alone); rows: one invocation per row
# (CPU drivers such as lavapipe: no barriers, sequential reads). A kernel with the LN input
# recomputes it for every output row it owns: on a GPU that is L1 traffic beside the weights, on a
# CPU plain work (a 2k-row projection of v7 0.1B took 4x as long as ln_mix + plain matmul on
# lavapipe, bench.profile_step), so the CPU kernel takes it only for the LoRAs' few rows.
KERNELS = {
    "tiled": MatmulKernel("matmul.wgsl", 4, 8, 64, True),
    "vec": MatmulKernel("matmul_vec.wgsl", 8, 8, 256, False),
    "gemm": gemm_kernel(GemmTile(64, 64, 4, 4)),
    "rows": MatmulKernel("matmul_rows.wgsl", 64, 8, 64, True, ln_input_small_only=True),
}


def vec_ln_fused() -> bool:
    """AI00_VEC_LN=fused: big LN-input weights leave matmul_vec for the tiled kernel with the LN inside,
    as before the H200 profile of 2026-12-05 (bench/NOTES.md entry 14): there the tiled kernel
    recomputing the LayerNorm per 4 rows moved ~3x the weight bytes through L2 (ffn.kr 125 GB/s
    against ffn.value's 390), so by default a big weight takes one ln_mix dispatch and matmul_vec."""
    return os.environ.get("AI00_VEC_LN") == "fused"


def wkv_split() -> Callable[[StepDims], bool]:
    """Which steps run the time mix's recurrence split in passes (wkv7_pre/_scan/_post; wkv6_[pre/]scan/
    post for v5 and v6) instead of one kernel: those with more than WKV_FUSED_MAX_TOKENS tokens and some
    row of more than one (decode rows alone keep the one kernel, each row's token in parallel). The one
    kernel does each token's LoRA dots and head sums token after token: 86 % (v7) and 50 % (v6) of a
    1,024-token prefill on the H200 (bench/NOTES.md entry 14), and on the H200 of entry 17 v7's 16- and
    64-token steps took 39 and 106 ms with it against 23 and 26 split (v6: 21/37 against 22/25; 64
    decode rows the same either way). AI00_WKV=fused or =split forces one form for every step (the
    oracle tests run both); =chunked forces the chunked form (wkv_chunk.py, wkv7_chunk.py: it replaces
    the split form's scan)."""
    forced = os.environ.get("AI00_WKV", "")
    if forced not in ("", "fused", "split", "chunked"):
        raise ValueError(f"AI00_WKV: 'fused', 'split' or 'chunked', got {forced!r}")
    if forced:
        return lambda d: forced != "fused"
    return lambda d: d.T > WKV_FUSED_MAX_TOKENS and d.T > d.B


# The GEMM's tile by the step's token count: (fewest tokens, tile), the GEMV-shaped kernel below the first.
# From `python -m bench.gemm_tune` on the H100 (bench/results/h100-2026-12-05-gemm-tune-2.txt, NOTES entry 17):
# the fastest tile per count over the 1.6B and 7B models' projection shapes. Few tokens want small tiles
# with K split inside them (enough invocations on a 2k-row weight), many want big ones (less traffic).
GEMM_TIERS: tuple[tuple[int, GemmTile], ...] = (
    (GEMV_MAX_TOKENS + 1, GemmTile(32, 16, 2, 4, bk4=4, ks=4)),
    (17, GemmTile(16, 32, 2, 4, bk4=4, ks=4)),
    (33, GemmTile(64, 32, 4, 4, bk4=4, ks=2)),
    (65, GemmTile(64, 64, 4, 4, bk4=8)),
    (129, GemmTile(64, 64, 8, 4)),
    (257, GemmTile(128, 128, 8, 8, bk4=8)),
)
# Adapters with shader-f16: f16 tiles (their f16 multiply-adds only where a LayerNorm bounds the input and the
# weights are fp16 or quantized; see kernel_for), 64x64 for 17-128 tokens, 128x128 from 129 (a tier of its own to
# 256, whose K gemm_slices slices: bench/results/h100-2026-12-06-gemm-retune.txt had it fastest sliced there).
# On the H100 of 2026-12-06 (`bash bench/gpu_run.sh candidate` and `longtiles`, bench/NOTES.md entry 21) the
# 64x64 one gave v6 1.6B 4,189 / 5,253 tok/s at 64 / 128 streams against GEMM_TIERS' 3,440 / 4,586 (v7 +16 % /
# +9 %, v6 7B 1,298 / 1,470 against 872 / 1,111), the 128x128 one v7 1.6B's 1,024-token prefill 9,142 tok/s
# against 8,346 (v6 +5 %); batch 1 unchanged.
GEMM_TIERS_F16: tuple[tuple[int, GemmTile], ...] = (
    (GEMV_MAX_TOKENS + 1, GemmTile(32, 16, 2, 4, bk4=4, ks=4)),
    (17, GemmTile(64, 64, 8, 4, half=True)),
    (129, GemmTile(128, 128, 8, 8, bk4=8, half=True)),
    (257, GemmTile(128, 128, 8, 8, bk4=8, half=True)),
)


def gemm_tiers(f16: bool = False) -> tuple[tuple[int, GemmTile], ...]:
    """GEMM_TIERS (GEMM_TIERS_F16 on an adapter with f16), or AI00_GEMM's 'MIN:BMxBTxTMxTN[xBK4[xKS]][h],MIN:...'
    (to tune a GPU without editing code)."""
    text = os.environ.get("AI00_GEMM")
    if not text:
        return GEMM_TIERS_F16 if f16 else GEMM_TIERS
    try:
        tiers = tuple((int(m), GemmTile.parse(t)) for m, t in (part.split(":") for part in text.split(",")))
    except ValueError as e:
        raise ValueError(f"AI00_GEMM: 'MIN:BMxBTxTMxTN[xBK4[xKS]][h],...' with valid tiles, got {text!r}: {e}") from e
    if not tiers or [m for m, _ in tiers] != sorted({m for m, _ in tiers}) or tiers[0][0] < 2:
        raise ValueError(f"AI00_GEMM: increasing token counts from 2 up, got {text!r}")
    return tiers


def tiers_text(tiers: tuple[tuple[int, GemmTile], ...]) -> str:
    """Tiers as AI00_GEMM spells them: 'MIN:TILE,MIN:TILE,...'."""
    return ",".join(f"{m}:{tile.text}" for m, tile in tiers)


def matmul_plan(gpu: Gpu) -> list[MatmulKernel]:
    """Which kernels serve which token counts on this adapter: the GEMV-shaped kernel below the first GEMM
    tier, then one GEMM tile per tier. AI00_MATMUL overrides the kernels: one ("tiled") for every count,
    or two ("tiled,gemm"): the first below the first GEMM tier, the GEMM's tiers above, as on a GPU."""
    forced = os.environ.get("AI00_MATMUL")
    if forced:
        names = forced.split(",")
        if len(names) > 2 or any(n not in KERNELS for n in names):
            raise ValueError(f"AI00_MATMUL: one or two (comma-separated) of {sorted(KERNELS)}, got {forced!r}")
        if len(names) == 1:
            return _ln_input_override([KERNELS[names[0]]])
        small, large = KERNELS[names[0]], KERNELS[names[1]]
    else:
        if gpu.is_cpu:
            return _ln_input_override([KERNELS["rows"]])
        small = KERNELS["vec"] if gpu.subgroup_size == 32 else KERNELS["tiled"]
        large = KERNELS["gemm"]
    f16 = "shader-f16" in gpu.features
    tiers = gemm_tiers(f16)
    if not f16:  # AI00_GEMM's f16 tiles run as f32 ones where the adapter has no f16
        tiers = tuple((m, replace(t, half=False)) for m, t in tiers)
    plan = [replace(small, max_count=tiers[0][0] - 1)]
    if large.tile is None:  # a forced non-GEMM kernel for the large counts
        return _ln_input_override([*plan, replace(large, min_count=tiers[0][0])])
    ends = [m - 1 for m, _ in tiers[1:]] + [1 << 30]
    plan += [gemm_kernel(tile, m, end) for (m, tile), end in zip(tiers, ends, strict=True)]
    return _ln_input_override(plan)


def _ln_input_override(plan: list[MatmulKernel]) -> list[MatmulKernel]:
    """AI00_LN_INPUT=small: kernels compute the LayerNorm input only for small weights (to measure on a
    GPU whether recomputing it per output row costs more than the ln_mix dispatch it saves); =all:
    for every weight, the CPU kernel too (a GPU's dispatch list, run by CPU-shaped kernels)."""
    match os.environ.get("AI00_LN_INPUT"):
        case "small":
            return [replace(k, ln_input_small_only=True) for k in plan]
        case "all":
            return [replace(k, ln_input_small_only=False) for k in plan]
    return plan


@dataclass(frozen=True)
class Segment:
    """Rows of a stacked weight that form one projection."""

    rows: int
    x_group: int = 0  # which input group it reads: a [t_max, K] block of x, or (LN input) a mix group
    y_base: int = 0  # where its outputs start, in floats
    y_row: int = 0  # floats per token in y (0: its own row count)
    act: str | None = None


@dataclass(frozen=True)
class LnInput:
    """The input is xx + (prev - xx) * mu[g] with xx = LayerNorm(x[t]) and prev the token shift."""

    params: Tensor  # [2 + groups, C]: ln weight, ln bias, mu[g]
    state: wgpu.GPUBuffer  # [slots, slot_floats] f32: this layer's state (x_prev read for first tokens)
    slot_floats: int
    prev_offset: int  # x_prev's offset inside a slot's layer state
    out: wgpu.GPUBuffer | None  # [t_max, C] xx, for the kernels after (the shift store, v6's mix)
    delta: wgpu.GPUBuffer | None = None  # [t_max, C] prev - xx (v6)
    out_written: bool = False  # another kernel of the layer writes `out`: a kernel with the LN inside need not


@dataclass(frozen=True)
class StorePrev:
    """Epilogue of a matmul whose row o is channel o: each row's last xx becomes the state's x_prev."""

    state: wgpu.GPUBuffer
    slot_floats: int
    prev_offset: int
    src: wgpu.GPUBuffer  # [t_max, C] xx of this layer


@dataclass(frozen=True)
class RowSlice:
    """Rows [row0, row0 + rows) of a weight, bound on their own (weight and scales)."""

    row0: int
    rows: int
    weight: Binding
    scales: Binding | None


def row_slices(w: Tensor, max_bytes: int) -> list[RowSlice]:
    """A matrix larger than one binding may hold (128 MiB on some drivers: a World-vocab head or
    embedding of a 1.6B model) is bound in slices of whole 64-row blocks; smaller ones in one piece."""
    rows, k = w.shape
    row_bytes = {"int8": k, "nf4": k // 2}.get(w.quant, k * (2 if w.f16 else 4))
    if rows * row_bytes <= max_bytes:
        return [RowSlice(0, rows, w.buffer, w.scales)]
    step = max_bytes // row_bytes // 64 * 64
    if step == 0:
        raise ValueError(f"weight {w.shape}: one 64-row block exceeds the {max_bytes}-byte binding limit")
    scale_bytes = k // 64 * 4
    out = []
    for row0 in range(0, rows, step):
        n = min(step, rows - row0)
        weight = (w.buffer, row0 * row_bytes, n * row_bytes)
        scales = None if w.scales is None else (w.scales, row0 * scale_bytes, n * scale_bytes)
        out.append(RowSlice(row0, n, weight, scales))
    return out


def clip_segments(segments: Sequence[Segment], row0: int, rows: int) -> list[Segment]:
    """The segments' parts inside rows [row0, row0 + rows), re-based to the slice."""
    out, start = [], 0
    for s in segments:
        lo, hi = max(start, row0), min(start + s.rows, row0 + rows)
        if lo < hi:
            y_row = s.y_row or s.rows
            out.append(replace(s, rows=hi - lo, y_base=s.y_base + lo - start, y_row=y_row))
        start += s.rows
    return out


def _u32_list(values: Sequence[int]) -> str:
    return ", ".join(f"{v}u" for v in values)


def segment_defines(segments: Sequence[Segment], x_base4: int, x_group4: int | None) -> dict[str, int | str]:
    """SEG_* arrays of matmul_common.wgsl (x offsets in vec4s); x_group4 None: LN input, SEG_X = mix group."""
    ends, total = [], 0
    for s in segments:
        total += s.rows
        ends.append(total)
    xs = [s.x_group if x_group4 is None else x_base4 + s.x_group * x_group4 for s in segments]
    return {
        "NSEG": len(segments), "SEG_END": _u32_list(ends), "SEG_X": _u32_list(xs),
        "SEG_Y": _u32_list([s.y_base for s in segments]),
        "SEG_YROW": _u32_list([s.y_row or s.rows for s in segments]),
        "SEG_ACT": _u32_list([ACTIVATIONS[s.act] for s in segments]),
    }  # fmt: skip


def grid_for(kernel: MatmulKernel, rows: int, count: str) -> Grid:
    groups_x = ceil_div(rows, kernel.rows)

    def grid(d: StepDims) -> tuple[int, int, int]:
        n = d.T if count == "T" else d.R
        if not kernel.min_count <= n <= kernel.max_count:
            return (0, 0, 0)
        return (groups_x, ceil_div(n, kernel.tokens), kernel.slices)

    return grid


def count_grid(kernel: MatmulKernel, count: str, grid: Grid) -> Grid:
    """`grid`, but only for the token counts `kernel` serves (an ln_mix that runs before a GEMM)."""

    def gated(d: StepDims) -> tuple[int, int, int]:
        n = d.T if count == "T" else d.R
        return grid(d) if kernel.min_count <= n <= kernel.max_count else (0, 0, 0)

    return gated


# A small weight (a LoRA's first stage) takes the GEMM from this many tokens, the tiled kernel (its LayerNorm input
# inside, one workgroup per 4 rows) below. 129 until the H100 of 2026-12-06 (`bash bench/gpu_run.sh smallgemm`,
# bench/NOTES.md entry 21): from 17, with K sliced over workgroups, v7 1.6B's lora1 took 2.4 ms of a 64-row step's
# passes against 12.2 (aggregate 4,182 / 5,212 tok/s at 64 / 128 streams against 3,623 / 4,359), v6's maa_w1 2.7
# against 6.5 (+5 %), for one ln_mix dispatch more a layer for v6 (v7's lora1 reads the one proj's wrote).
SMALL_GEMM_MIN_TOKENS = 17


def small_gemm_min() -> int:
    """SMALL_GEMM_MIN_TOKENS, or AI00_SMALL_GEMM_MIN's whole number (to time the LoRA stages' GEMM from other
    token counts on a GPU)."""
    return env_count("AI00_SMALL_GEMM_MIN", SMALL_GEMM_MIN_TOKENS, "a whole number of tokens")


def gemm_fitted(kernel: MatmulKernel, k: int, segments: Sequence[Segment]) -> MatmulKernel | None:
    """The GEMM kernel with its tile fitted to a weight, or None where none fits: rows halved (down to 16)
    until tiles stay inside segments (stacked projections are zero-padded to 64 rows, layers.py; a LoRA's
    stages to 16 or 32), K unsplit in 4-vec4 stages where K is no whole number of the tile's steps."""
    tile = kernel.tile
    if tile is None:
        return kernel
    while straddles(replace(kernel, rows=tile.bm), segments):
        tile = _half_rows(tile)
        if tile is None:
            return None
    if not tile.fits(k):
        try:
            tile = replace(tile, bk4=4, ks=1)
        except ValueError:  # a cut tile whose unsplit form has too few rows for its invocations
            return None
    return gemm_kernel(tile, kernel.min_count, kernel.max_count) if tile != kernel.tile else kernel


def _half_rows(tile: GemmTile) -> GemmTile | None:
    """The tile with half its rows: each invocation's rows kept (half the invocations), else halved too;
    None below 16 rows or where neither is a valid tile."""
    if tile.bm <= 16:
        return None
    for tm in (tile.tm, max(1, tile.tm // 2)):
        try:
            return replace(tile, bm=tile.bm // 2, tm=tm)
        except ValueError:
            continue
    return None


def kernel_for(
    kernel: MatmulKernel, w: Tensor, segments: Sequence[Segment], ln: LnInput | None, small: bool
) -> MatmulKernel:
    """The plan's kernel, or the tiled one over the same counts where it cannot serve this matmul:
    no GEMM tile fits the segments, or a small weight (a LoRA stage) would fill too few tiles (below
    SMALL_GEMM_MIN_TOKENS); matmul_vec reads fp16/f32 rows 16 bytes at a time (quantized rows go
    through w4()) and takes no LN input: a big weight gets an ln_mix dispatch before it, a small one
    the tiled kernel with the LN input inside (see matmul.vec_ln_fused). An f16 GEMM tile runs as an f32
    one where the input is not a LayerNorm's mix (the channel mix's relu(k)^2 can overflow f16), and for
    f32 weights (a model loaded at fp32 asked for f32 arithmetic; fp16 and quantized ones are no finer)."""
    vec, gemm = kernel.shader == "matmul_vec.wgsl", kernel.shader == "matmul_gemm.wgsl"
    ln_tiled = ln is not None and (small or vec_ln_fused())
    tiled = replace(KERNELS["tiled"], min_count=kernel.min_count, max_count=kernel.max_count)
    if gemm:
        if kernel.tile is not None and kernel.tile.half and (ln is None or not (w.f16 or w.quant)):
            kernel = replace(kernel, tile=replace(kernel.tile, half=False))
        fitted = None if small and kernel.min_count < small_gemm_min() else gemm_fitted(
            kernel, w.shape[1], segments)  # fmt: skip
        kernel = fitted or tiled
    if straddles(kernel, segments) or (vec and (w.quant or ln_tiled)):
        kernel = tiled
    if straddles(kernel, segments):  # segments of odd sizes: one invocation per row serves any
        kernel = replace(KERNELS["rows"], min_count=kernel.min_count, max_count=kernel.max_count)
    return kernel


def straddles(kernel: MatmulKernel, segments: Sequence[Segment]) -> bool:
    """The GEMM's tiles and the tiled kernel's 4-row blocks must not cross a segment boundary."""
    if kernel.shader not in ("matmul_gemm.wgsl", "matmul.wgsl"):
        return False
    ends = [sum(s.rows for s in segments[: i + 1]) for i in range(len(segments) - 1)]
    return any(e % kernel.rows for e in ends)
