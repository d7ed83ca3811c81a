"""The one check of [limits] for every path that accepts a request: REST completions, chat and embeddings,
chooses, WebSocket generate and update. A value over a limit is a 400 (WebSocket: `invalid_request`) naming
the field and the limit, whichever door it came through."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from backend.api.schemas import ApiError
from backend.config import LimitsSection
from backend.sampling.params import MAX_STOP_CHARS, MAX_STOPS


def check_sampler_fields(fields: dict[str, Any], limits: LimitsSection, prefix: str = "",
                         vocab_size: int | None = None) -> None:  # fmt: skip
    """max_tokens, stop strings and logit_bias ids (given the vocabulary) of a generation, or of an update."""
    max_tokens = fields.get("max_tokens")
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"{prefix}max_tokens: must be <= {limits.max_tokens} (limits.max_tokens), got {max_tokens}",
                       param=f"{prefix}max_tokens")  # fmt: skip
    stop = fields.get("stop")
    check_stop([stop] if isinstance(stop, str) else stop or [], f"{prefix}stop")
    if vocab_size is not None and (bias := fields.get("logit_bias")):
        check_token_ids(bias, vocab_size, f"{prefix}logit_bias")


def check_stop(stop: Sequence[str], param: str = "stop") -> None:
    if len(stop) > MAX_STOPS:
        raise ApiError(400, f"{param}: at most {MAX_STOPS} stop strings", param=param)
    for s in stop:
        if len(s) > MAX_STOP_CHARS:
            raise ApiError(400, f"{param}: a stop string is at most {MAX_STOP_CHARS} characters", param=param)


def check_n(n: int, limits: LimitsSection, max_batch: int, param: str = "n") -> None:
    bound = min(limits.max_n, max_batch)
    if n > bound:
        raise ApiError(400, f"{param}: must be <= {bound} (limits.max_n, model.max_batch), got {n}", param=param)


def check_prompt_tokens(n_tokens: int, limits: LimitsSection, param: str = "prompt") -> None:
    if n_tokens > limits.max_prompt_tokens:
        raise ApiError(400, f"{param}: {n_tokens} tokens, more than max_prompt_tokens ({limits.max_prompt_tokens})",
                       param=param, code="context_length_exceeded")  # fmt: skip


def check_token_ids(ids: Iterable[int], vocab_size: int, param: str) -> None:
    """Token ids a client sends itself (embeddings) must name tokens of the vocabulary."""
    if any(not 0 <= t < vocab_size for t in ids):
        raise ApiError(400, f"{param}: token ids are 0..{vocab_size - 1}", param=param)
