"""Faults: clients that vanish, cancel or change params mid-stream, and a generation that crashes. Every slot
comes back, the engine thread lives on, and the other streams are untouched."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from backend.client import Client
from backend.config import Config
from backend.sessions import Session
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server
from tests.server.test_cancel_frees_slot import wait_all_slots_free

ACTORS = 24
LONG = {"max_tokens": 48, "temperature": 1.0}
BOOM_SEED = 4242  # generations with this seed crash (an injected bug)


@pytest.fixture(scope="module")
def faulty() -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": 16},
              "limits": {**TEST_CONFIG["limits"], "max_queue": 64}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


async def ws_actor(live: LiveServer, rng: random.Random, i: int) -> str:
    """Two generations on one socket; after a random number of deltas: cancel, update, vanish, or read on."""
    action, after = rng.choice(["cancel", "update", "vanish", "close", "finish"]), rng.randint(0, 6)
    c = await Client.connect(live.ws_url, api_key=API_KEY)
    gens = [await c.generate(f"actor {i} gen {k}:", params={**LONG, "seed": i * 10 + k}) for k in range(2)]
    deltas = 0
    async for frame in gens[0]:
        if frame["type"] != "delta" or (deltas := deltas + 1) != after + 1:
            continue
        if action == "cancel":
            await gens[0].cancel()
        elif action == "update":
            await gens[0].update(temperature=rng.uniform(0, 2), top_p=rng.uniform(0.1, 1), presence_penalty=0.5)
        elif action == "vanish":  # no close handshake: the TCP connection just drops
            c.ws.transport.abort()
            c._reader.cancel()  # the client's reader would only report the dropped connection
            return action
        elif action == "close":
            await c.close()
            return action
    reasons = [d["finish_reason"] for d in await gens[1].wait()] + [gens[0].dones[0]["finish_reason"]]
    assert reasons[-1] == ("cancelled" if action == "cancel" else "length"), (action, gens[0].frames[-3:])
    assert action != "update" or any(f["type"] == "updated" for f in gens[0].frames)
    await c.close()
    return action


async def sse_actor(http: httpx.AsyncClient, live: LiveServer, rng: random.Random, i: int) -> str:
    leave_after = rng.choice([0, 1, 3, None])
    body = {"prompt": f"sse actor {i}:", **LONG, "stream": True, "seed": i}
    async with http.stream("POST", f"{live.oai}/completions", json=body, headers=live.headers) as r:
        assert r.status_code == 200
        chunks = 0
        async for line in r.aiter_lines():
            if line.startswith("data: ") and (chunks := chunks + 1) == leave_after:
                return "disconnect"
    return "finish"


async def crowd(live: LiveServer, seed: int) -> list[str]:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=120) as http:
        actors = [ws_actor(live, rng, i) if i % 3 else sse_actor(http, live, rng, i) for i in range(ACTORS)]
        return list(await asyncio.wait_for(asyncio.gather(*actors), 150))


def test_random_disconnects_cancels_and_updates_leave_every_slot_free(faulty: LiveServer):
    actions = asyncio.run(crowd(faulty, seed=9))
    assert {"cancel", "update", "vanish", "disconnect"} <= set(actions), actions
    wait_all_slots_free(faulty)
    s = faulty.server.scheduler
    slots = s.planner.slots
    assert s.alive and not slots.waiting and not slots.running and not slots.groups
    assert httpx.get(f"{faulty.base}/health").json()["slots"]["free"] == s.max_batch
    r = httpx.post(f"{faulty.oai}/completions", json={"prompt": "after", "max_tokens": 2}, headers=faulty.headers)
    assert r.status_code == 200, r.text


def test_a_crash_inside_one_generation_ends_it_with_error_and_the_others_go_on(
    faulty: LiveServer, monkeypatch: pytest.MonkeyPatch
):
    take = Session.take

    def crash_some(self: Session, drawn):
        if self.params.seed == BOOM_SEED and self.out_tokens:  # fail on the second token, mid-stream
            raise RuntimeError("injected fault")
        return take(self, drawn)

    async def go():
        async with await Client.connect(faulty.ws_url, api_key=API_KEY) as c:
            alone = await c.generate("steady", params={**LONG, "max_tokens": 12, "seed": 4})
            await alone.wait()
            monkeypatch.setattr(Session, "take", crash_some)
            boom = await c.generate("steady", params={**LONG, "max_tokens": 12, "seed": BOOM_SEED}, n=2)
            steady = await c.generate("steady", params={**LONG, "max_tokens": 12, "seed": 4})
            await asyncio.gather(boom.wait(), steady.wait())
            return alone, boom, steady

    alone, boom, steady = asyncio.run(asyncio.wait_for(go(), 120))
    assert [d["finish_reason"] for d in boom.dones] == ["error", "error"]
    assert any(f["type"] == "error" and f["code"] == "internal" for f in boom.frames)
    assert steady.dones[0]["finish_reason"] == "length" and steady.texts == alone.texts
    wait_all_slots_free(faulty)
    assert faulty.server.scheduler.alive
