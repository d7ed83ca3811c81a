"""K sliced over workgroups: how many slices a GEMM dispatch takes (k_slices), the partial sums' buffer, and the
grid of matmul_reduce.wgsl, which adds the slices' sums and applies the epilogue."""

from __future__ import annotations

from backend.gpu.knobs import env_count
from backend.gpu.matmul import MatmulKernel, count_grid
from backend.gpu.op_types import Grid, ceil_div

# K slices over workgroups (GemmTile.ks splits K inside one): a GEMM dispatch of a tier up to SLICE_MAX_TOKENS
# that would have fewer than SLICE_GROUPS workgroups at its fewest tokens (a 2k-row weight at 9-64 tokens: 64
# to 128, against an H100's 132 SMs that each hold several; the H200 profile of NOTES entry 17 had the 2k x 7k
# channel-mix value at 16 tokens reading its weights at 44 GB/s) splits K over up to SLICE_MAX times the
# workgroups, each slice keeping at least SLICE_MIN_K4 vec4s of K, while the partial sums fit the engine's
# buffer for them (Ops.part). The open-ended tier of long prefill steps is left whole: its token tiles grow
# with the step, and slices there would write and read back the sums of every token (64 MB a 2k-row weight at
# 1,024 tokens). Not yet timed on a GPU (`bash bench/gpu_run.sh slices` does); AI00_GEMM_SLICES=1 turns it off.
SLICE_MAX_TOKENS = 256
SLICE_MAX = 8
SLICE_GROUPS = 512
SLICE_MIN_K4 = 64
PART_FLOATS_MAX = 16 << 20  # the partial sums' buffer: 64 MiB at most


def part_floats(t_max: int, rows: int) -> int:
    """Floats of the partial-sum buffer for steps of t_max tokens and weights of up to `rows` rows."""
    return min(PART_FLOATS_MAX, SLICE_MAX * t_max * rows)


def k_slices(kernel: MatmulKernel, rows: int, k: int, t_max: int, part: int) -> int:
    """How many workgroups split K of this GEMM dispatch (1: none; a power of two), by the rule above.
    AI00_GEMM_SLICES=N forces N (or the most below it that K and the buffer allow) on every GEMM dispatch,
    1 turns slicing off: to test the sliced path on small models and measure it on a GPU."""
    tile = kernel.tile
    if tile is None:
        return 1
    forced = env_count("AI00_GEMM_SLICES", None, "a whole number of slices")
    groups = ceil_div(rows, tile.bm) * ceil_div(max(1, kernel.min_count), tile.bt)
    tokens, k4 = min(kernel.max_count, t_max), k // 4

    def wanted(s: int) -> bool:
        if forced is not None:
            return s <= forced
        return (kernel.max_count <= SLICE_MAX_TOKENS and s <= SLICE_MAX and groups * s // 2 < SLICE_GROUPS
                and k4 // s >= SLICE_MIN_K4)  # fmt: skip

    def fits(s: int) -> bool:  # whole tile stages per slice, and room for the partial sums
        return k4 % (s * tile.ks * tile.bk4) == 0 and s * tokens * rows <= part

    s = 1
    while wanted(2 * s) and fits(2 * s):
        s *= 2
    return s


def reduce_grid(kernel: MatmulKernel, rows: int, count: str) -> Grid:
    """matmul_reduce.wgsl's workgroups after a sliced GEMM: 64 rows x 1 token each, for its counts."""
    groups_x = ceil_div(rows, 64)
    return count_grid(kernel, count, lambda d: (groups_x, d.T if count == "T" else d.R, 1))
