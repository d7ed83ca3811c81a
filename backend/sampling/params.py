"""SamplerParams: one generation's sampling settings. Precedence: request > config [sampler] > OpenAI's defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from backend.gpu.step_types import Draw

OPENAI_DEFAULTS: dict[str, Any] = {
    "max_tokens": 256,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,  # 0: off
    "min_p": 0.0,  # 0: off
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "half_life": 200.0,  # AI00's default penalty decay 0.99654 per token
    "stop": (),
    "seed": None,
    "logprobs": None,  # None: off; k: the chosen token's logprob plus the k most likely
}


@dataclass(frozen=True)
class SamplerParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    half_life: float = 200.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None

    @staticmethod
    def resolve(request: dict[str, Any], config: dict[str, Any] | None = None) -> SamplerParams:
        """Merge a request's set fields over the config's set fields over OpenAI's defaults."""
        merged = dict(OPENAI_DEFAULTS)
        for layer in (config or {}, request):
            merged.update({k: v for k, v in layer.items() if k in OPENAI_DEFAULTS and v is not None})
        merged["stop"] = tuple(merged["stop"])
        return SamplerParams(**merged)

    def updated(self, changes: dict[str, Any]) -> SamplerParams:
        """A copy with `changes` applied (None removes seed/logprobs; other Nones are ignored)."""
        names = {f.name for f in fields(self)}
        kept = {
            k: v for k, v in changes.items() if k in names and (v is not None or k in ("seed", "logprobs"))
        }
        if "stop" in kept:
            kept["stop"] = tuple(kept["stop"])
        return replace(self, **kept)

    @property
    def penalty_decay(self) -> float:
        """Per-token factor on penalty counts: a count weighs half after `half_life` generated tokens."""
        return 0.5 ** (1.0 / self.half_life)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def draw(self, row: int, slot: int, rng: np.random.Generator, fresh: bool, mask: np.ndarray | None = None) -> Draw:
        """The GPU draw of one token with these settings; takes the next number of `rng` unless greedy."""
        return Draw(
            row=row, slot=slot, uniform=rng.random() if self.temperature > 0 else 0.0,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
            presence=self.presence_penalty, frequency=self.frequency_penalty, decay=self.penalty_decay,
            fresh=fresh, mask=mask, logprobs=self.logprobs,
        )  # fmt: skip
