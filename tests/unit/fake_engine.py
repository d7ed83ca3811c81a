"""An engine that honours the step contract of gpu/engine.py (the same refusals, the same result layout) without
a GPU: a slot's "state" is the tokens fed into it, and the next token is a function of that history. So the
scheduler's policies can be tested in milliseconds, and a wrong slot copy or a lost token shows in the output."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

import numpy as np

from backend.gpu.step_types import Drawn, Logits, StepPlan, StepResult, check_plan

VOCAB = 4096


def next_token(history: tuple[int, ...]) -> int:
    """What the fake model says after `history`: never END_OF_TEXT (0), so only limits end a generation."""
    return 1 + (sum(history) * 31 + len(history)) % (VOCAB - 1)


class FakeEngine:
    def __init__(self, max_batch: int, max_step_tokens: int, max_logit_lines: int | None = None) -> None:
        self.info = SimpleNamespace(n_vocab=VOCAB, n_embd=8)
        self.max_batch, self.max_step_tokens = max_batch, max_step_tokens
        self.max_logit_lines = max_logit_lines or max_step_tokens
        self.gpu_bytes = 0
        self.state_bytes = 64  # read_slot's 16 floats (longer histories read back longer)
        self.slots: list[tuple[int, ...]] = [()] * max_batch  # the tokens each slot's state has seen
        self.templates: dict[str, tuple[int, ...]] = {"": ()}
        self.plans: list[StepPlan] = []
        self.weights_written: list[list[str]] = []

    # ---- slots ----

    def reset_slot(self, slot: int, state_id: str = "") -> None:
        self.slots[slot] = self.templates[state_id]

    def copy_slot(self, src: int, dst: int) -> None:
        self.slots[dst] = self.slots[src]

    def read_slot(self, slot: int) -> list[np.ndarray]:
        h = self.slots[slot]  # one "layer": the history, zero-padded (the embedding reads [n_embd : 2 n_embd])
        return [np.array([*h, *[0] * max(0, 16 - len(h))], np.float32)]

    def write_slot(self, slot: int, layers_state: list[np.ndarray]) -> None:
        self.slots[slot] = tuple(int(t) for t in layers_state[0] if t > 0)

    def add_initial_state(self, state_id: str, layers_state: list[np.ndarray]) -> None:
        self.templates[state_id] = (VOCAB - 1,)  # a state of its own: a different continuation

    def remove_initial_state(self, state_id: str) -> None:
        del self.templates[state_id]

    def write_weights(self, tensors: Mapping[str, np.ndarray]) -> list[str]:
        self.weights_written.append(sorted(tensors))
        return sorted(tensors)

    # ---- the step ----

    def step(self, plan: StepPlan) -> StepResult:
        self.validate(plan)
        self.plans.append(plan)
        lines, offsets = [], []
        for row in plan.rows:
            offsets.append(len(lines))
            history = self.slots[row.slot]
            for i, token in enumerate(row.tokens):
                history += (token,)
                if row.logits is Logits.ALL or (row.logits is Logits.LAST and i == len(row.tokens) - 1):
                    lines.append(self.logit_line(history))
            self.slots[row.slot] = history
        logits = np.stack(lines) if lines else np.zeros((0, VOCAB), np.float32)
        drawn = tuple(Drawn(int(logits[offsets[d.row]].argmax())) for d in plan.draws)
        return StepResult(logits, tuple(offsets), drawn)

    @staticmethod
    def logit_line(history: tuple[int, ...]) -> np.ndarray:
        line = np.zeros(VOCAB, np.float32)  # [vocab] f32
        line[next_token(history)] = 10.0
        return line

    def validate(self, plan: StepPlan) -> None:
        """gpu/engine.py's refusals, with its messages."""
        check_plan(plan, self.max_batch, self.max_step_tokens, self.max_logit_lines)
        if any(not 0 <= t < VOCAB for r in plan.rows for t in r.tokens):
            raise ValueError(f"step: token id outside 0..{VOCAB - 1}")
