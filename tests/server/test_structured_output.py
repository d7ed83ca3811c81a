"""Grammar-constrained generation through the live server (demo model, temperature 1), checked by parsers
that share nothing with the server's: Python `re` for AI00's README BNF, `jsonschema` for JSON schemas.

The demo model is untrained, so its choices among the allowed tokens are close to uniform. A bounded
grammar is therefore always finished by the grammar within max_tokens; the README grammar is not
bounded (its strings and numbers go on until the model happens to close them), so some of its generations
stop at max_tokens, and for those the test proves the text is a prefix of a sentence of the grammar.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import jsonschema
import openai
import pytest

from backend.client import Client
from backend.grammar.bnf import AI00_README_BNF
from tests.server.conftest import API_KEY, LiveServer

N = 24  # generations per grammar: three full batches of the test server (CI time)
IN_FLIGHT = 10  # max_batch 8 running + max_queue 2 waiting in the test server

README_BNF = AI00_README_BNF

# the same language, written as a regex by hand
_CONTENT = r'(?:[^\t\n\r"]|\\")+'
_MEMBER = rf'"(?:name|age|job)": (?:"{_CONTENT}"|[1-9][0-9]+|0)'
README_SENTENCE = re.compile(rf"\{{{_MEMBER}(?:, {_MEMBER})*\}}")
# every prefix of a sentence becomes one by appending one of these (a suffix of a template, or a closer)
_TEMPLATES = ['{"name": "x", "age": 10}', '{"age": 10, "job": "x"}', '{"job": "x", "name": "x"}']
README_ENDINGS = sorted({t[i:] for t in _TEMPLATES for i in range(len(t) + 1)} | {'x"}', '"}', "0}"})


def is_readme_prefix(text: str) -> bool:
    return any(README_SENTENCE.fullmatch(text + end) for end in README_ENDINGS)


# three bounded schemas (no sentence is over 64 bytes, so each ends within max_tokens 64)
NESTED = {
    "type": "object",
    "properties": {
        "who": {
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99}, "role": {"enum": ["dev", "ops"]}},
            "required": ["id", "role"],
        },
        "on": {"type": "boolean"},
    },
    "required": ["who", "on"],
}
ARRAYS = {
    "type": "object",
    "properties": {
        "v": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 1, "maxItems": 3},
        "w": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.25},
    },
    "required": ["v", "w"],
}
MIXED = {
    "type": "object",
    "properties": {
        "k": {"const": "id"},
        "n": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 10, "maximum": 20}]},
        "t": {
            "type": "array",
            "items": {"type": "object", "properties": {"e": {"enum": [1, "two", None]}}, "required": ["e"]},
            "maxItems": 2,
        },
        "s": {"type": "string", "pattern": "^[a-z]{1,3}$"},
    },
    "required": ["k", "t"],
}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def ws_generations(live: LiveServer, params: dict, count: int = N) -> list[dict]:
    """`count` single-branch generations over one socket, at most IN_FLIGHT at once; their `done` frames."""
    async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> dict:
            async with gate:
                gen = await c.generate("Fill in the record: ", params={**params, "seed": 1000 + i})
                return (await gen.wait())[0]

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_readme_bnf_generations_all_follow_the_grammar(live: LiveServer):
    params = {"bnf_schema": README_BNF, "temperature": 1.0, "max_tokens": 16}
    dones = run(ws_generations(live, params))
    assert len(dones) == N
    for d in dones:
        assert d["finish_reason"] in ("grammar", "length"), d
        if d["finish_reason"] == "grammar":
            assert README_SENTENCE.fullmatch(d["text"]), d["text"]
        else:
            assert d["usage"]["completion_tokens"] == 16 and is_readme_prefix(d["text"]), d["text"]


def test_bounded_bnf_is_ended_by_the_grammar_and_errors_name_line_and_column(live: LiveServer):
    grammar = "<start> ::= 'Answer: ' <d> <d> '.'\n<d> ::= '0' | '1' | '2' | '3' | '4' | '5' | '6' | '7' | '8' | '9'\n"

    async def go():
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            await c.send({"type": "generate", "id": "bad", "prompt": "x",
                          "params": {"bnf_schema": "<start> ::= <a>\n<a> ::= 'x' | <b>\n"}})
            error = await c.errors.get()
            await c.send({"type": "update", "id": "bad", "params": {"json_schema": {"type": "object"}}})
            refused_update = await c.errors.get()
            gen = await c.generate("x", params={"bnf_schema": grammar, "max_tokens": 64}, n=4)
            return error, refused_update, await gen.wait()

    error, refused_update, dones = run(go())
    assert error["code"] == "invalid_request" and error["param"] == "params.bnf_schema" and error["id"] == "bad"
    assert "line 2, column 15" in error["message"] and "<b> is used but never defined" in error["message"]
    assert refused_update["param"] == "params.json_schema"
    assert [d["finish_reason"] for d in dones] == ["grammar"] * 4  # the socket lived on
    assert all(re.fullmatch(r"Answer: [0-9]{2}\.", d["text"]) for d in dones), dones


def check_json(text: str, schema: dict) -> None:
    jsonschema.validate(json.loads(text), schema, cls=jsonschema.Draft202012Validator)


def test_json_schema_param_nested_objects_all_valid_and_ended_by_the_grammar(live: LiveServer):
    dones = run(ws_generations(live, {"json_schema": NESTED, "temperature": 1.0, "max_tokens": 64}))
    assert [d["finish_reason"] for d in dones] == ["grammar"] * N
    for d in dones:
        check_json(d["text"], NESTED)


@pytest.mark.parametrize(("schema", "route"), [(ARRAYS, "chat"), (MIXED, "completions")], ids=["arrays", "mixed"])
def test_openai_response_format_json_schema_all_valid(live: LiveServer, schema: dict, route: str):
    client = openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)
    fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": schema, "strict": True}}
    n = 2

    def one(i: int):
        common = {"model": "rwkv", "max_tokens": 64, "temperature": 1.0, "seed": 2000 + i, "n": n}
        if route == "chat":
            r = client.chat.completions.create(messages=[{"role": "user", "content": "Data?"}],
                                               response_format=fmt, **common)
            return [(c.message.content, c.finish_reason) for c in r.choices]
        r = client.completions.create(prompt="Data: ", extra_body={"response_format": fmt}, **common)
        return [(c.text, c.finish_reason) for c in r.choices]

    with ThreadPoolExecutor(IN_FLIGHT // n + 1) as pool:  # groups of n: 4 running, 2 waiting
        results = [c for cs in pool.map(one, range(N // n)) for c in cs]
    assert len(results) == N
    for text, reason in results:
        assert reason == "stop", (text, reason)  # OpenAI's name for a finished grammar
        check_json(text, schema)


def test_bad_grammars_are_400_naming_the_field(live: LiveServer):
    def post(path: str, body: dict) -> dict:
        r = httpx.post(f"{live.oai}/{path}", json=body, headers=live.headers, timeout=60)
        assert r.status_code == 400, r.text
        return r.json()["error"]

    e = post("completions", {"prompt": "x", "bnf_schema": "<start> ::= 'a'\n  <b> ::= 'c' | 'd\n"})
    assert e["param"] == "bnf_schema" and "line 2, column 17" in e["message"] and e["code"] == "invalid_grammar"
    bad_schema = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object",
                                                                                "properties": {"a": {"type": 3}}}}}
    e = post("chat/completions", {"messages": [{"role": "user", "content": "x"}], "response_format": bad_schema})
    assert e["param"] == "response_format.json_schema.schema" and "properties/a/type" in e["message"]
    both = {"prompt": "x", "bnf_schema": "<start> ::= 'a'\n", "response_format": {"type": "json_object"}}
    e = post("completions", both)
    assert e["param"] == "response_format" and "only one" in e["message"]
