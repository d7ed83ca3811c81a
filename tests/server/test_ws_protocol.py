"""The WebSocket protocol (shared/ws-protocol.md) through backend.client against the live server."""

from __future__ import annotations

import asyncio
import re

import httpx2 as httpx
import orjson
import pytest
import websockets

from backend.client import Client, GenerationError
from tests.server.conftest import API_KEY, MODEL_ID, LiveServer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def connect(live: LiveServer) -> Client:
    return await Client.connect(live.ws_url, api_key=API_KEY)


def test_start_deltas_done_in_order_and_text_is_the_deltas(live: LiveServer):
    async def go():
        async with await connect(live) as c:
            assert c.session["type"] == "session.created" and c.session["protocol"] == 1
            assert c.session["limits"]["max_batch"] == 8 and c.session["model"]["id"] == MODEL_ID
            gen = await c.generate("In the beginning", params={"max_tokens": 4, "seed": 2})
            frames = [f async for f in gen]
            return frames, gen

    frames, gen = run(go())
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "generation.started" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    started, done = frames[0], frames[-1]
    assert started["params"]["max_tokens"] == 4 and started["params"]["seed"] == 2
    assert done["text"] == "".join(f["text"] for f in frames if f["type"] == "delta") == gen.texts[0]
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 4
    assert sum(len(f["tokens"]) for f in frames if f["type"] == "delta") == 4
    assert set(done["timings"]) == {"queue_ms", "prefill_ms", "decode_tok_per_s"}


def test_rest_and_ws_give_the_same_text_for_the_same_seed(live: LiveServer):
    prompt, params = "A list of fruits:", {"max_tokens": 4, "seed": 1234, "temperature": 0.9, "top_p": 0.9}

    async def go():
        async with await connect(live) as c:
            rest = asyncio.to_thread(httpx.post, f"{live.oai}/completions", json={"prompt": prompt, **params},
                                     headers=live.headers, timeout=120)
            gen = await c.generate(prompt, params=params)
            response, _ = await asyncio.gather(rest, gen.wait())
            return response.json()["choices"][0]["text"], gen.texts[0]

    rest_text, ws_text = run(go())
    assert rest_text == ws_text and ws_text


def test_live_update_takes_effect_from_the_next_token(live: LiveServer):
    params = {"max_tokens": 6, "seed": 77, "temperature": 1.0}

    async def go():
        async with await connect(live) as c:
            plain = await c.generate("Tell me", params=params, id="plain")
            changed = await c.generate("Tell me", params=params, id="changed")
            updated = None
            async for f in changed:
                if f["type"] == "delta" and updated is None:
                    updated = True
                    await changed.update(temperature=0.0, presence_penalty=1.5)
            await plain.wait()
            return plain, changed

    plain, changed = run(go())
    echo = [f for f in changed.frames if f["type"] == "updated"]
    assert len(echo) == 1 and echo[0]["params"]["temperature"] == 0.0 and echo[0]["params"]["presence_penalty"] == 1.5
    at = echo[0]["at_token"]
    assert 1 <= at < 6
    tokens = {g.id: [t for f in g.frames if f["type"] == "delta" for t in f["tokens"]] for g in (plain, changed)}
    assert tokens["plain"][:at] == tokens["changed"][:at]  # same seed, same params so far
    assert tokens["plain"][at:] != tokens["changed"][at:]  # greedy with penalties from then on


def test_eight_concurrent_generations_on_one_socket_are_not_cross_wired(live: LiveServer):
    prompts = [f"Story number {i}:" for i in range(8)]

    async def round_(order):
        async with await connect(live) as c:
            gens = {i: await c.generate(prompts[i], params={"max_tokens": 3, "seed": i}, id=f"id{i}") for i in order}
            await asyncio.gather(*(g.wait() for g in gens.values()))
            return {i: g for i, g in gens.items()}

    async def go():
        return await round_(range(8)), await round_(reversed(range(8)))

    first, second = run(go())
    for i in range(8):
        g = first[i]
        assert all(f["id"] == f"id{i}" for f in g.frames)
        assert g.dones[0]["text"] == g.texts[0] == second[i].texts[0]
    assert len({first[i].texts[0] for i in range(8)}) > 1
    rows = httpx.get(f"{live.base}/metrics", headers=live.headers).text
    le1 = float(re.search(r'ai00:step_rows_bucket\{le="1.0"\} (\S+)', rows).group(1))
    total = float(re.search(r"ai00:step_rows_count (\S+)", rows).group(1))
    assert total > le1  # some steps batched more than one sequence


