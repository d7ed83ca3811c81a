"""The engine: weights and state slots on one GPU, and `step`, which runs a batch of rows.

A step mixes decode rows (one token) and prefill chunks (many tokens) of different slots.
Pipelines, buffers and bind groups are made once at load; a step writes the small
token/row tables, records the precomputed dispatch list and reads back only the logits
that were asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import wgpu
from tqdm import tqdm

from backend.gpu.device import Gpu
from backend.gpu.models import layers, v4, v5, v6, v7
from backend.gpu.models.info import ModelInfo, StateLayout, Version
from backend.gpu.ops import Dispatch, Ops, StepDims, Tensor
from backend.gpu.pipelines import PipelineCache
from backend.gpu.quant import QUANT_TYPES, quantize
from backend.gpu.recorder import Recorder
from backend.gpu.sampler import DRAW, GpuSampler
from backend.gpu.state_pool import StatePool
from backend.gpu.step_room import check_room, scratch_widths
from backend.gpu.step_types import Logits, StepPlan, StepResult, check_plan
from backend.gpu.wkv_chunk import chunk_scratch_floats
from backend.gpu.workspace import Workspace

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
PROGRESS_MIN_BYTES = 256 << 20  # show an upload progress bar for models above this
# A step is submitted in pieces so the GPU starts while the host still records the rest (recording
# costs ~6 us a dispatch, the GPU ~15 us): a short first piece, then longer ones.
FIRST_PIECE = 24


def prepare_layer_weights(info: ModelInfo, t: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    match info.version.major:
        case 7:
            return v7.prepare_layer(t, i)
        case 6:
            return v6.prepare_layer(t, i)
        case 5:
            return v5.prepare_layer(t, i, info.version)
        case _:
            return v4.prepare_layer(t, i)


def _layer_of(name: str) -> int:
    """Layer index of a prepared weight; embedding and head count as outside every layer."""
    return int(name.split(".")[1]) if name.startswith("blocks.") else 1 << 30


def _layer_builder(info: ModelInfo) -> Callable[[layers.Layer], list[Dispatch]]:
    return {7: v7.layer_ops, 6: v6.layer_ops, 5: v5.layer_ops, 4: v4.layer_ops}[info.version.major]


class Engine:
    def __init__(
        self,
        info: ModelInfo,
        tensors: dict[str, np.ndarray],
        *,
        max_batch: int = 8,
        max_step_tokens: int = 256,
        precision: str = "fp16",
        gpu: Gpu | None = None,
        pipelines: PipelineCache | None = None,
        quant: int = 0,
        quant_type: str = "int8",
        max_logit_lines: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
        if quant and quant_type not in QUANT_TYPES:
            raise ValueError(f"quant_type: must be one of {QUANT_TYPES}, got {quant_type!r}")
        if not 0 <= quant <= info.n_layer:
            raise ValueError(f"quant: must be 0..{info.n_layer} (layers to quantize), got {quant}")
        self.quant, self.quant_type = quant, quant_type
        if info.head_size not in (0, 64) and info.version is not Version.V4:
            raise ValueError(f"head size {info.head_size} unsupported: the wkv kernels use 64")
        self.info = info
        self.precision = precision
        self.max_batch = max_batch
        self.max_step_tokens = max_step_tokens
        self.gpu = gpu or Gpu()
        check_room(info, tensors, max_step_tokens, max_batch, self.gpu.max_binding_bytes)
        allocated_before = self.gpu.allocated_by()  # this thread's: another model may load beside
        self.pipelines = pipelines or PipelineCache(self.gpu.device)
        # Logit lines are bounded by the largest buffer one binding may hold (and by the caller: each is n_vocab
        # floats twice, with its readback, so a long prefill step's room need not buy a line per token).
        lines = min(max_step_tokens, max_logit_lines or max_step_tokens)
        self.max_logit_lines = max(1, min(lines, self.gpu.max_binding_bytes // (info.n_vocab * 4)))
        self.ws = Workspace.allocate(
            self.gpu, info, max_step_tokens, self.max_logit_lines, max_batch, *scratch_widths(info, tensors),
            draw_bytes=DRAW.itemsize, wkv_chunk_floats=chunk_scratch_floats(info, max_step_tokens, max_batch),
        )  # fmt: skip
        # the largest stacked weights (r, k, v, g; the channel mix's key and receptance) may slice K
        part_rows = max(4 * info.n_embd, info.n_embd + info.n_ffn)
        self.ops = Ops(self.gpu, self.pipelines, self.ws, max_step_tokens, part_rows)
        self.states = StatePool(self.gpu, info, max_batch)
        # one mapped staging buffer for every step's logits (no allocation per step)
        self.readback = self.gpu.empty(
            self.max_logit_lines * info.n_vocab * 4, "logits_readback",
            usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
        )  # fmt: skip
        self.weights = self._upload(info, tensors)
        self.dispatches = self._build({name: a.shape for name, a in tensors.items()})
        self.sampler = GpuSampler(self.gpu, self.pipelines, self.ws.logits, info.n_vocab, max_batch, self.ws.draws)
        self.recorder = Recorder(self.dispatches)
        self.pieces = _pieces(len(self.dispatches))
        self._ahead: dict[StepKey, list[wgpu.GPUCommandBuffer]] = {}
        self.gpu_bytes = self.gpu.allocated_by() - allocated_before  # weights, states, workspace
        log.info(
            "engine: %s %d layers x %d, %s%s, %d slots, %d tokens a step, %d dispatches/step, %.1f MiB of GPU memory"
            " on %s", info.version, info.n_layer, info.n_embd, precision,
            f" ({quant_type} in {quant} layers)" if quant else "", max_batch, max_step_tokens, len(self.dispatches),
            self.gpu_bytes / 2**20, self.gpu.summary.name,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, **kwargs: object) -> Engine:
        from backend.gpu.loader import read_model

        info, tensors = read_model(Path(path))
        return cls(info, tensors, **kwargs)  # type: ignore[arg-type]

    def _upload(self, info: ModelInfo, tensors: dict[str, np.ndarray]) -> dict[str, Tensor]:
        """Prepare and upload one layer at a time, so the host holds one layer's prepared arrays
        beside the file's (memory-mapped) tensors instead of a second copy of the whole model."""
        f16 = self.precision == "fp16"
        total = sum(a.nbytes for a in tensors.values())
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="upload", disable=total < PROGRESS_MIN_BYTES)
        out = {}
        for part in range(-1, info.n_layer):
            arrays = layers.prepare_common(tensors) if part < 0 else prepare_layer_weights(info, tensors, part)
            for name, array in arrays.items():
                matrix = layers.is_matrix(name)
                quant = self.quant_type if matrix and _layer_of(name) < self.quant else ""
                out[name] = self.ops.upload(array, f16 and matrix, name, quant)
            del arrays
            bar.update(sum(a.nbytes for n, a in tensors.items() if _layer_of(n) == (part if part >= 0 else 1 << 30)))
        bar.close()
        return out

    def _build(self, shapes: dict[str, tuple[int, ...]]) -> list[Dispatch]:
        w = self.weights
        build = _layer_builder(self.info)
        layout = StateLayout.of(self.info)
        steps = self.ops.embed(w["emb"])
        first_layer_dispatch = len(steps)
        for i in range(self.info.n_layer):
            layer = layers.Layer(i, self.ops, self.info, layout, self.states.layers[i], w, shapes)
            steps += build(layer)
        self.layer_span = (first_layer_dispatch, len(steps))  # the layers' share of the list
        steps.append(self.ops.head_norm(w["ln_out.weight"], w["ln_out.bias"]))
        steps += self.ops.matmul("head", self.ws.head_x, w["head"], self.ws.logits, count="R")
        return steps

    # -- slots -------------------------------------------------------------------------------

    def reset_slot(self, slot: int, state_id: str = "") -> None:
        """Start `slot` afresh, from the zero state or a registered initial state."""
        self.states.reset(slot, state_id)

    def add_initial_state(self, state_id: str, layers_state: list[np.ndarray]) -> None:
        self.states.add_template(state_id, layers_state)

    def remove_initial_state(self, state_id: str) -> None:
        self.states.remove_template(state_id)

    def copy_slot(self, src: int, dst: int) -> None:
        self.states.copy(src, dst)

    @property
    def state_bytes(self) -> int:
        """One slot's state, all layers (what a cached state costs in either tier)."""
        return self.states.slot_bytes * len(self.states.layers)

    def read_slot(self, slot: int) -> list[np.ndarray]:
        return self.states.read(slot)

    def write_slot(self, slot: int, layers_state: list[np.ndarray]) -> None:
        self.states.write(slot, layers_state)

    def write_weights(self, tensors: dict[str, np.ndarray]) -> list[str]:
        """Overwrite weights in place (LoRA switch): `tensors` holds every canonical tensor of each
        layer it touches (and all of emb/ln0/ln_out/head if it touches those). Same shapes, same
        buffers, so the recorded dispatches stay valid; takes effect from the next step."""
        layer_ids = sorted({int(n.split(".")[1]) for n in tensors if n.startswith("blocks.")})
        prepared: dict[str, np.ndarray] = {}
        if any(not n.startswith("blocks.") or n.startswith("blocks.0.ln0") for n in tensors):
            prepared |= layers.prepare_common(tensors)
        for i in layer_ids:
            prepared |= prepare_layer_weights(self.info, tensors, i)
        for name, array in prepared.items():
            target = self.weights[name]
            if tuple(array.shape) != target.shape:
                raise ValueError(f"{name}: shape {array.shape} differs from the loaded {target.shape}")
            if target.quant:
                q = quantize(array, target.quant)
                self.gpu.write(target.buffer, q.packed)
                self.gpu.write(target.scales, q.scales)
            else:
                self.gpu.write(target.buffer, array.astype(np.float16 if target.f16 else np.float32))
        return sorted(prepared)

    # -- the step ----------------------------------------------------------------------------

    def step(self, plan: StepPlan) -> StepResult:
        """Run the plan's rows; draw its tokens on the GPU; read back only the drawn ids (and logprobs)
        unless some logit line is wanted raw (an ALL row, or a LAST row no draw uses)."""
        pending = self.submit(plan)
        if pending.key.dims.T == pending.key.dims.B:  # decode-shaped: the next step likely has these sizes
            self.record_ahead(pending.key)  # while the GPU runs this one
        return self.collect(pending)

    def submit(self, plan: StepPlan) -> PendingStep:
        """Write the step's inputs and submit its dispatches (recorded ahead when a step of the same
        sizes came before, else recorded now); returns without waiting on the GPU."""
        tables = self._tables(plan)
        offsets = tables.offsets
        draws = self.sampler.table(plan.draws, [offsets[d.row] for d in plan.draws]) if plan.draws else b""
        self.ws.write_inputs(self.gpu, tables.tokens, tables.rows, tables.positions, draws)
        dims = tables.dims
        raw_bytes = dims.R * self.info.n_vocab * 4 if _wants_raw(plan) else 0
        key = StepKey(dims, len(plan.draws), raw_bytes)
        ahead = self._ahead.pop(key, None)
        if ahead is not None:
            self.gpu.queue.submit(ahead)
        else:
            self._record(key, submit=True)
        return PendingStep(plan, key, offsets)

    def record_ahead(self, key: StepKey) -> None:
        """Record the command buffers of a step of these sizes now, while the GPU runs the current one:
        decode steps repeat their sizes, so the next one only writes its inputs and submits. One set is
        kept, for the latest sizes recorded; a step of other sizes records its own on the spot."""
        self._ahead = {key: self._record(key, submit=False, pieces=[(0, len(self.dispatches))])}

    @property
    def recorded_ahead(self) -> tuple[StepKey, ...]:
        """Step sizes whose command buffers are recorded and waiting."""
        return tuple(self._ahead)

    def discard_ahead(self) -> None:
        """Drop what was recorded ahead (after swapping the recorder, in tests)."""
        self._ahead = {}

    def collect(self, pending: PendingStep) -> StepResult:
        """Wait for a submitted step and read back what it drew (and its raw logits when asked)."""
        plan, key = pending.plan, pending.key
        drawn = self.sampler.read(plan.draws) if plan.draws else ()
        return StepResult(self._read_logits(key.dims.R, key.raw_bytes), pending.offsets, drawn)

    def dispatch_count(self, dims: StepDims, n_draws: int = 0) -> int:
        """Dispatches a step of these sizes records (the model's non-empty ones, plus the sampler's)."""
        return sum(1 for d in self.dispatches if all(d.grid(dims))) + (1 if n_draws else 0)

    def layer_dispatch_count(self, dims: StepDims) -> int:
        """The layers' share of `dispatch_count` (all layers together)."""
        start, end = self.layer_span
        return sum(1 for d in self.dispatches[start:end] if all(d.grid(dims)))

    def _record(
        self, key: StepKey, submit: bool, pieces: list[tuple[int, int]] | None = None
    ) -> list[wgpu.GPUCommandBuffer]:
        """Record the step piece by piece, the draws and the readback copies in the last piece. With
        `submit`, each piece goes to the GPU as soon as it is recorded (the GPU starts on the first while
        the host records the next); without, the pieces are returned for a later submit."""
        dims, n_draws, raw_bytes = key
        out = []
        pieces = pieces or self.pieces
        for i, (start, end) in enumerate(pieces):
            encoder = self.gpu.device.create_command_encoder()
            compute = encoder.begin_compute_pass()
            self.recorder.record(compute, dims, start, end)
            last = i == len(pieces) - 1
            if last and n_draws:
                self.sampler.record(compute, n_draws)
            compute.end()
            if last and raw_bytes:
                encoder.copy_buffer_to_buffer(self.ws.logits, 0, self.readback, 0, raw_bytes)
            if last and n_draws:
                self.sampler.copy_out(encoder, n_draws)
            if submit:
                self.gpu.queue.submit([encoder.finish()])
            else:
                out.append(encoder.finish())
        return out

    def _read_logits(self, lines: int, nbytes: int) -> np.ndarray:
        if not nbytes:
            return np.zeros((0, self.info.n_vocab), np.float32)
        self.readback.map_sync(wgpu.MapMode.READ, 0, nbytes)
        try:
            return np.frombuffer(self.readback.read_mapped(0, nbytes), np.float32).reshape(lines, -1).copy()
        finally:
            self.readback.unmap()

    def _tables(self, plan: StepPlan) -> StepTables:
        """The step's input tables as plain lists: for a decode step of a few rows, numpy's per-call
        cost would be most of the work (0.28 ms before, measured by bench.step_cost's breakdown)."""
        check_plan(plan, self.max_batch, self.max_step_tokens, self.max_logit_lines)
        tokens: list[int] = []
        rows: list[int] = []
        positions: list[int] = []
        offsets: list[int] = []
        start = 0
        for i, r in enumerate(plan.rows):
            n = len(r.tokens)
            for j, t in enumerate(r.tokens):
                tokens += (t, r.slot, j == 0, i)
            rows += (r.slot, start, n, 0)
            offsets.append(len(positions))
            if r.logits is Logits.LAST:
                positions.append(start + n - 1)
            elif r.logits is Logits.ALL:
                positions.extend(range(start, start + n))
            start += n
        ids = tokens[0::4]
        if min(ids) < 0 or max(ids) >= self.info.n_vocab:
            raise ValueError(f"step: token id outside 0..{self.info.n_vocab - 1}")
        return StepTables(tokens, rows, positions, tuple(offsets))


