"""What the scheduler needs of an engine: the step contract (gpu/step_types.py) and slot operations.

`gpu.engine.Engine` is the implementation; tests/unit/fake_engine.py is a fake honouring the same contract, so
the scheduler's policies can be tested in milliseconds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from backend.gpu.models.info import ModelInfo
from backend.gpu.step_types import StepPlan, StepResult


class StepEngine(Protocol):
    info: ModelInfo
    max_batch: int  # state slots: the scheduler's generation slots, then its prefix-cache slots
    max_step_tokens: int  # tokens one step may carry, all rows together
    max_logit_lines: int  # logit lines one step may compute (LAST rows count one, ALL rows one per token)
    gpu_bytes: int  # what it holds on the GPU: weights, states, workspace

    @property
    def state_bytes(self) -> int:
        """One slot's state, all layers."""
        ...

    def step(self, plan: StepPlan) -> StepResult:
        """Run the plan's rows and draws; ValueError (nothing run) when the plan breaks the contract."""
        ...

    def reset_slot(self, slot: int, state_id: str = "") -> None: ...

    def copy_slot(self, src: int, dst: int) -> None: ...

    def read_slot(self, slot: int) -> list[np.ndarray]: ...

    def write_slot(self, slot: int, layers_state: list[np.ndarray]) -> None: ...

    def add_initial_state(self, state_id: str, layers_state: list[np.ndarray]) -> None: ...

    def remove_initial_state(self, state_id: str) -> None: ...

    def write_weights(self, tensors: Mapping[str, np.ndarray]) -> list[str]: ...