def test_n_branches_fork_one_prefill_and_each_ends_with_done(live: LiveServer):
    async def go():
        async with await connect(live) as c:
            gen = await c.generate(messages=[{"role": "user", "content": "Pick a number."}],
                                   names={"user": "Q", "assistant": "A"}, params={"max_tokens": 3, "seed": 4}, n=3)
            await gen.wait()
            return gen

    gen = run(go())
    assert [d["branch"] for d in gen.dones] == [0, 1, 2]
    assert gen.started["prompt_tokens"] == gen.dones[0]["usage"]["prompt_tokens"]
    assert len(set(gen.texts)) > 1
    assert [f["type"] for f in gen.frames].count("generation.started") == 1


def test_state_save_then_generate_from_the_handle(live: LiveServer):
    async def go():
        async with await connect(live) as c:
            gen = await c.generate("My name is Ada.", params={"max_tokens": 2, "seed": 1})
            await gen.wait()
            saved = await c.save_state(gen.id)  # a finished generation: its state is in the prefix cache
            assert saved["handle"].startswith("state-") and saved["bytes"] > 0
            resumed = await c.generate(" And yours?", params={"max_tokens": 2}, state=saved["handle"])
            await resumed.wait()
            with pytest.raises(GenerationError, match="unknown_id"):
                await c.save_state("never-existed")
            bad = await c.generate("x", state="state-unknown")
            with pytest.raises(GenerationError, match="state"):
                await bad.wait()
            return resumed

    resumed = run(go())
    assert resumed.dones[0]["finish_reason"] == "length"


def test_bad_frames_get_errors_and_the_socket_lives_on(live: LiveServer):
    async def go():
        async with await connect(live) as c:
            errors = []

            async def expect(raw) -> dict:
                await (c.ws.send(raw) if isinstance(raw, str | bytes) else c.send(raw))
                errors.append(await asyncio.wait_for(c.errors.get(), 30))
                return errors[-1]

            assert (await expect("{nope"))["code"] == "invalid_json"
            assert (await expect("[1, 2]"))["code"] == "invalid_request"
            assert (await expect({"type": "dance"}))["code"] == "unknown_type"
            e = await expect({"type": "generate", "id": "a", "prompt": "x", "params": {"temprature": 1}})
            assert e["code"] == "invalid_request" and e["param"] == "params.temprature" and e["id"] == "a"
            e = await expect({"type": "generate", "id": "b", "prompt": "x", "messages": [{"role": "user"}]})
            assert e["code"] == "invalid_request"
            e = await expect({"type": "generate", "id": "c", "prompt": "x", "params": {"bnf_schema": "<s> ::= 'a'"}})
            assert e["param"] == "params.bnf_schema" and "line 1, column 1: no <start> rule" in e["message"]
            assert (await expect({"type": "cancel", "id": "ghost"}))["code"] == "unknown_id"
            assert (await expect({"type": "update", "id": "ghost", "params": {"top_k": 3}}))["code"] == "unknown_id"
            assert (await expect(b"\x00binary"))["code"] == "invalid_request"
            e = await expect(orjson.dumps({"type": "ping", "data": "x" * 5000}).decode())
            assert e["code"] == "too_large"
            gen = await c.generate("x", params={"max_tokens": 2}, id="dup")
            e = await expect({"type": "generate", "id": "dup", "prompt": "y"})
            assert e["code"] == "duplicate_id"
            await gen.wait()
            assert (await c.ping({"still": "here"}))["data"] == {"still": "here"}
            return errors

    assert len(run(go())) == 11


def test_session_defaults_apply_to_later_generations(live: LiveServer):
    async def go():
        async with await connect(live) as c:
            await c.send({"type": "session.update", "defaults": {"max_tokens": 2, "top_k": 5}})
            gen = await c.generate("x")
            await gen.wait()
            return gen

    gen = run(go())
    assert gen.started["params"]["top_k"] == 5 and gen.dones[0]["usage"]["completion_tokens"] == 2


def test_upgrade_needs_a_key_by_header_or_subprotocol(live: LiveServer):
    async def go():
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(live.ws_url, subprotocols=["ai00.v1"])
        assert e.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(live.ws_url, subprotocols=["ai00.v1", "bearer.wrong"])
        async with websockets.connect(live.ws_url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
        async with websockets.connect(live.ws_url, subprotocols=["ai00.v1", f"bearer.{API_KEY}"]) as ws:
            assert ws.subprotocol == "ai00.v1"

    run(go())
