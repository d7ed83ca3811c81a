"""Issue 16, classes 1 and 2: a grammar can neither crash nor freeze the server. Each is refused with a 400
naming the limit while /health and a bystander stream go on (tests/server/hostile.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.hostile import HostileServer, apost, hostile_server, timed, watched  # noqa: F401 -- fixture


def chain(n: int) -> str:
    """n rules, each nesting the next: ~2,500 overflow llguidance's native stack and killed the process."""
    rules = [f'<r{i}> ::= "a" <r{i + 1}> "b" | "c"' for i in range(n)]
    return "\n".join(["<start> ::= <r0>", *rules, f'<r{n}> ::= "x"'])


def nested_except(n: int) -> str:
    """except!([e0]) over n levels of duplicated alternatives: 2^n expansions, 4.4 s at n = 20 before."""
    rules = [f"<e{i}> ::= <e{i + 1}> | <e{i + 1}>" for i in range(n)]
    return "\n".join(["<start> ::= <except!([e0])>", *rules, f"<e{n}> ::= 'a' | 'b'"])


def wide_product() -> str:
    """A 3,000-way alternation multiplied out three times: 7.3 s of freeze before the cap was checked."""
    return "<start> ::= <except!([x])>\n<x> ::= <a><a><a>\n<a> ::= " + " | ".join(f"'w{i}'" for i in range(3000))


def ref_chain(n: int) -> dict:
    """A flat JSON schema whose $refs chain n deep: passes the nesting check, overflows llguidance natively,
    which only the grammar worker's process boundary contains."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(n)}
    defs[f"d{n}"] = {"type": "string"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


def deep_schema(n: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(n):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(("body", "words"), [
    ({"bnf_schema": chain(1900)}, "limit is 1024"),  # 62 KB: under the 64 KiB cap
    ({"bnf_schema": chain(1000)}, "limit is 256"),
    ({"bnf_schema": nested_except(40)}, None),  # now fine: each rule expanded once
    ({"bnf_schema": wide_product()}, "more than 4096 strings"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": ref_chain(3000)}}},
     "grammar too complex"),  # a crash or the deadline, in the worker
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(400)}}},
     "limit is 64"),
], ids=["chain-1900", "chain-1000", "except-nest-40", "wide-product", "ref-chain-crash", "deep-schema"])
def test_hostile_grammar_is_refused_naming_its_limit_while_others_run(hostile: HostileServer, body: dict,
                                                                      words: str | None) -> None:  # fmt: skip
    async def run() -> None:
        async with watched(hostile) as watch:
            t0, t1, r = await timed(apost(hostile, "/api/oai/v1/completions",
                                          {"prompt": "x", "max_tokens": 2, **body}))  # fmt: skip
            if words is None:
                assert r.status_code == 200, r.text
            else:
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "invalid_grammar" and words in r.json()["error"]["message"]
            print(f"\n{r.status_code} in {t1 - t0:.2f} s; /health max {max(watch.health_s) * 1e3:.0f} ms")
        assert watch.tokens_between(t0, t1 + 1.0) > 0

    asyncio.run(run())


def test_grammar_worker_comes_back_after_a_crash(hostile: HostileServer) -> None:
    async def run() -> None:
        r = await apost(hostile, "/api/oai/v1/completions", {"prompt": "x", "max_tokens": 2, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": ref_chain(3000)}}})  # fmt: skip
        assert r.status_code == 400, r.text
        r = await apost(hostile, "/api/oai/v1/completions", {"prompt": "x", "max_tokens": 4, "bnf_schema":
                                                             "<start> ::= 'yes' | 'no'\n"})  # fmt: skip
        assert r.status_code == 200 and r.json()["choices"][0]["text"] in ("yes", "no"), r.text

    asyncio.run(run())
