"""Token choice on the GPU (shaders/sample.wgsl): one workgroup per draw, all draws of a step in one dispatch.

The host sends each draw's settings, a 64-bit key from the generation's own RNG (sampling/race.py) and, for
grammar-constrained generations, the allowed-token bitmask; it reads back only the chosen ids (and
log-probabilities when asked). Penalty counts stay on the GPU, one row per state slot.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import wgpu

from backend.gpu.device import Gpu
from backend.gpu.op_types import Binding
from backend.gpu.pipelines import PipelineCache
from backend.gpu.step_types import Draw, Drawn
from backend.sampling.params import MAX_LOGIT_BIAS

# sample.wgsl's `struct Draw`, field by field (tests/unit/test_draw_layout.py holds the two together)
DRAW = np.dtype([("line", "<u4"), ("slot", "<u4"), ("flags", "<u4"), ("top_k", "<u4"), ("temperature", "<f4"),
                 ("top_p", "<f4"), ("min_p", "<f4"), ("presence", "<f4"), ("frequency", "<f4"), ("decay", "<f4"),
                 ("key_lo", "<u4"), ("logprobs", "<u4"), ("mask_row", "<u4"), ("n_bias", "<u4"), ("key_hi", "<u4"),
                 ("pad", "<u4")])  # fmt: skip
DRAW_FIELDS = DRAW.itemsize // 4  # u32 words of one Draw
# the same layout for struct: a decode step packs a few draws, where numpy's per-call cost dominates
DRAW_STRUCT = struct.Struct("<" + "".join(DRAW.fields[name][0].char for name in DRAW.names))
TOP_MAX = 30  # most alternatives one draw reports (OpenAI allows 20)
OUT_WORDS = 4 + 2 * TOP_MAX
FRESH, MASKED, LOGPROBS = 1, 2, 4


class GpuSampler:
    def __init__(
        self, gpu: Gpu, cache: PipelineCache, logits: wgpu.GPUBuffer, vocab: int, slots: int,
        draws: Binding | None = None,
    ) -> None:  # fmt: skip
        """`draws`: where the draw table lives ([slots] Draw); the engine puts it in its step-inputs buffer
        so one write uploads a step's tokens and draws. By default the sampler has a buffer of its own."""
        self.gpu, self.vocab, self.slots = gpu, vocab, slots
        self.mask_words = -(-vocab // 32)
        row_bytes = -(-vocab // 4) * 16  # counts and work rows are padded to whole vec4s
        if slots * row_bytes > gpu.max_binding_bytes:
            raise ValueError(
                f"max_batch: {slots} slots of penalty counts ({slots * row_bytes >> 20} MiB) exceed this "
                f"adapter's largest buffer binding ({gpu.max_binding_bytes >> 20} MiB)"
            )
        self.max_draws = slots
        self.draws = draws or (gpu.empty(slots * DRAW.itemsize, "draws", usage=_STORAGE_DST), 0, slots * DRAW.itemsize)
        self.masks = gpu.empty(slots * self.mask_words * 4, "draw_masks", usage=_STORAGE_DST)
        # [slots, MAX_LOGIT_BIAS] (token id u32, bias f32): draw i's logit_bias in row i
        self.biases = gpu.empty(slots * MAX_LOGIT_BIAS * 8, "draw_biases", usage=_STORAGE_DST)
        self.counts = gpu.empty(slots * row_bytes, "penalty_counts", usage=_STORAGE_DST | wgpu.BufferUsage.COPY_SRC)
        self.work = gpu.empty(slots * row_bytes, "draw_work")
        self.out = gpu.empty(slots * OUT_WORDS * 4, "drawn", usage=_STORAGE_DST | wgpu.BufferUsage.COPY_SRC)
        self.readback = gpu.empty(
            slots * OUT_WORDS * 4, "drawn_readback", usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )
        pipeline = cache.get("sample.wgsl", {"V": vocab, "OUT": OUT_WORDS, "MAX_BIAS": MAX_LOGIT_BIAS})
        buffer, offset, size = self.draws
        resources = [{"buffer": b} for b in (logits, self.masks, self.counts, self.work, self.out, self.biases)]
        resources.insert(1, {"buffer": buffer, "offset": offset, "size": size})
        entries = [{"binding": i, "resource": r} for i, r in enumerate(resources)]
        self.pipeline = pipeline.pipeline
        self.bind_group = gpu.device.create_bind_group(layout=pipeline.layout, entries=entries, label="sample")

    def write(self, draws: Sequence[Draw], lines: Sequence[int]) -> None:
        """Upload the draw table (and masks) for this step; `lines[i]` is draw i's logit line."""
        buffer, offset, _ = self.draws
        self.gpu.queue.write_buffer(buffer, offset, self.table(draws, lines))

    def table(self, draws: Sequence[Draw], lines: Sequence[int]) -> bytes:
        """The draw table's bytes for `self.draws` (the caller uploads them); writes the masks."""
        if len(draws) > self.max_draws:
            raise ValueError(f"step: {len(draws)} draws > {self.max_draws}")
        packed = bytearray(len(draws) * DRAW.itemsize)
        for i, (d, line) in enumerate(zip(draws, lines, strict=True)):
            _check(d, self.slots)
            flags = FRESH * d.fresh | MASKED * (d.mask is not None) | LOGPROBS * (d.logprobs is not None)
            DRAW_STRUCT.pack_into(packed, i * DRAW.itemsize, line, d.slot, flags, d.top_k, d.temperature, d.top_p,
                                  d.min_p, d.presence, d.frequency, d.decay, d.key & _WORD,
                                  d.logprobs or 0, i, len(d.bias), d.key >> 32, 0)  # fmt: skip
            if d.mask is not None:
                if d.mask.shape != (self.mask_words,):
                    raise ValueError(f"draw {i}: mask shape {d.mask.shape}, expected ({self.mask_words},)")
                self.gpu.write(self.masks, d.mask.view(np.uint32), i * self.mask_words * 4)
            if d.bias:
                self.gpu.write(self.biases, _bias_words(d.bias), i * MAX_LOGIT_BIAS * 8)
        return bytes(packed)

    def record(self, compute: wgpu.GPUComputePassEncoder, n_draws: int) -> None:
        compute.set_pipeline(self.pipeline)
        compute.set_bind_group(0, self.bind_group)
        compute.dispatch_workgroups(n_draws, 1, 1)

    def copy_out(self, encoder: wgpu.GPUCommandEncoder, n_draws: int) -> None:
        encoder.copy_buffer_to_buffer(self.out, 0, self.readback, 0, n_draws * OUT_WORDS * 4)

    def run(self, draws: Sequence[Draw], lines: Sequence[int]) -> tuple[Drawn, ...]:
        """Draw from whatever the logits buffer holds now, outside a step (tests, diagnostics)."""
        self.write(draws, lines)
        encoder = self.gpu.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        self.record(compute, len(draws))
        compute.end()
        self.copy_out(encoder, len(draws))
        self.gpu.queue.submit([encoder.finish()])
        return self.read(draws)

    def read(self, draws: Sequence[Draw]) -> tuple[Drawn, ...]:
        nbytes = len(draws) * OUT_WORDS * 4
        self.readback.map_sync(wgpu.MapMode.READ, 0, nbytes)
        try:
            words = np.frombuffer(self.readback.read_mapped(0, nbytes), np.uint32).reshape(len(draws), OUT_WORDS)
            words = words.copy()
        finally:
            self.readback.unmap()
        return tuple(_drawn(w, d) for w, d in zip(words, draws, strict=True))


_STORAGE_DST = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST
_WORD = 0xFFFFFFFF


def _check(d: Draw, slots: int) -> None:
    if not 0 <= d.slot < slots:
        raise ValueError(f"draw: slot {d.slot} outside 0..{slots - 1}")
    if d.temperature < 0 or not 0 <= d.top_p <= 1 or not 0 <= d.min_p <= 1 or d.top_k < 0:
        raise ValueError(f"draw: settings out of range: {d}")
    if not 0 <= d.key < 1 << 64:
        raise ValueError(f"draw: key {d.key} is not 64 bits")
    if d.logprobs is not None and not 0 <= d.logprobs <= TOP_MAX:
        raise ValueError(f"draw: logprobs must be 0..{TOP_MAX}, got {d.logprobs}")
    if len(d.bias) > MAX_LOGIT_BIAS:
        raise ValueError(f"draw: {len(d.bias)} logit_bias entries > {MAX_LOGIT_BIAS}")


def _bias_words(bias: tuple[tuple[int, float], ...]) -> np.ndarray:
    """[n, 2] u32: each entry's token id and its bias's f32 bits, as sample.wgsl's `biases` reads them."""
    ids = np.array([t for t, _ in bias], np.uint32)
    bits = np.array([b for _, b in bias], np.float32).view(np.uint32)
    return np.stack([ids, bits], axis=1)


def _drawn(words: np.ndarray, d: Draw) -> Drawn:
    token = int(words[0])
    if d.logprobs is None:
        return Drawn(token)
    lp = float(words[1:2].view(np.float32)[0])
    n = int(words[2])
    pairs = words[4 : 4 + 2 * n].reshape(n, 2)
    ids, lps = pairs[:, 0].astype(np.int64), pairs[:, 1].view(np.float32).astype(np.float64)
    order = np.lexsort((ids, -lps))[: d.logprobs]  # most likely first, ties by id
    return Drawn(token, lp, tuple((int(ids[i]), float(lps[i])) for i in order))
