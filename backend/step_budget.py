"""How many prompt tokens the next step may carry: the scheduler's fairness policy between running streams and
long prompts, and the model of step time it paces by.

Every decoding stream gets one token per step, so the gap between two of its tokens is one step's duration. A step
beside running streams therefore carries only as much prefill as keeps the step predicted under `decode_gap_ms`:
never less than a floor (a quarter of `token_chunk_size`, so a prompt always progresses), and up to an idle step's
room (below) less the decode rows, and up to twice the largest step measured (a fit from small steps may see no
slope). Few streams leave a prompt long steps and many leave it short ones, as the measured step times say: where a
GPU runs a 2,048-token step within the gap, a 16k-token prompt beside a stream takes 8 steps, not the 128 of
`token_chunk_size` (vLLM's chunked prefill shares its steps in that spirit, with a fixed token budget where this one
follows the measured time). With no stream decoding, nothing waits on the step but a request that may arrive
meanwhile: prompts get up to `max_prefill_chunk` tokens at once (a GPU prefills a 1,024-token step many times faster
per token than eight 128-token steps; None: all the engine's room, as "auto" sizes it), as long as the step is
predicted to take at most IDLE_GAPS decode gaps (1 s by default), never less than `token_chunk_size` (on lavapipe,
where 128 tokens take seconds, that is what it gets). `decode_gap_ms = 0` turns the pacing off: `token_chunk_size`
less the decode rows, a quarter of it at least, beside streams, and `max_prefill_chunk` alone, whatever the steps
cost.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW = 32  # steps the fit remembers: it follows a change of speed within ~WINDOW / 2 steps
WARMUP = 2  # steps of a new engine left out of the fit (first use of its pipelines, driver caches)
IDLE_GAPS = 10  # an idle step's time, in decode gaps: what a request arriving during it may wait for its turn


class StepTimes:
    """Recent steps' durations against their token counts, fitted as seconds = a + b * tokens.

    The fit is Theil-Sen (the median of the slopes between every two steps of different sizes, then the median
    intercept), so a step slowed by something else on the machine moves it no more than any other step. With
    steps of one size only, it assumes no fixed cost (b = seconds / tokens): pessimistic above that size, and
    the next, larger step measured corrects it."""

    def __init__(self) -> None:
        self.samples: deque[tuple[int, float]] = deque(maxlen=WINDOW)
        self._skip = WARMUP
        self._fit: tuple[float, float] | None = None

    def reset(self) -> None:
        """A new engine: what the old one measured says nothing about it."""
        self.samples.clear()
        self._skip, self._fit = WARMUP, None

    def record(self, tokens: int, seconds: float) -> None:
        if self._skip:
            self._skip -= 1
            return
        self.samples.append((tokens, seconds))
        self._fit = None

    def largest(self) -> int:
        """The most tokens of a step the fit has seen (0: none)."""
        return max((n for n, _ in self.samples), default=0)

    def fit(self) -> tuple[float, float] | None:
        """(a, b): seconds of a step of n tokens = a + b * n; None before any step was measured."""
        if self._fit is None and self.samples:
            n, t = np.array(self.samples, np.float64).T  # [k] tokens, [k] seconds
            dn, dt = n[None, :] - n[:, None], t[None, :] - t[:, None]  # [k, k] every pair, both ways
            apart = dn > 0
            if apart.any():
                b = max(float(np.median(dt[apart] / dn[apart])), 0.0)
                a = max(float(np.median(t - b * n)), 0.0)
            else:
                a, b = 0.0, float(np.median(t)) / max(float(n[0]), 1.0)
            self._fit = (a, b)
        return self._fit

    def tokens_within(self, seconds: float) -> int | None:
        """The most tokens a step may carry and be predicted to take at most `seconds`; None while unknown."""
        fit = self.fit()
        if fit is None:
            return None
        a, b = fit
        if b <= 0.0:
            return None if a > seconds else 1 << 30
        return int((seconds - a) / b + 1e-6)  # 39.99999 tokens of float error are 40


class StepBudget:
    """The prompt tokens of the next step (prefill chunks and scoring rows share them)."""

    def __init__(self, token_chunk_size: int, max_prefill_chunk: int | None = 0, decode_gap_ms: float = 0.0) -> None:
        self.chunk = token_chunk_size
        # never less than what a busy step carries; None: the engine's room (a step's limit)
        self.idle_chunk = None if max_prefill_chunk is None else max(max_prefill_chunk, token_chunk_size)
        self.floor = max(1, token_chunk_size // 4)
        self.gap_s = decode_gap_ms / 1000.0
        self.times = StepTimes()

    def prompt_tokens(self, decoding: int, step_limit: int) -> int:
        """Prompt tokens beside `decoding` one-token rows, in a step of at most `step_limit` tokens."""
        room = step_limit if self.idle_chunk is None else min(self.idle_chunk, step_limit)
        if not decoding:
            return self._idle(room)
        if not self.gap_s:
            return max(0, min(max(self.chunk - decoding, self.floor), step_limit - decoding))
        return max(0, min(self._paced(decoding, room - decoding), step_limit - decoding))

    def _idle(self, idle_chunk: int) -> int:
        if not self.gap_s or idle_chunk <= self.chunk:
            return idle_chunk
        fits = self.times.tokens_within(IDLE_GAPS * self.gap_s)
        return self.chunk if fits is None else min(max(fits, self.chunk), idle_chunk)

    def _paced(self, decoding: int, cap: int) -> int:
        fits = self.times.tokens_within(self.gap_s)
        if fits is None:
            return self.floor
        # the fit is trusted up to twice the largest step it has seen: steps of a few tokens, all fixed cost,
        # may fit no slope, and one step of the whole room would then be the streams' gap
        trusted = max(2 * self.times.largest(), self.chunk) - decoding
        return max(min(fits - decoding, cap, trusted), self.floor)

    def record(self, tokens: int, seconds: float) -> None:
        self.times.record(tokens, seconds)
