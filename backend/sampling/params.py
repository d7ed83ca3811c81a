"""SamplerParams: one generation's sampling settings, and the ONE declaration of each sampler field, its bounds
and its default. The REST and WebSocket request models (api/schemas.py) and the config's [sampler] section
(config.py) derive their fields from it (`optional_fields`). Precedence: request > config [sampler] > these
defaults (OpenAI's, and AI00's penalty half-life)."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from backend.gpu.step_types import Draw
from backend.sampling.race import draw_key

MAX_STOPS = 16  # stop strings in one request
MAX_STOP_CHARS = 256  # one stop string
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
MAX_LOGIT_BIAS = 300  # entries of one logit_bias (the GPU sampler keeps room for this many per draw)
BIAS_LIMIT = 100.0  # a bias is clamped to +-100, as OpenAI does: +100 all but forces a token, -100 bans it

MaxTokens = Annotated[int, Field(ge=1, le=1 << 20)]
Temperature = Annotated[float, Field(ge=0.0, le=5.0, description="0: greedy")]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
TopK = Annotated[int, Field(ge=0, le=65536, description="0: off")]
MinP = Annotated[float, Field(ge=0.0, le=1.0, description="0: off")]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
HalfLife = Annotated[float, Field(ge=1.0, le=1e6, description="tokens after which a penalty count weighs half")]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
StopList = Annotated[list[StopString], Field(max_length=MAX_STOPS)]
Seed = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]
Logprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS, description="the token's logprob and the k most likely")]
LogitBias = Annotated[
    dict[Annotated[int, Field(ge=0)], Annotated[float, AfterValidator(lambda b: max(-BIAS_LIMIT, min(BIAS_LIMIT, b)))]],
    Field(max_length=MAX_LOGIT_BIAS, description="token id -> bias added to its logit before sampling, clamped "
                                                 "to -100..100 (-100 bans the token, +100 all but forces it)"),
]  # fmt: skip
Bias = tuple[tuple[int, float], ...]  # logit_bias as SamplerParams holds it: (token id, bias), ids ascending


@dataclass(frozen=True)
class SamplerParams:
    max_tokens: MaxTokens = 256
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    top_k: TopK = 0  # 0: off
    min_p: MinP = 0.0  # 0: off
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    half_life: HalfLife = 200.0  # AI00's default penalty decay 0.99654 per token
    stop: tuple[StopString, ...] = ()
    seed: Seed | None = None
    logprobs: Logprobs | None = None  # None: off; k: the chosen token's logprob plus the k most likely
    logit_bias: Bias = ()

    @staticmethod
    def resolve(request: dict[str, Any], config: dict[str, Any] | None = None) -> SamplerParams:
        """Merge a request's set fields over the config's set fields over OpenAI's defaults."""
        merged = dict(OPENAI_DEFAULTS)
        for layer in (config or {}, request):
            merged.update({k: v for k, v in layer.items() if k in OPENAI_DEFAULTS and v is not None})
        merged["stop"] = tuple(merged["stop"])
        merged["logit_bias"] = as_bias(merged["logit_bias"])
        return SamplerParams(**merged)

    def updated(self, changes: dict[str, Any]) -> SamplerParams:
        """A copy with `changes` applied (None removes seed/logprobs; other Nones are ignored)."""
        names = {f.name for f in fields(self)}
        kept = {
            k: v for k, v in changes.items() if k in names and (v is not None or k in ("seed", "logprobs"))
        }
        if "stop" in kept:
            kept["stop"] = tuple(kept["stop"])
        if "logit_bias" in kept:
            kept["logit_bias"] = as_bias(kept["logit_bias"])
        return replace(self, **kept)

    @property
    def penalty_decay(self) -> float:
        """Per-token factor on penalty counts: a count weighs half after `half_life` generated tokens."""
        return 0.5 ** (1.0 / self.half_life)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["logit_bias"] = {str(t): b for t, b in self.logit_bias}  # JSON keys are strings
        return d

    def draw(self, row: int, slot: int, rng: np.random.Generator, fresh: bool, mask: np.ndarray | None = None) -> Draw:
        """The GPU draw of one token with these settings; takes the next key of `rng` unless greedy."""
        return Draw(
            row=row, slot=slot, key=draw_key(rng) if self.temperature > 0 else 0,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
            presence=self.presence_penalty, frequency=self.frequency_penalty, decay=self.penalty_decay,
            fresh=fresh, mask=mask, logprobs=self.logprobs, bias=self.logit_bias,
        )  # fmt: skip


OPENAI_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SamplerParams)}
TUNABLE = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
           "half_life")  # what the config's [sampler] section may set  # fmt: skip
_DECLARED = typing.get_type_hints(SamplerParams, include_extras=True) | {"stop": StopList, "seed": Seed,
                                                                          "logprobs": Logprobs,
                                                                          "logit_bias": LogitBias}  # fmt: skip


def as_bias(value: dict[int, float] | Iterable[tuple[int, float]] | None) -> Bias:
    """A request's logit_bias (id -> bias) as SamplerParams holds it: hashable, ids ascending."""
    items = value.items() if isinstance(value, dict) else value or ()
    return tuple(sorted((int(t), float(b)) for t, b in items))


def declared(name: str) -> Any:
    """The field's type with its bounds (`stop` as the list a request sends)."""
    return _DECLARED[name]


def optional_fields(names: Iterable[str]) -> dict[str, Any]:
    """pydantic `create_model` definitions of these sampler fields, each optional (None: not given)."""
    return {name: (declared(name) | None, None) for name in names}
