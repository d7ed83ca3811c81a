"""The Responses API with the official `openai` SDK against the live server (random model, greedy decoding):
the response object, typed stream events, stored responses, and `previous_response_id` continuing from the
previous response's RWKV state so that a follow-up prefills only its new turn."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator

import httpx2 as httpx
import jsonschema
import openai
import pytest

from backend.api.response_store import PINNED_PER_TENANT, ResponseStore, Start, Stored
from backend.config import Config
from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server

GREEDY = {"model": "rwkv", "temperature": 0, "max_output_tokens": 6}
YES_OR_NO = {"bnf_schema": '<start> ::= " Yes." | " No."'}  # a grammar that completes: status "completed"


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=API_KEY, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file()


def prefilled(resp) -> int:
    return resp.usage.input_tokens - resp.usage.input_tokens_details.cached_tokens


def test_text_input_gives_an_incomplete_response_at_max_output_tokens_and_it_is_retrievable(client, live):
    resp = client.responses.create(input="Name a colour.", **GREEDY)
    assert resp.object == "response" and resp.id.startswith("resp_")
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output[0].type == "message" and resp.output[0].role == "assistant" and resp.output_text
    assert resp.usage.output_tokens == 6
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    old_base = openai.OpenAI(base_url=live.oai, api_key=API_KEY, max_retries=0)  # /api/oai/v1 serves them too
    assert old_base.responses.retrieve(resp.id).output_text == resp.output_text


def test_stream_events_parse_in_the_sdk_in_order_and_match_the_non_streamed_answer(client):
    args = {**GREEDY, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
            "instructions": "Answer briefly."}  # fmt: skip
    whole = client.responses.create(**args)
    events = list(client.responses.create(**args, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-4].text == whole.output_text
    assert events[-1].response.usage.input_tokens == whole.usage.input_tokens


def test_the_sdk_stream_helper_assembles_a_completed_response(client):
    with client.responses.stream(input="Is it raining?", **GREEDY, extra_body=YES_OR_NO) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text in (" Yes.", " No.")
    assert "".join(texts) == final.output_text


def test_follow_up_prefills_only_its_new_turn_and_answers_as_resending_the_conversation(client, tokenizer):
    first = client.responses.create(input="Name a colour.", instructions="Be terse.", **GREEDY)
    # the same instructions again: OpenAI does not carry them over, so a follow-up without them would re-read all
    follow = client.responses.create(input="And another?", instructions="Be terse.", previous_response_id=first.id,
                                     **GREEDY)  # fmt: skip
    new_turn = tokenizer.encode("\n\nUser: And another?\n\nAssistant:")
    # the state holds everything but the last token the first response wrote (sampled, never fed)
    assert prefilled(follow) == len(new_turn) + 1
    assert follow.usage.input_tokens == first.usage.input_tokens + first.usage.output_tokens + len(new_turn)
    assert follow.previous_response_id == first.id

    conversation = [{"role": "user", "content": "Name a colour."},
                    {"role": "assistant", "content": first.output_text},
                    {"role": "user", "content": "And another?"}]  # fmt: skip
    resent = client.responses.create(input=conversation, instructions="Be terse.", **GREEDY)
    assert resent.usage.input_tokens == follow.usage.input_tokens, "the resent text tokenizes differently"
    assert resent.output_text == follow.output_text


def test_an_answer_that_ended_on_the_user_stop_string_is_continued_after_it(client, tokenizer):
    forced = {**GREEDY, "max_output_tokens": 16, "extra_body": {"bnf_schema": '<start> ::= " Hi.\\n\\nUser: x"'}}
    first = client.responses.create(input="Greet me.", **forced)
    assert first.output_text == " Hi." and first.status == "completed"
    follow = client.responses.create(input="Again?", previous_response_id=first.id, **GREEDY)
    # the state read "\n\nUser:" already (all but the last token the model wrote): the rest of the turn follows
    written = tokenizer.encode(" Hi.\n\nUser:")
    rest = tokenizer.encode(" Again?\n\nAssistant:")
    assert follow.usage.input_tokens == first.usage.input_tokens + len(written) + len(rest)
    assert prefilled(follow) == len(rest) + 1


def test_a_chain_of_turns_prefills_only_each_new_turn(client, tokenizer):
    resp = client.responses.create(input="One.", **GREEDY)
    for word in ("Two.", "Three."):
        resp = client.responses.create(input=word, previous_response_id=resp.id, **GREEDY)
        assert prefilled(resp) == len(tokenizer.encode(f"\n\nUser: {word}\n\nAssistant:")) + 1


@pytest.fixture(scope="module")
def small_cache() -> Iterator[openai.OpenAI]:
    """A server whose state cache holds one state (one GPU slot, no host tier): any other request evicts it."""
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "prefix_cache": 1}, "cache": {"host_bytes": 0}}
    server, runner, thread = start_server(Config.from_dict(config))
    yield openai.OpenAI(base_url=server.v1, api_key=API_KEY, timeout=120, max_retries=0)
    stop_server(server, runner, thread)


def test_follow_ups_after_the_cache_lost_the_state_start_from_the_pinned_copies(small_cache, tokenizer):
    def evict() -> None:
        for i in range(2):
            small_cache.responses.create(input=f"Filler {i}.", **{**GREEDY, "max_output_tokens": 2}, store=False)

    resp, conversation = small_cache.responses.create(input="Remember me.", **GREEDY), []
    for word in ("Who?", "Why?"):  # the second starts from a state pinned after a pinned start
        conversation += [{"role": "user", "content": "Remember me." if not conversation else "Who?"},
                         {"role": "assistant", "content": resp.output_text}]  # fmt: skip
        evict()
        resp = small_cache.responses.create(input=word, previous_response_id=resp.id, **GREEDY)
        assert prefilled(resp) == len(tokenizer.encode(f"\n\nUser: {word}\n\nAssistant:")) + 1
    evict()
    resent = small_cache.responses.create(input=[*conversation, {"role": "user", "content": "Why?"}], **GREEDY)
    assert prefilled(resent) == resent.usage.input_tokens  # the control: the cache really lost everything


def test_changed_instructions_reread_the_whole_conversation(client):
    first = client.responses.create(input="Hi.", instructions="Be terse.", **GREEDY)
    follow = client.responses.create(input="Bye.", instructions="Be verbose.", previous_response_id=first.id,
                                     **GREEDY)  # fmt: skip
    assert follow.usage.input_tokens_details.cached_tokens < first.usage.input_tokens


def test_unknown_previous_response_id_is_an_openai_shaped_404(client, live):
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(input="x", previous_response_id="resp_nope", **GREEDY)
    assert e.value.body["param"] == "previous_response_id" and "resp_nope" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")


def test_limits_name_the_responses_fields(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(input="x", model="rwkv", max_output_tokens=100000)
    assert e.value.body["param"] == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(input="x", model="rwkv", tools=[WEATHER_TOOL], tool_choice="required",
                                extra_body={"bnf_schema": '<start> ::= "a"'})  # fmt: skip
    assert e.value.body["param"] == "bnf_schema"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(input="x", model="rwkv", conversation="conv_1")
    assert e.value.body["param"] == "conversation"


def test_store_false_keeps_nothing_and_delete_forgets(client):
    unstored = client.responses.create(input="x", store=False, **GREEDY)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = client.responses.create(input="y", **GREEDY)
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(input="z", previous_response_id=stored.id, **GREEDY)


WEATHER_PARAMS = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                  "required": ["city", "days"]}  # fmt: skip  (bounded, so a random model finishes it)
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Forecast", "parameters": WEATHER_PARAMS}
FORCED = {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
          "model": "rwkv", "max_output_tokens": 64, "temperature": 1.0}  # fmt: skip


def test_a_forced_tool_call_is_a_function_call_item_with_valid_arguments(client):
    resp = client.responses.create(input="Weather in Paris for 3 days?", **FORCED)
    assert resp.status == "completed" and [item.type for item in resp.output] == ["function_call"]
    call = resp.output[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)


def test_a_tool_loop_continues_from_the_state_and_prefills_only_the_tool_result(client, tokenizer):
    ask = client.responses.create(input="Weather in Paris for 3 days?", **FORCED)
    call = ask.output[0]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    answer = client.responses.create(input=[result], previous_response_id=ask.id, tools=[WEATHER_TOOL],
                                     tool_choice="none", **GREEDY)  # fmt: skip
    assert answer.output[0].type == "message" and answer.output_text
    # the tools are listed in the prompt only while the model may call them: tool_choice none re-reads all
    assert prefilled(answer) == answer.usage.input_tokens
    again = client.responses.create(input=[{**result, "output": "Rain"}], previous_response_id=ask.id,
                                    **{**FORCED, "tool_choice": "auto", "temperature": 0})  # fmt: skip
    assert prefilled(again) == len(tokenizer.encode("\n\nTool: Rain\n\nAssistant:")) + 1


def test_streamed_function_call_events_reassemble_to_the_same_call(client):
    with client.responses.stream(input="Weather in Oslo?", **{**FORCED, "temperature": 0}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    whole = client.responses.create(input="Weather in Oslo?", **{**FORCED, "temperature": 0})
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments == final.output[0].arguments == whole.output[0].arguments
    assert final.output[0].name == whole.output[0].name == "get_weather"


def test_thinking_is_a_reasoning_item_before_the_message_streamed_and_not(client):
    think = {"bnf_schema": '<start> ::= "<think>x</think>y"'}
    args = {**GREEDY, "max_output_tokens": 16, "input": "hi", "extra_body": think}
    whole = client.responses.create(**args)
    with client.responses.stream(**args) as stream:
        events = list(stream)
        final = stream.get_final_response()
    for resp in (whole, final):
        assert [item.type for item in resp.output] == ["reasoning", "message"]
        assert resp.output[0].content[0].text == "x" and resp.output_text == "y"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "x"


def test_a_json_schema_text_format_gives_json_that_follows_it(client):
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"]}
    fmt = {"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}}
    resp = client.responses.create(input="Pick a colour.", text=fmt, **{**GREEDY, "max_output_tokens": 32})
    assert resp.status == "completed"
    jsonschema.validate(json.loads(resp.output_text), schema)


def test_api_docs_list_the_responses_routes(live: LiveServer):
    spec = httpx.get(f"{live.base}/api-docs/openapi.json", headers=live.headers).json()
    assert {"post", "get", "delete"} <= set(spec["paths"]["/api/oai/v1/responses"]) | set(
        spec["paths"]["/api/oai/v1/responses/{id}"])
    fields = spec["components"]["schemas"]["ResponseRequest"]["properties"]
    assert {"input", "instructions", "max_output_tokens", "previous_response_id", "store", "stream"} <= set(fields)


def stored(handle: str | None, n_tokens: int = 4) -> Stored:
    return Stored({}, None, (), array("H", range(n_tokens)), n_tokens - 1, "", Start(), handle)


def test_store_is_per_key_and_bounded_releasing_the_states_it_drops():
    store = ResponseStore()
    store.put("key-a", "resp_1", stored("state-1"))
    assert store.get("key-b", "resp_1") is None and store.get("key-a", "resp_1") is not None
    released = []
    for i in range(2, PINNED_PER_TENANT + 2):
        released += store.put("key-a", f"resp_{i}", stored(f"state-{i}"))
    assert released == ["state-1"]  # the oldest response keeps its conversation but not its state
    assert store.get("key-a", "resp_1").handle is None
    assert store.delete("key-a", "resp_2") == (True, ["state-2"])
