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
class StepPlan:
    rows: tuple[StepRow, ...]

    @property
    def n_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)


@dataclass(frozen=True)
class StepResult:
    """`logits` [n, vocab] f32: rows in plan order; ALL rows give one line per token, LAST one line."""

    logits: np.ndarray
    row_offsets: tuple[int, ...]  # first line of each plan row in `logits` (rows with NONE own no lines)

    def of_row(self, i: int, count: int = 1) -> np.ndarray:
        return self.logits[self.row_offsets[i] : self.row_offsets[i] + count]
