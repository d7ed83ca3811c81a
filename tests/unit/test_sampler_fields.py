"""The sampler's fields are declared once (sampling/params.py): the REST and WebSocket request models and the
config's [sampler] section take their bounds from that declaration, so the doors and the config cannot drift."""

from __future__ import annotations

import typing

import annotated_types as at
import pytest
from pydantic import BaseModel

from backend.api.schemas import ChatCompletionRequest, CompletionRequest, WsParams
from backend.config import Config, ConfigError, SamplerSection
from backend.sampling.params import OPENAI_DEFAULTS, TUNABLE, SamplerParams, declared


def bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    meta = model.model_fields[name].metadata
    if not meta:  # an optional field keeps its bounds inside the union
        for arg in typing.get_args(model.model_fields[name].annotation):
            meta = [m for info in typing.get_args(arg)[1:] for m in getattr(info, "metadata", [info])]
            if meta:
                break
    return ge_le(meta)


def ge_le(meta: list) -> tuple[float | None, float | None]:
    return next((m.ge for m in meta if isinstance(m, at.Ge)), None), next((m.le for m in meta if isinstance(m, at.Le)),
                                                                          None)  # fmt: skip


def declared_bounds(name: str) -> tuple[float | None, float | None]:
    lo, hi = ge_le([m for info in typing.get_args(declared(name))[1:] for m in info.metadata])
    assert lo is not None and hi is not None
    return lo, hi


@pytest.mark.parametrize("name", TUNABLE)
@pytest.mark.parametrize("model", [CompletionRequest, ChatCompletionRequest, WsParams])
def test_request_models_take_the_declared_bounds(model: type[BaseModel], name: str):
    assert bounds(model, name) == declared_bounds(name)


@pytest.mark.parametrize("name", TUNABLE)
def test_the_config_refuses_exactly_what_the_declaration_refuses(name: str):
    lo, hi = declared_bounds(name)
    assert set(SamplerSection.model_fields) == set(TUNABLE)
    Config.from_dict({"sampler": {name: hi}})
    with pytest.raises(ConfigError, match=f"sampler.{name}: must be"):
        Config.from_dict({"sampler": {name: hi * 2 + 1}})
    with pytest.raises(ConfigError, match=f"sampler.{name}: must be"):
        Config.from_dict({"sampler": {name: lo - 1}})


def test_defaults_are_the_params_defaults():
    assert {f: getattr(SamplerParams(), f) for f in OPENAI_DEFAULTS} == OPENAI_DEFAULTS
    assert set(WsParams.model_fields) >= set(OPENAI_DEFAULTS)
