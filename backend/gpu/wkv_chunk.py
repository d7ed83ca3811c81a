"""RWKV-5/6's recurrence in chunked form, for long steps: which steps run it, its scratch, its passes.

The split form's scan (wkv6_scan.wgsl) walks a row's tokens one after another with only heads x rows
workgroups busy (~11 % of a 1,024-token v6 1.6B step on the H200). The chunked form cuts each row into
chunks of CHUNK_LEN tokens and does the work inside chunks in parallel (shaders/wkv6_chunk.wgsl has the
math): the chunks' own state contributions (wkv6_chunk_state), a scan over chunks, not tokens
(wkv6_chunk_scan), then every token's output (wkv6_chunk_out). It replaces only the scan: v6's decay pass
(wkv6_pre) runs before it and the bonus / group norm / gate pass (wkv6_post) after it, as in the split form.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import wgpu

from backend.gpu.knobs import env_count
from backend.gpu.matmul import wkv_split
from backend.gpu.models.info import ModelInfo
from backend.gpu.op_types import Binding, Grid, StepDims, Tensor, ceil_div
from backend.gpu.pipelines import Defines

if TYPE_CHECKING:
    from backend.gpu.workspace import Workspace

CHUNK_LEN = 16  # tokens per chunk (wkv6_chunk.wgsl says why 16); AI00_WKV_CHUNK_LEN=2..32 to tune
SCAN_ELEMENTS = 256  # state elements (i, j) per workgroup of wkv6_chunk_scan (its EB)
# Steps the default sends to the split form that have at least this many tokens run chunked instead;
# None: none do (only AI00_WKV=chunked runs it). AI00_WKV_CHUNKED_MIN=N sets it without editing code.
CHUNKED_MIN_TOKENS: int | None = None


def chunked_min_tokens() -> int | None:
    """CHUNKED_MIN_TOKENS, or AI00_WKV_CHUNKED_MIN's whole number."""
    return env_count("AI00_WKV_CHUNKED_MIN", CHUNKED_MIN_TOKENS, "a whole number of tokens")


def chunk_len() -> int:
    """CHUNK_LEN, or AI00_WKV_CHUNK_LEN's (wkv6_chunk_out's workgroup memory holds 3 L (N + 4) + L^2 floats)."""
    return env_count("AI00_WKV_CHUNK_LEN", CHUNK_LEN, "tokens per chunk, 2 to 32", 2, 32)


def wkv_chunked() -> Callable[[StepDims], bool]:
    """Which steps run the recurrence chunked (v5/v6 here, v7 in wkv7_chunk.py): every step under
    AI00_WKV=chunked, none under =fused or =split; by default the split form's steps of at least
    chunked_min_tokens() tokens. A chunked step is always a split step: it shares the pre and post passes."""
    forced = os.environ.get("AI00_WKV", "")
    split = wkv_split()  # validates AI00_WKV
    least = chunked_min_tokens()
    if forced:
        return lambda d: forced == "chunked"
    if least is None:
        return lambda d: False
    return lambda d: split(d) and least <= d.T


def chunked_may_run() -> bool:
    """Whether any step may run chunked (else its scratch and pipelines are not made)."""
    forced = os.environ.get("AI00_WKV", "")
    return forced == "chunked" or (not forced and chunked_min_tokens() is not None)


def chunk_count(tokens: int, rows: int, length: int) -> int:
    """The most chunks of `length` a step of `tokens` tokens in `rows` rows cuts: each row's last chunk may
    be short, and each chunk has at least one token."""
    return min(tokens, ceil_div(tokens, length) + rows)


def chunk_scratch_floats(info: ModelInfo, t_max: int, b_max: int) -> int:
    """Floats of Workspace.wkv_chunks: per chunk and head an N x N state and N decays (C (N + 1) a chunk);
    4 for other versions and where no step may run chunked."""
    if info.version.major not in (5, 6) or not chunked_may_run():
        return 4
    return chunk_count(t_max, b_max, chunk_len()) * info.n_embd * (info.head_size + 1)


class Pass(NamedTuple):
    """One dispatch of the chunked form, for Ops._dispatch."""

    name: str
    shader: str
    defines: Defines
    bindings: dict[int, Binding]
    grid: Grid


def chunk_passes(
    layer: int, defines: Defines, ws: Workspace, decay: Tensor, decay_lora: Tensor | None,
    state: wgpu.GPUBuffer, heads: int, max_binding_bytes: int,
) -> list[Pass]:  # fmt: skip
    """The chunked form's three dispatches, each running only for wkv_chunked()'s steps (none if no step
    may run chunked). `defines` are Ops.wkv6's; v6 (decay_lora) reads wkv6_pre's w from ws.ffn_k."""
    if not chunked_may_run():
        return []
    chunked = wkv_chunked()
    scratch = ws.wkv_chunks.size
    if scratch > max_binding_bytes:
        raise ValueError(f"{layer}.wkv6: the chunked form's scratch ({scratch >> 20} MiB) exceeds a binding's "
                         f"{max_binding_bytes >> 20} MiB: lower max_step_tokens or max_batch, or use "
                         "AI00_WKV=split")  # fmt: skip
    n, length = int(defines["N"]), chunk_len()
    if scratch < chunk_count(ws.t_max, ws.b_max, length) * heads * n * (n + 1) * 4:
        raise ValueError(f"{layer}.wkv6: Workspace.wkv_chunks is too small for {ws.t_max} tokens in {ws.b_max} rows")
    defines = {**defines, "CHUNK_LEN": length}
    decay_in: dict[int, Binding] = {9: ws.ffn_k} if decay_lora is not None else {3: decay.buffer}
    per_chunk: Grid = lambda d: (heads, chunk_count(d.T, d.B, length), 1) if chunked(d) else (0, 0, 0)  # noqa: E731
    scan_groups = heads * n * n // SCAN_ELEMENTS
    per_row: Grid = lambda d: (scan_groups, d.B, 1) if chunked(d) else (0, 0, 0)  # noqa: E731
    common: dict[int, Binding] = {0: ws.dims, 1: ws.rows, 10: ws.wkv_chunks}
    return [
        Pass(f"{layer}.wkv6.chunk_state", "wkv6_chunk_state.wgsl", defines, common | {2: ws.rkv} | decay_in,
             per_chunk),
        Pass(f"{layer}.wkv6.chunk_scan", "wkv6_chunk_scan.wgsl", defines, common | {6: state}, per_row),
        Pass(f"{layer}.wkv6.chunk_out", "wkv6_chunk_out.wgsl", defines,
             common | {2: ws.rkv, 7: ws.att_out} | decay_in, per_chunk),
    ]  # fmt: skip
