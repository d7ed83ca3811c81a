"""RWKV-7's recurrence in chunked form, for long steps: its chunk length and its pass.

The split form's scan (wkv7_scan.wgsl) walks a row's tokens one after another, each token a barrier and a
chain of state reads and writes. The chunked form (shaders/wkv7_chunk.wgsl has the math and its cost) walks
the row's chunks of CHUNK_LEN tokens instead, with the work inside a chunk done for all its tokens at once.
It replaces only the scan (wkv7_pre before it, wkv7_post after it, as in the split form), runs for the
steps wkv_chunk.wkv_chunked() picks, and needs no scratch (Workspace.wkv_chunks stays v5/v6's).
"""

from __future__ import annotations

from backend.gpu.knobs import env_count
from backend.gpu.op_types import Binding, Grid
from backend.gpu.pipelines import Defines
from backend.gpu.wkv_chunk import Pass, chunked_may_run, wkv_chunked

CHUNK_LEN = 16  # tokens per chunk; AI00_WKV7_CHUNK_LEN=2..16 to tune (wkv7_chunk.wgsl: 16 fills lavapipe's 32 KiB)
MAX_CHUNK_LEN = 16


def chunk_len() -> int:
    """CHUNK_LEN, or AI00_WKV7_CHUNK_LEN's (workgroup memory 5 L (N + 4) + 4 L^2 floats, wkv7_chunk.wgsl)."""
    return env_count("AI00_WKV7_CHUNK_LEN", CHUNK_LEN, f"tokens per chunk, 2 to {MAX_CHUNK_LEN}", 2, MAX_CHUNK_LEN)


def chunk_passes(layer: int, defines: Defines, scan: dict[int, Binding], heads: int) -> list[Pass]:
    """The chunked form's one dispatch per (head, row), with the scan's bindings, for wkv_chunked()'s steps;
    none (nothing compiled) if no step may run chunked."""
    if not chunked_may_run():
        return []
    chunked = wkv_chunked()
    per_row: Grid = lambda d: (heads, d.B, 1) if chunked(d) else (0, 0, 0)  # noqa: E731
    return [Pass(f"{layer}.wkv7.chunk", "wkv7_chunk.wgsl", {**defines, "CHUNK_LEN": chunk_len()}, scan, per_row)]
