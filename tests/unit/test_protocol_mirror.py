"""frontend/src/lib/protocol.ts mirrors the WebSocket frames of backend/api/schemas.py, both ways and field by
field: a field or frame type added on one side only fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.api import schemas

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_TS = (ROOT / "frontend" / "src" / "lib" / "protocol.ts").read_text()


def ts_list(name: str) -> list[str]:
    """The strings of `export const NAME = [...]` in protocol.ts."""
    m = re.search(rf"export const {name} = \[(.*?)\]", PROTOCOL_TS, re.S)
    assert m, f"protocol.ts has no {name}"
    return re.findall(r'"([^"]+)"', m.group(1))


def ts_fields(interface: str) -> set[str]:
    """The field names of `export interface NAME { ... }` in protocol.ts."""
    m = re.search(rf"export interface {interface} \{{(.*?)\n\}}", PROTOCOL_TS, re.S)
    assert m, f"protocol.ts has no interface {interface}"
    return set(re.findall(r"^\s+(\w+)\??:", m.group(1), re.M))


def test_sampler_params_match_ws_params():
    assert set(ts_list("PARAM_KEYS")) == set(schemas.WsParams.model_fields)
    assert ts_fields("SamplerParams") == set(schemas.WsParams.model_fields)


def test_client_frame_types_match():
    assert tuple(ts_list("CLIENT_FRAME_TYPES")) == schemas.CLIENT_FRAME_TYPES


@pytest.mark.parametrize(
    ("interface", "model"),
    [
        ("SessionUpdateFrame", schemas.SessionUpdateFrame),
        ("GenerateFrame", schemas.GenerateFrame),
        ("UpdateFrame", schemas.UpdateFrame),
        ("CancelFrame", schemas.CancelFrame),
        ("StateSaveFrame", schemas.StateSaveFrame),
        ("PingFrame", schemas.PingFrame),
    ],
)
def test_client_frame_fields_match(interface: str, model: type):
    assert ts_fields(interface) == set(model.model_fields)


def test_server_frame_types_match_the_models_ws_py_sends():
    sent = [model.model_fields["type"].default for model in schemas.SERVER_FRAMES]
    assert ts_list("SERVER_FRAME_TYPES") == sent


@pytest.mark.parametrize(
    ("interface", "model"),
    [(model.__name__, model) for model in schemas.SERVER_FRAMES]
    + [
        ("ModelSummary", schemas.ModelSummary),
        ("ServerInfo", schemas.ServerInfo),
        ("SessionLimits", schemas.SessionLimits),
        ("Logprob", schemas.TokenLogprobOut),
        ("DoneUsage", schemas.DoneUsage),
        ("DoneTimings", schemas.DoneTimings),
    ],
)
def test_server_frame_fields_match(interface: str, model: type):
    assert ts_fields(interface) == set(model.model_fields)


def test_effective_params_are_the_sampler_params_without_the_grammar():
    assert set(schemas.EffectiveParams.model_fields) == ts_fields("SamplerParams") - {"bnf_schema", "json_schema"}
