"""The engine's step contract: which tokens to run for which state slot, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Logits(StrEnum):
    NONE = "none"  # prefill chunk that is not the prompt's end
    LAST = "last"  # decode, or the last chunk of a prompt
    ALL = "all"  # every position (diagnostics, prompt logprobs)


@dataclass(frozen=True)
class StepRow:
    """One sequence's share of a step: `tokens` continue the state held in `slot`."""

    slot: int
    tokens: tuple[int, ...]
    logits: Logits = Logits.LAST


@dataclass(frozen=True)
class Draw:
    """Choose one token from the last logit line of plan row `row`; penalty counts live in `slot`."""

    row: int
    slot: int
    key: int  # 64 bits from the generation's RNG: each token's race noise (sampling/race.py); unused when greedy
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    presence: float = 0.0
    frequency: float = 0.0
    decay: float = 1.0  # per-token factor on the counts
    fresh: bool = False  # first token of a generation: counts start at zero
    mask: np.ndarray | None = None  # [ceil(vocab / 32)] int32/uint32 bitmask of allowed tokens
    logprobs: int | None = None  # None: none; k: the token's logprob and the k most likely
    bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit), ids distinct


@dataclass(frozen=True)
class Drawn:
    token: int
    logprob: float | None = None  # the model's (raw logits) log-probability of `token`
    top: tuple[tuple[int, float], ...] = ()  # most likely first, ties by id


@dataclass(frozen=True)
class StepPlan:
    rows: tuple[StepRow, ...]
    draws: tuple[Draw, ...] = ()  # tokens to choose on the GPU from LAST lines (several may share a line)

    @property
    def n_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)


@dataclass(frozen=True)
class StepResult:
    """`logits` [n, vocab] f32: rows in plan order; ALL rows give one line per token, LAST one line."""

    logits: np.ndarray  # empty when every LAST line was drawn from and no row asked for ALL
    row_offsets: tuple[int, ...]  # first line of each plan row in `logits` (rows with NONE own no lines)
    drawn: tuple[Drawn, ...] = ()  # one per plan draw, in order

    def of_row(self, i: int, count: int = 1) -> np.ndarray:
        return self.logits[self.row_offsets[i] : self.row_offsets[i] + count]


def check_plan(plan: StepPlan, max_batch: int, max_step_tokens: int, max_logit_lines: int) -> None:
    """The step contract's refusals (the engine's, and the fake engine's in the scheduler's tests)."""
    if not plan.rows:
        raise ValueError("step: empty plan")
    if len(plan.rows) > max_batch:
        raise ValueError(f"step: {len(plan.rows)} rows > max_batch {max_batch}")
    slots = [r.slot for r in plan.rows]
    if len(set(slots)) != len(slots):
        raise ValueError(f"step: a slot appears twice in {slots}")
    if any(not 0 <= s < max_batch for s in slots):
        raise ValueError(f"step: slot out of range 0..{max_batch - 1} in {slots}")
    if any(not r.tokens for r in plan.rows):
        raise ValueError("step: a row has no tokens")
    if plan.n_tokens > max_step_tokens:
        raise ValueError(f"step: {plan.n_tokens} tokens > max_step_tokens {max_step_tokens}")
    for d in plan.draws:
        if not 0 <= d.row < len(plan.rows) or plan.rows[d.row].logits is not Logits.LAST:
            raise ValueError(f"step: draw from row {d.row}, which is not a LAST row of the plan")
    lines = sum(len(r.tokens) if r.logits is Logits.ALL else r.logits is Logits.LAST for r in plan.rows)
    if lines > max_logit_lines:
        raise ValueError(f"step: {lines} logit lines > {max_logit_lines}")