class StepTables(NamedTuple):
    """A step's inputs, flat: what Workspace.write_inputs uploads."""

    tokens: list[int]  # [T, 4]: id, slot, first of its row, row
    rows: list[int]  # [B, 4]: slot, first token, token count, 0
    positions: list[int]  # [R]: the token of each logit line
    offsets: tuple[int, ...]  # each row's first logit line

    @property
    def dims(self) -> StepDims:
        return StepDims(len(self.tokens) // 4, len(self.positions), len(self.rows) // 4)


class StepKey(NamedTuple):
    """What a step's command buffers depend on (its inputs live in buffers they read)."""

    dims: StepDims
    n_draws: int
    raw_bytes: int  # raw logits copied to the readback buffer


@dataclass(frozen=True)
class PendingStep:
    """A submitted step: what `collect` needs to read its results."""

    plan: StepPlan
    key: StepKey
    offsets: tuple[int, ...]


def _wants_raw(plan: StepPlan) -> bool:
    drawn_rows = {d.row for d in plan.draws}
    return any(
        r.logits is Logits.ALL or (r.logits is Logits.LAST and i not in drawn_rows) for i, r in enumerate(plan.rows)
    )


def _pieces(n: int) -> list[tuple[int, int]]:
    """[start, end) ranges of the dispatch list, each submitted as soon as it is recorded: the first
    short so the GPU starts early, each next one twice as long (fewer submits, GPU already busy)."""
    pieces, start, size = [], 0, FIRST_PIECE
    while start < n:
        pieces.append((start, min(n, start + size)))
        start, size = start + size, size * 2
    return pieces or [(0, 0)]
