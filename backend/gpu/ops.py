"""One builder per kernel: checks shapes, binds buffers, picks the pipeline variant.

An op is data (`Dispatch`): the model is a list of them, recorded again each step with
only the workgroup counts depending on the step's sizes. No wgpu calls happen here at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import wgpu

from backend.gpu.device import Gpu
from backend.gpu.gemm_slices import k_slices, part_floats, reduce_grid
from backend.gpu.matmul import (
    LnInput,
    MatmulKernel,
    Segment,
    StorePrev,
    clip_segments,
    count_grid,
    grid_for,
    kernel_for,
    matmul_plan,
    row_slices,
    segment_defines,
)
from backend.gpu.op_types import Binding, Dispatch, Grid, StepDims, Tensor
from backend.gpu.op_types import ceil_div as _ceil
from backend.gpu.pipelines import Defines, PipelineCache
from backend.gpu.quant import quantize
from backend.gpu.wkv_ops import WkvOps
from backend.gpu.workspace import Workspace

__all__ = ["Binding", "Dispatch", "Grid", "LnInput", "Ops", "Segment", "StepDims", "StorePrev", "Tensor"]


def _resource(binding: Binding) -> dict:
    if isinstance(binding, tuple):
        buffer, offset, size = binding
        return {"buffer": buffer, "offset": offset, "size": size}
    return {"buffer": binding}


class Ops(WkvOps):
    def __init__(self, gpu: Gpu, cache: PipelineCache, ws: Workspace, t_max: int, part_rows: int = 0) -> None:
        """`part_rows`: the most rows a weight whose GEMM may slice K has (0: no slicing): sizes `part`."""
        self.gpu, self.cache, self.ws, self.t_max = gpu, cache, ws, t_max
        self.matmul_kernels = matmul_plan(gpu)
        sliceable = part_rows and any(k.tile is not None for k in self.matmul_kernels)
        self.part_floats = part_floats(t_max, part_rows) if sliceable else 0
        # [slices, count, rows] raw sums of a K-sliced GEMM, for matmul_reduce.wgsl (one at a time)
        self.part = gpu.empty(self.part_floats * 4, "gemm_part") if sliceable else None
        # which LayerNorm mixes each mix buffer holds, as the dispatches built so far leave it (they run in
        # build order): id(buffer) -> (id(LN params), count kind, token-count ranges whose steps wrote them).
        # Only ln_mix and matmuls write mix buffers (a matmul's output clears its record).
        self._mixes: dict[int, tuple[int, str, list[tuple[int, int]]]] = {}

    def upload(self, array: np.ndarray, f16: bool, label: str, quant: str = "") -> Tensor:
        if quant:
            q = quantize(array, quant)
            return Tensor(self.gpu.upload(q.packed, label), tuple(array.shape), False, quant,
                          self.gpu.upload(q.scales, f"{label}.scales"))  # fmt: skip
        data = array.astype(np.float16 if f16 else np.float32, copy=False)
        return Tensor(self.gpu.upload(data, label), tuple(array.shape), f16)

    def _dispatch(self, name: str, shader: str, defines: Defines, bindings: dict[int, Binding], grid: Grid) -> Dispatch:
        pipeline = self.cache.get(shader, defines)
        if set(bindings) != pipeline.bindings:
            raise ValueError(f"{name}: bindings {sorted(bindings)} != shader's {sorted(pipeline.bindings)}")
        entries = [{"binding": b, "resource": _resource(buf)} for b, buf in sorted(bindings.items())]
        bind_group = self.gpu.device.create_bind_group(layout=pipeline.layout, entries=entries, label=name)
        return Dispatch(name, pipeline.pipeline, bind_group, grid)

    def embed(self, emb: Tensor) -> list[Dispatch]:
        """x[t] = emb[id]: one dispatch per bound slice of the table, each copying the ids it holds."""
        c4 = emb.shape[1] // 4
        return [
            self._dispatch(
                "embed",
                "embed.wgsl",
                {"C4": c4, "W_F16": emb.f16, "ROW0": part.row0, "ROWS": part.rows},
                {0: self.ws.dims, 1: self.ws.tokens, 2: part.weight, 3: self.ws.x},
                lambda d: (_ceil(c4, 64), d.T, 1),
            )
            for part in row_slices(emb, self.gpu.max_binding_bytes)
        ]

    def matmul(
        self,
        name: str,
        x: wgpu.GPUBuffer,
        w: Tensor,
        y: wgpu.GPUBuffer,
        *,
        segments: Sequence[Segment] | None = None,
        groups: int = 1,
        x_base: int = 0,
        x_group: int | None = None,
        x_row: int | None = None,
        y_base: int = 0,
        y_group: int | None = None,
        y_row: int | None = None,
        count: str = "T",
        act: str | None = None,
        bias: Tensor | None = None,
        mul: wgpu.GPUBuffer | None = None,
        mul_base: int = 0,
        add: bool = False,
        ln: LnInput | None = None,
        store_prev: StorePrev | None = None,
        mix_delta: tuple[wgpu.GPUBuffer, wgpu.GPUBuffer] | None = None,
        small: bool = False,
    ) -> list[Dispatch]:
        """y[g, t, :] = epilogue(x[g, t, :] @ w[g].T) for `groups` equal groups of rows, or for the given
        `segments` (matmul.py); strides in floats, defaulting to [G, t_max, dim]. With `ln`, x is the
        ln_mix input's mix buffer [G, t_max, C], computed inside the kernel where it can.
        `small`: a small weight (a LoRA stage) that keeps the GEMV-shaped kernel at every count.
        One dispatch per kernel of the plan (and weight slice); each runs only for the counts it serves."""
        rows, k = w.shape
        if k % 16:
            raise ValueError(f"{name}: weight {w.shape}: K must be a multiple of 16")
        if segments is None:
            if rows % groups:
                raise ValueError(f"{name}: weight {w.shape} does not split into {groups} groups")
            n = rows // groups
            y_row = n if y_row is None else y_row
            y_group = self.t_max * y_row if y_group is None else y_group
            segments = [Segment(n, g, y_base + g * y_group, y_row, act) for g in range(groups)]
        if sum(s.rows for s in segments) != rows:
            raise ValueError(f"{name}: segments cover {sum(s.rows for s in segments)} rows of {w.shape}")
        x_row = k if x_row is None else x_row
        x_group = self.t_max * x_row if x_group is None else x_group
        if (x_base | x_group | x_row) % 4:
            raise ValueError(f"{name}: x offsets must be multiples of 4 floats")
        if store_prev is not None and len(segments) != 1:
            raise ValueError(f"{name}: the shift store needs one segment, whose rows are the channels")
        base = {
            "K4": k // 4, "X_ROW": x_row // 4, "COUNT": count, "MUL_BASE": mul_base,
            "W_F16": w.f16, "W_INT8": w.quant == "int8", "W_NF4": w.quant == "nf4",
            "BIAS": bias is not None, "MUL": mul is not None, "ADD": add,
            "MIX_DELTA": mix_delta is not None, "MIX_C": rows // max(1, len(segments)),
            "STORE_PREV": store_prev is not None,
        }  # fmt: skip
        if store_prev is not None:
            base |= {"PS": store_prev.slot_floats, "PREV": store_prev.prev_offset, "PC": rows}
        out: list[Dispatch] = []
        for kernel in self.matmul_kernels:
            kernel = kernel_for(kernel, w, segments, ln, small)
            if kernel.tile is not None and self.part is not None:
                rows_max = max(p.rows for p in row_slices(w, self.gpu.max_binding_bytes))
                kernel = replace(kernel, slices=k_slices(kernel, rows_max, k, self.t_max, self.part_floats))
            fused = ln is not None and kernel.ln_input and (small or not kernel.ln_input_small_only)
            if ln is not None and not fused and not self._mixes_written(x, ln, count, kernel):
                # the kernel reads the mixes a separate ln_mix writes (unless one wrote them for these counts)
                out.append(self.ln_mix(f"{name}.ln_mix", ln, x, count_grid(kernel, count, self._ln_grid)))
                self._note_mixes(x, ln, count, (kernel.min_count, kernel.max_count))
            for part in row_slices(w, self.gpu.max_binding_bytes):
                clipped = clip_segments(segments, part.row0, part.rows)
                defines = base | kernel.defines(k) | {"NROWS": part.rows, "ROW0": part.row0, "WGS": kernel.threads}
                defines |= segment_defines(clipped, x_base // 4, None if fused else x_group // 4)
                bindings: dict[int, Binding] = {0: self.ws.dims, 1: self.ws.x if fused else x, 2: part.weight, 3: y}
                if fused:
                    defines |= self._ln_defines(ln)
                    bindings |= self._ln_bindings(ln)
                bindings |= self._epilogue_bindings(bias, mul, part.scales, store_prev, mix_delta)
                defines["TOKENS"] = fused or store_prev is not None
                grid = grid_for(kernel, part.rows, count)
                if kernel.slices > 1:
                    reduce = reduce_grid(kernel, part.rows, count)
                    out += self._sliced_gemm(name, kernel, defines, bindings, grid, reduce)
                else:
                    out.append(self._dispatch(name, kernel.shader, defines, bindings, grid))
        self._mixes.pop(id(y), None)  # a matmul writing a mix buffer leaves other values there
        return out

    def _note_mixes(self, mix: wgpu.GPUBuffer, ln: LnInput, count: str, counts: tuple[int, int]) -> None:
        held = self._mixes.get(id(mix))
        if held is None or held[:2] != (id(ln.params.buffer), count):
            held = (id(ln.params.buffer), count, [])
        self._mixes[id(mix)] = (held[0], held[1], [*held[2], counts])

    def _mixes_written(self, mix: wgpu.GPUBuffer, ln: LnInput, count: str, kernel: MatmulKernel) -> bool:
        """Whether the dispatches before this one leave `ln`'s mixes in `mix` at every count `kernel` serves
        (v7's lora1 reads what proj's ln_mix wrote: a second ln_mix was 0.8 ms of an H200's 1,024-token step)."""
        held = self._mixes.get(id(mix))
        if held is None or held[:2] != (id(ln.params.buffer), count):
            return False
        lo, hi = kernel.min_count, kernel.max_count
        for a, b in sorted(held[2]):
            if a <= lo <= b:
                lo = b + 1
        return lo > hi

    def _sliced_gemm(
        self, name: str, kernel: MatmulKernel, defines: Defines, bindings: dict[int, Binding], grid: Grid,
        reduce: Grid,
    ) -> list[Dispatch]:
        """A GEMM whose K is sliced over workgroups: the slices' raw sums into `part` (no epilogue), then
        matmul_reduce.wgsl adds them and applies the epilogue the plain GEMM would have."""
        assert self.part is not None
        plain = {"BIAS": False, "MUL": False, "ADD": False, "MIX_DELTA": False, "STORE_PREV": False, "TOKENS": False}
        gemm_bindings = {b: bindings[b] for b in (0, 1, 2, 3, 6) if b in bindings} | {14: self.part}
        reduce_bindings = {b: v for b, v in bindings.items() if b not in (2, 6)} | {14: self.part}
        reduce_defines = {k: v for k, v in defines.items() if k != "WGS"} | {"WGS": 64}
        gemm = self._dispatch(name, kernel.shader, defines | plain, gemm_bindings, grid)
        return [gemm, self._dispatch(f"{name}.reduce", "matmul_reduce.wgsl", reduce_defines, reduce_bindings, reduce)]

    def _ln_defines(self, ln: LnInput) -> dict[str, int | bool]:
        return {"LN": True, "LN_OUT": ln.out is not None and not ln.out_written, "LN_DELTA": ln.delta is not None,
                "S4": ln.slot_floats // 4, "PREV4": ln.prev_offset // 4}  # fmt: skip

    def _ln_bindings(self, ln: LnInput) -> dict[int, Binding]:
        bindings: dict[int, Binding] = {7: self.ws.tokens, 8: ln.params.buffer, 11: ln.state}
        if ln.out is not None and not ln.out_written:
            bindings[9] = ln.out
        if ln.delta is not None:
            bindings[10] = ln.delta
        return bindings

    def _epilogue_bindings(
        self,
        bias: Tensor | None,
        mul: wgpu.GPUBuffer | None,
        scales: Binding | None,
        store_prev: StorePrev | None,
        mix_delta: tuple[wgpu.GPUBuffer, wgpu.GPUBuffer] | None,
    ) -> dict[int, Binding]:
        bindings: dict[int, Binding] = {}
        if bias is not None:
            bindings[4] = bias.buffer
        if mul is not None:
            bindings[5] = mul
        if scales is not None:
            bindings[6] = scales
        if store_prev is not None:
            bindings |= {7: self.ws.tokens, 11: store_prev.state, 12: self.ws.rows, 13: store_prev.src}
        if mix_delta is not None:
            bindings |= {9: mix_delta[0], 10: mix_delta[1]}
        return bindings

    @staticmethod
    def _ln_grid(d: StepDims) -> tuple[int, int, int]:
        return (d.T, 1, 1)

    def ln_mix(self, name: str, ln: LnInput, mix: wgpu.GPUBuffer, grid: Grid | None = None) -> Dispatch:
        """LayerNorm + token shift: mix[g] = xx + (prev - xx) * mu[g] for each mu row of `ln.params`."""
        groups, c = ln.params.shape[0] - 2, ln.params.shape[1]
        defines = {
            "C4": c // 4, "G": groups, "T_MAX": self.t_max,
            "S4": ln.slot_floats // 4, "PREV4": ln.prev_offset // 4, "DELTA": ln.delta is not None,
        }  # fmt: skip
        ws = self.ws
        bindings: dict[int, Binding] = {0: ws.dims, 1: ws.tokens, 2: ws.x, 3: ln.params.buffer}
        bindings |= {6: ln.state, 7: ln.out, 8: mix}
        if ln.delta is not None:
            bindings[9] = ln.delta
        if grid is None:  # every step's mixes, as the kernels after it may reuse
            self._note_mixes(mix, ln, "T", (0, 1 << 30))
        return self._dispatch(name, "ln_mix.wgsl", defines, bindings, grid or self._ln_grid)

    def deep_embed(self, layer: int, s_emb: Tensor) -> Dispatch:
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.tokens, 2: s_emb.buffer, 3: ws.lora, 4: ws.deep}
        defines = {"W_F16": s_emb.f16, "W_INT8": s_emb.quant == "int8", "W_NF4": s_emb.quant == "nf4"}
        if s_emb.scales is not None:
            bindings[6] = s_emb.scales
        grid: Grid = lambda d: (_ceil(8 * d.T, 64), 1, 1)  # noqa: E731  (8 invocations per token)
        return self._dispatch(f"{layer}.deep_embed", "deep_embed.wgsl", defines, bindings, grid)

    def head_norm(self, ln_w: Tensor, ln_b: Tensor) -> Dispatch:
        c4 = ln_w.shape[0] // 4
        ws = self.ws
        bindings = {0: ws.dims, 1: ws.positions, 2: ws.x, 3: ln_w.buffer, 4: ln_b.buffer, 5: ws.head_x}
        return self._dispatch("head_norm", "head_norm.wgsl", {"C4": c4}, bindings, lambda d: (d.R, 1, 1))
