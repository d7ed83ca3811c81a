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
from backend.gpu.matmul import (
    PRE_TT,
    LnInput,
    MatmulKernel,
    Segment,
    StorePrev,
    clip_segments,
    count_grid,
    grid_for,
    k_slices,
    kernel_for,
    matmul_plan,
    part_floats,
    reduce_grid,
    row_slices,
    segment_defines,
    wkv_split,
)
from backend.gpu.models.info import StateLayout
from backend.gpu.op_types import Binding, Dispatch, Grid, StepDims, Tensor
from backend.gpu.op_types import ceil_div as _ceil
from backend.gpu.pipelines import Defines, PipelineCache
from backend.gpu.quant import quantize
from backend.gpu.wkv7_chunk import chunk_passes as wkv7_chunk_passes
from backend.gpu.wkv_chunk import chunk_passes, wkv_chunked
from backend.gpu.workspace import Workspace

__all__ = ["Binding", "Dispatch", "Grid", "LnInput", "Ops", "Segment", "StepDims", "StorePrev", "Tensor"]


def _resource(binding: Binding) -> dict:
    if isinstance(binding, tuple):
        buffer, offset, size = binding
        return {"buffer": buffer, "offset": offset, "size": size}
    return {"buffer": binding}


class Ops:
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
                    out += self._sliced_gemm(name, kernel, defines, bindings, part.rows, count)
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
        self, name: str, kernel: MatmulKernel, defines: Defines, bindings: dict[int, Binding], rows: int, count: str
    ) -> list[Dispatch]:
        """A GEMM whose K is sliced over workgroups: the slices' raw sums into `part` (no epilogue), then
        matmul_reduce.wgsl adds them and applies the epilogue the plain GEMM would have."""
        assert self.part is not None
        plain = {"BIAS": False, "MUL": False, "ADD": False, "MIX_DELTA": False, "STORE_PREV": False, "TOKENS": False}
        gemm_bindings = {b: bindings[b] for b in (0, 1, 2, 3, 6) if b in bindings} | {14: self.part}
        reduce_bindings = {b: v for b, v in bindings.items() if b not in (2, 6)} | {14: self.part}
        reduce_defines = {k: v for k, v in defines.items() if k != "WGS"} | {"WGS": 64}
        gemm = self._dispatch(name, kernel.shader, defines | plain, gemm_bindings, grid_for(kernel, rows, count))
        reduce = reduce_grid(kernel, rows, count)
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

    def wkv7(
        self, layer: int, params: Tensor, ln_x: Tensor, lora2: Tensor, sizes: Sequence[int],
        state: wgpu.GPUBuffer, layout: StateLayout,
    ) -> list[Dispatch]:
        """RWKV-7's recurrence per (head, row), with the w/a/v/g LoRAs' second stages for its channels;
        `sizes`: this layer's hidden widths in ws.rkv's LoRA area (w, a, [v,] g). Short steps: one
        kernel does it all token by token. Long ones (wkv_split): the per-token work runs for all tokens
        at once before and after a scan that does only the state update (three dispatches). Steps of
        wkv_chunked run the chunked form's pass (wkv7_chunk.py) in the scan's place."""
        c = params.shape[1]
        ws = self.ws
        mix_v = layer > 0
        dw, da, dv, dg = (sizes[0], sizes[1], sizes[2] if mix_v else 0, sizes[-1])
        defines = {
            "N": 64, "SG": self._head_sg(64), "C": c, "T_MAX": self.t_max, "S": layout.size,
            "REC": layout.recurrent, "MIX_V": mix_v, "LORA_BASE": ws.lora_base, "LW": ws.hidden_width,
            "L2": sum(sizes), "DW": dw, "DA": da, "DV": dv, "DG": dg, "OA": dw, "OV": dw + da, "OG": dw + da + dv,
            "PRE_TT": PRE_TT,
        }  # fmt: skip
        split, chunked = wkv_split(), wkv_chunked()
        heads = c // 64
        bindings: dict[int, Binding] = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: lora2.buffer, 6: ws.v_first}
        bindings |= {7: params.buffer, 8: ln_x.buffer, 9: state, 10: ws.att_out}
        fused = self._dispatch(f"{layer}.wkv7", "wkv7.wgsl", defines, bindings,
                               lambda d: (0, 0, 0) if split(d) else (heads, d.B, 1))  # fmt: skip
        if self.ws.ffn_k.size < 3 * self.t_max * c * 4:
            raise ValueError(f"{layer}.wkv7: ffn_k cannot hold kk, kk * a and g for {self.t_max} tokens")
        ext = ws.ffn_k  # free during the time mix: the channel mix writes it next
        per_token: Grid = lambda d: (heads, d.T, 1) if split(d) else (0, 0, 0)  # noqa: E731
        per_block: Grid = lambda d: (heads, _ceil(d.T, PRE_TT), 1) if split(d) else (0, 0, 0)  # noqa: E731
        per_row: Grid = lambda d: (heads, d.B, 1) if split(d) and not chunked(d) else (0, 0, 0)  # noqa: E731
        pre = {0: ws.dims, 2: ws.rkv, 3: lora2.buffer, 6: ws.v_first, 7: params.buffer, 9: ext}
        scan = {1: ws.rows, 2: ws.rkv, 9: ext, 10: state, 11: ws.att_out}
        post = {2: ws.rkv, 7: params.buffer, 8: ln_x.buffer, 9: ext, 11: ws.att_out}
        return [
            fused,
            self._dispatch(f"{layer}.wkv7.pre", "wkv7_pre.wgsl", defines, pre, per_block),
            self._dispatch(f"{layer}.wkv7.scan", "wkv7_scan.wgsl", defines, scan, per_row),
            *[self._dispatch(*p) for p in wkv7_chunk_passes(layer, defines, scan, heads)],
            self._dispatch(f"{layer}.wkv7.post", "wkv7_post.wgsl", defines, post, per_token),
        ]

    def _head_sg(self, n: int) -> int:
        """The subgroup width head_reduce.wgsl may use for an n-lane head, or 0 (its tree instead)."""
        sg = self.gpu.subgroup_size
        return sg if 0 < sg <= n and n % sg == 0 else 0

    def wkv6(
        self,
        layer: int,
        decay: Tensor,
        decay_lora: Tensor | None,
        u: Tensor,
        ln_x: Tensor,
        state: wgpu.GPUBuffer,
        slot_floats: int,
        rec: int,
        head_size: int,
        gate: bool,
    ) -> list[Dispatch]:
        """RWKV-5/6's recurrence per (head, row); `decay_lora` [C, D]: v6's per-token decay from the
        LoRA hidden layer in ws.rkv (else `decay` is constant per channel); the gate is r, k, v's fourth.
        Short steps: one kernel does it all token by token. Long ones (wkv_split): v6's decay for every
        token at once (wkv6_pre), the state update alone (wkv6_scan), then bonus, group norm and gate
        for every token at once (wkv6_post): three dispatches for v6, two for v5. Steps of wkv_chunked
        run the chunked form's three passes (wkv_chunk.py) in the scan's place."""
        c = u.shape[0]
        ws = self.ws
        defines = {
            "N": head_size, "SG": self._head_sg(head_size), "C": c, "T_MAX": self.t_max, "S": slot_floats,
            "REC": rec, "GATE": gate,
            "DECAY_LORA": decay_lora is not None, "LORA_BASE": ws.lora_base, "LW": ws.hidden_width,
            "D": decay_lora.shape[1] if decay_lora is not None else 0, "PRE_TT": PRE_TT,
        }  # fmt: skip
        split, chunked = wkv_split(), wkv_chunked()
        heads = c // head_size
        bindings: dict[int, Binding] = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: decay.buffer, 4: u.buffer}
        bindings |= {5: ln_x.buffer, 6: state, 7: ws.att_out}
        scan: dict[int, Binding] = {1: ws.rows, 2: ws.rkv, 6: state, 7: ws.att_out}
        post: dict[int, Binding] = {2: ws.rkv, 4: u.buffer, 5: ln_x.buffer, 7: ws.att_out}
        pre: list[Dispatch] = []
        per_token: Grid = lambda d: (heads, d.T, 1) if split(d) else (0, 0, 0)  # noqa: E731
        per_row: Grid = lambda d: (heads, d.B, 1) if split(d) and not chunked(d) else (0, 0, 0)  # noqa: E731
        if decay_lora is None:
            scan[3] = decay.buffer
        else:
            bindings[8] = decay_lora.buffer
            if ws.ffn_k.size < self.t_max * c * 4:
                raise ValueError(f"{layer}.wkv6: ffn_k cannot hold the decay of {self.t_max} tokens")
            scan[9] = ws.ffn_k  # free during the time mix: the channel mix writes it next
            pre_bindings = {0: ws.dims, 2: ws.rkv, 3: decay.buffer, 8: decay_lora.buffer, 9: ws.ffn_k}
            per_block: Grid = lambda d: (heads, _ceil(d.T, PRE_TT), 1) if split(d) else (0, 0, 0)  # noqa: E731
            pre = [self._dispatch(f"{layer}.wkv6.pre", "wkv6_pre.wgsl", defines, pre_bindings, per_block)]
        fused = self._dispatch(f"{layer}.wkv6", "wkv6.wgsl", defines, bindings,
                               lambda d: (0, 0, 0) if split(d) else (heads, d.B, 1))  # fmt: skip
        passes = chunk_passes(layer, defines, ws, decay, decay_lora, state, heads, self.gpu.max_binding_bytes)
        chunk = [self._dispatch(*p) for p in passes]
        return [
            fused,
            *pre,
            self._dispatch(f"{layer}.wkv6.scan", "wkv6_scan.wgsl", defines, scan, per_row),
            *chunk,
            self._dispatch(f"{layer}.wkv6.post", "wkv6_post.wgsl", defines, post, per_token),
        ]

    def wkv4(
        self, layer: int, decay: Tensor, u: Tensor, state: wgpu.GPUBuffer, slot_floats: int, rec: int
    ) -> Dispatch:
        c = u.shape[0]
        ws = self.ws
        defines = {"C": c, "T_MAX": self.t_max, "S": slot_floats, "REC": rec}
        bindings = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: decay.buffer, 4: u.buffer, 6: state, 7: ws.att_out}
        return self._dispatch(f"{layer}.wkv4", "wkv4.wgsl", defines, bindings, lambda d: (_ceil(c, 64), d.B, 1))

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
