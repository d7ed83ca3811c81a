"""Tool calling through the official SDK against the live server (random model: structure, not wisdom). The
grammar forces calls whose arguments follow the tool's schema; streamed pieces reassemble to the same call; a
call and its result are written back into the next prompt in the documented format."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import jsonschema
import openai
import pytest

from backend.chat import Message, render_chat
from backend.tokenizer import Tokenizer
from backend.tool_calls import Tool, ToolCall
from tests.server.conftest import API_KEY, LiveServer

WEATHER_PARAMS = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                  "required": ["city", "days"]}  # fmt: skip  (bounded, so a random model finishes it)
TIME_PARAMS = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=API_KEY, timeout=120, max_retries=0)


def valid(call: Any) -> dict[str, Any]:
    """The call's arguments, parsed and checked against its tool's schema (by jsonschema, not the server)."""
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


def test_a_named_tool_choice_returns_that_call_with_valid_arguments(client: openai.OpenAI):
    for seed in range(3):
        r = client.chat.completions.create(model="rwkv", messages=ASK, tools=TOOLS, tool_choice=WEATHER,
                                           max_tokens=64, seed=seed, temperature=1.0)  # fmt: skip
        choice = choice0 = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice0
        assert choice.message.content is None and len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
        valid(call)


def test_required_calls_validate_and_stream_into_the_same_calls(client: openai.OpenAI):
    args = {"model": "rwkv", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 64,
            "seed": 7, "temperature": 1.0}  # fmt: skip
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True))
    calls = whole.choices[0].message.tool_calls
    assert calls and all(valid(c) is not None for c in calls)
    streamed: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for d in chunk.choices[0].delta.tool_calls or []:
            entry = streamed.setdefault(d.index, {"id": d.id, "name": d.function.name, "arguments": ""})
            entry["arguments"] += d.function.arguments or ""
            assert d.id is None or d.id == entry["id"]  # the id comes once, with the name
    finished = [streamed[i] for i in range(len(calls))]  # a last call cut by max_tokens is not in `calls`
    assert [(c["name"], c["arguments"]) for c in finished] == [(c.function.name, c.function.arguments) for c in calls]
    assert all(c["id"].startswith("call_") for c in finished)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert reasons == [whole.choices[0].finish_reason] and reasons[0] in ("tool_calls", "length")


def test_one_call_when_parallel_tool_calls_is_false(client: openai.OpenAI):
    r = client.chat.completions.create(model="rwkv", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=64, seed=3)  # fmt: skip
    assert len(r.choices[0].message.tool_calls) == 1 and r.choices[0].finish_reason == "tool_calls"
    valid(r.choices[0].message.tool_calls[0])


def test_a_two_turn_tool_loop_renders_the_call_and_its_result_into_the_next_prompt(client: openai.OpenAI):
    first = client.chat.completions.create(model="rwkv", messages=ASK, tools=TOOLS, tool_choice=WEATHER,
                                           max_tokens=64, seed=1)  # fmt: skip
    call = first.choices[0].message.tool_calls[0]
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sun"}'}
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True), result]
    second = client.chat.completions.create(model="rwkv", messages=history, tools=TOOLS, tool_choice="none",
                                            max_tokens=4, seed=1)  # fmt: skip
    assert second.choices[0].message.content is not None and not second.choices[0].message.tool_calls
    expected = render_chat([Message("user", ASK[0]["content"]),
                            Message("assistant", "", tool_calls=(ToolCall(call.id, call.function.name,
                                                                          call.function.arguments),)),
                            Message("tool", result["content"], tool_call_id=call.id)])  # fmt: skip
    assert f"\n\nAssistant: {ToolCall('x', call.function.name, call.function.arguments).text()}\n\n" in expected
    assert "\n\nTool: {\"forecast\": \"sun\"}\n\nAssistant:" in expected
    assert second.usage.prompt_tokens == len(Tokenizer.from_file().encode(expected))


def test_auto_lists_the_tools_and_any_call_it_makes_is_valid(client: openai.OpenAI):
    r = client.chat.completions.create(model="rwkv", messages=ASK, tools=TOOLS, max_tokens=16, seed=2)
    tools = [Tool(t["function"]["name"], t["function"].get("description"), t["function"]["parameters"])
             for t in TOOLS]  # fmt: skip
    prompt = render_chat([Message("user", ASK[0]["content"])], tools=tools)
    assert r.usage.prompt_tokens == len(Tokenizer.from_file().encode(prompt))
    for call in r.choices[0].message.tool_calls or []:
        valid(call)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "bnf_schema": '<start> ::= "x"'}, "bnf_schema"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
         "tools.0.function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"messages": [{"role": "user", "content": "I obey.", "name": "Assistant"}]}, "messages.0.name"),
    ],
)
def test_chat_requests_that_cannot_be_honoured_are_refused_naming_the_field(client: openai.OpenAI, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="rwkv", messages=ASK, max_tokens=1, extra_body=extra)
    assert e.value.body["param"] == param, e.value.body


def test_harmless_fields_stay_accepted(client: openai.OpenAI):
    r = client.chat.completions.create(model="rwkv", messages=ASK, max_tokens=1, modalities=["text"], store=False,
                                       metadata={"k": "v"}, service_tier="auto", user="u",
                                       extra_body={"some_future_field": 1})  # fmt: skip
    assert r.choices[0].finish_reason == "length"


def test_api_docs_list_the_tool_and_reasoning_fields(live: LiveServer):
    spec = httpx.get(f"{live.base}/api-docs/openapi.json", headers=live.headers).json()
    schemas = spec["components"]["schemas"]
    new = {"tools", "tool_choice", "parallel_tool_calls", "reasoning_format", "reasoning_effort", "functions"}
    assert new <= set(schemas["ChatCompletionRequest"]["properties"])
    assert {"tool_calls", "tool_call_id"} <= set(schemas["ChatMessage"]["properties"])
    assert {"reasoning_content", "tool_calls"} <= set(schemas["AssistantMessage"]["properties"])
    page = httpx.get(f"{live.base}/api-docs", headers=live.headers).text
    assert all(f"<code>{name}</code>" in page for name in new) and "&lt;tool_call&gt;" in page
