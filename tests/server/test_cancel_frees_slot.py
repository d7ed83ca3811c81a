"""Cancel, disconnect and overload: slots come back within a step, and a full server says so instead of hanging."""

from __future__ import annotations

import asyncio
import time

import httpx2 as httpx

from backend.client import Client, GenerationError
from tests.server.conftest import API_KEY, LiveServer


def wait_all_slots_free(live: LiveServer, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while live.server.scheduler.free_slots != live.server.scheduler.max_batch:
        assert time.monotonic() - start < timeout, f"slots still busy: {live.server.scheduler.free_slots} free"
        time.sleep(0.05)
    return time.monotonic() - start


def test_cancel_mid_stream_ends_with_cancelled_and_frees_the_slot_within_one_step(live: LiveServer):
    async def go():
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            gen = await c.generate("Count: one, two,", params={"max_tokens": 60, "seed": 3})
            after_cancel = 0
            async for f in gen:
                if f["type"] == "delta":
                    if after_cancel == 0:
                        await gen.cancel()
                    after_cancel += 1
            # by the time `done` arrives the slot is already free
            return gen, after_cancel, live.server.scheduler.free_slots

    gen, deltas, free = asyncio.run(asyncio.wait_for(go(), 120))
    assert gen.dones[0]["finish_reason"] == "cancelled"
    assert deltas <= 2  # the delta that prompted the cancel, plus at most the step in flight
    assert gen.dones[0]["usage"]["completion_tokens"] < 60
    assert free == live.server.scheduler.max_batch


def test_closing_the_socket_cancels_its_generations(live: LiveServer):
    async def go():
        c = await Client.connect(live.ws_url, api_key=API_KEY)
        gens = [await c.generate(f"x{i}", params={"max_tokens": 60}) for i in range(3)]
        async for f in gens[0]:
            if f["type"] == "delta":
                break
        await c.close()

    asyncio.run(asyncio.wait_for(go(), 120))
    wait_all_slots_free(live)


def test_sse_client_disconnect_frees_the_slot(live: LiveServer):
    body = {"prompt": "Long story:", "max_tokens": 60, "stream": True}
    with httpx.stream("POST", f"{live.oai}/completions", json=body, headers=live.headers, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # got the first chunk; leave
    wait_all_slots_free(live)


def test_full_slots_and_queue_answer_overloaded_and_429(live: LiveServer):
    """8 slots busy and 2 waiting (limits.max_queue = 2): the next request is refused at once."""

    async def go():
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            gens = [await c.generate(f"busy {i}", params={"max_tokens": 60}) for i in range(10)]
            await c.ping()  # the scheduler has seen all ten before the next one
            refused = await c.generate("one too many", params={"max_tokens": 1})
            try:
                await refused.wait()
                raise AssertionError("expected overloaded")
            except GenerationError as e:
                assert e.frame["code"] == "overloaded"
            r = await asyncio.to_thread(httpx.post, f"{live.oai}/completions", json={"prompt": "x", "max_tokens": 1},
                                        headers=live.headers, timeout=60)
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "overloaded"
            await c.send({"type": "cancel", "id": "*"})
            dones = await asyncio.gather(*(g.wait() for g in gens))
            return [d[0]["finish_reason"] for d in dones]

    reasons = asyncio.run(asyncio.wait_for(go(), 120))
    assert reasons == ["cancelled"] * 10
    wait_all_slots_free(live)
