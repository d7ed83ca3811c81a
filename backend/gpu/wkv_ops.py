"""The time mix's recurrence builders (RWKV-4's wkv, RWKV-5/6's and RWKV-7's in their fused, split and chunked
forms): a base of Ops, which gives them `_dispatch`, the workspace and the step size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import wgpu

from backend.gpu.device import Gpu
from backend.gpu.knobs import env_count
from backend.gpu.matmul import PRE_TT, wkv_split
from backend.gpu.models.info import StateLayout
from backend.gpu.op_types import Binding, Dispatch, Grid, Tensor
from backend.gpu.op_types import ceil_div as _ceil
from backend.gpu.pipelines import Defines
from backend.gpu.wkv7_chunk import chunk_passes as wkv7_chunk_passes
from backend.gpu.wkv_chunk import chunk_passes, wkv_chunked
from backend.gpu.workspace import Workspace


def lora_vec4(sizes: Sequence[int]) -> bool:
    """Whether LoRA second stages inside the recurrence (RWKV-7's w/a/v/g, RWKV-6's decay) are read as vec4
    (wkv7_inputs.wgsl's lora_dot): every width a multiple of 4, as every trainer's are (multiples of 32);
    AI00_LORA_VEC4=0 reads them a float at a time (to measure)."""
    return os.environ.get("AI00_LORA_VEC4", "") != "0" and all(n % 4 == 0 for n in sizes)


# Invocations per channel of the recurrences: 1 (wkv7.wgsl, wkv6.wgsl and their scans) or 4 (AI00_WKV7_LANES=4,
# AI00_WKV6_LANES=4: the one-kernel forms wkv7_quad.wgsl and wkv6_quad.wgsl, each lane a quarter of a channel's
# LoRA and state work; the split forms' scans wkv7_scan_quad.wgsl and wkv6_scan_quad.wgsl, a head's state over
# four workgroups). One until a GPU run times them (bench/NOTES.md entry 22, `bash bench/gpu_run.sh sweep`).
WKV7_LANES = 1
WKV6_LANES = 1  # RWKV-5/6 with heads of 64 (others keep one)


def wkv7_lanes() -> int:
    """WKV7_LANES, or AI00_WKV7_LANES (1 or 4)."""
    return _lanes("AI00_WKV7_LANES", WKV7_LANES)


def wkv6_lanes() -> int:
    """WKV6_LANES, or AI00_WKV6_LANES (1 or 4)."""
    return _lanes("AI00_WKV6_LANES", WKV6_LANES)


def _lanes(name: str, default: int) -> int:
    lanes = env_count(name, default, "1 or 4 invocations a channel", 1, 4)
    if lanes not in (1, 4):
        raise ValueError(f"{name}: 1 or 4 invocations a channel, got {lanes}")
    return lanes


class WkvOps:
    """Ops's builders for the recurrences (one class per job: Ops keeps the matmuls, norms and the rest)."""

    gpu: Gpu
    ws: Workspace
    t_max: int

    def _dispatch(self, name: str, shader: str, defines: Defines, bindings: dict[int, Binding], grid: Grid) -> Dispatch:
        raise NotImplementedError  # Ops's

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
            "PRE_TT": PRE_TT, "LORA4": lora_vec4(sizes), "QUAD": False,
        }  # fmt: skip
        split, chunked = wkv_split(), wkv_chunked()
        heads = c // 64
        bindings: dict[int, Binding] = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: lora2.buffer, 6: ws.v_first}
        bindings |= {7: params.buffer, 8: ln_x.buffer, 9: state, 10: ws.att_out}
        quad = wkv7_lanes() == 4
        quad_defines = self._quad_defines() if quad else {}
        fused = self._dispatch(f"{layer}.wkv7", "wkv7_quad.wgsl" if quad else "wkv7.wgsl", defines | quad_defines,
                               bindings, lambda d: (0, 0, 0) if split(d) else (heads, d.B, 1))  # fmt: skip
        if self.ws.ffn_k.size < 3 * self.t_max * c * 4:
            raise ValueError(f"{layer}.wkv7: ffn_k cannot hold kk, kk * a and g for {self.t_max} tokens")
        ext = ws.ffn_k  # free during the time mix: the channel mix writes it next
        per_token: Grid = lambda d: (heads, d.T, 1) if split(d) else (0, 0, 0)  # noqa: E731
        per_block: Grid = lambda d: (heads, _ceil(d.T, PRE_TT), 1) if split(d) else (0, 0, 0)  # noqa: E731
        scan_groups = 4 * heads if quad else heads  # the quad scan: a workgroup per quarter of a head's rows
        per_row: Grid = lambda d: (scan_groups, d.B, 1) if split(d) and not chunked(d) else (0, 0, 0)  # noqa: E731
        pre = {0: ws.dims, 2: ws.rkv, 3: lora2.buffer, 6: ws.v_first, 7: params.buffer, 9: ext}
        scan = {1: ws.rows, 2: ws.rkv, 9: ext, 10: state, 11: ws.att_out}
        post = {2: ws.rkv, 7: params.buffer, 8: ln_x.buffer, 9: ext, 11: ws.att_out}
        return [
            fused,
            self._dispatch(f"{layer}.wkv7.pre", "wkv7_pre.wgsl", defines, pre, per_block),
            self._dispatch(f"{layer}.wkv7.scan", "wkv7_scan_quad.wgsl" if quad else "wkv7_scan.wgsl",
                           defines | quad_defines, scan, per_row),
            *[self._dispatch(*p) for p in wkv7_chunk_passes(layer, defines, scan, heads)],
            self._dispatch(f"{layer}.wkv7.post", "wkv7_post.wgsl", defines, post, per_token),
        ]

    def _quad_defines(self) -> dict[str, int | bool]:
        """The four-lane kernels' defines: QUAD (head_reduce.wgsl counts each channel once) and quad_sum.wgsl's
        subgroup width, the adapter's where a subgroup holds whole groups of four and divides a 64-lane
        workgroup, else 0 (workgroup memory)."""
        sg = self.gpu.subgroup_size
        return {"QUAD": True, "SGQ": sg if 4 <= sg <= 64 and 64 % sg == 0 else 0}

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
            "LORA4": decay_lora is not None and lora_vec4([decay_lora.shape[1]]), "QUAD": False,
        }  # fmt: skip
        split, chunked = wkv_split(), wkv_chunked()
        heads = c // head_size
        bindings: dict[int, Binding] = {0: ws.dims, 1: ws.rows, 2: ws.rkv, 3: decay.buffer, 4: u.buffer}
        bindings |= {5: ln_x.buffer, 6: state, 7: ws.att_out}
        scan: dict[int, Binding] = {1: ws.rows, 2: ws.rkv, 6: state, 7: ws.att_out}
        post: dict[int, Binding] = {2: ws.rkv, 4: u.buffer, 5: ln_x.buffer, 7: ws.att_out}
        pre: list[Dispatch] = []
        per_token: Grid = lambda d: (heads, d.T, 1) if split(d) else (0, 0, 0)  # noqa: E731
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
        quad = wkv6_lanes() == 4 and head_size == 64
        quad_defines = self._quad_defines() if quad else {}
        scan_groups = 4 * heads if quad else heads  # the quad scan: a workgroup per quarter of a head's columns
        per_row: Grid = lambda d: (scan_groups, d.B, 1) if split(d) and not chunked(d) else (0, 0, 0)  # noqa: E731
        fused = self._dispatch(f"{layer}.wkv6", "wkv6_quad.wgsl" if quad else "wkv6.wgsl", defines | quad_defines,
                               bindings, lambda d: (0, 0, 0) if split(d) else (heads, d.B, 1))  # fmt: skip
        passes = chunk_passes(layer, defines, ws, decay, decay_lora, state, heads, self.gpu.max_binding_bytes)
        chunk = [self._dispatch(*p) for p in passes]
        return [
            fused,
            *pre,
            self._dispatch(f"{layer}.wkv6.scan", "wkv6_scan_quad.wgsl" if quad else "wkv6_scan.wgsl",
                           defines | quad_defines, scan, per_row),
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
