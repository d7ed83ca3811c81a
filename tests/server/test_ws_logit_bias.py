"""logit_bias at the WebSocket door: a generate's params take it like REST (the same declaration), its effective
params echo it, and an id outside the vocabulary is an error naming params.logit_bias."""

from __future__ import annotations

import asyncio

import pytest

from backend.client import Client, GenerationError
from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, LiveServer


def test_a_ws_generation_with_a_bias_of_100_repeats_that_token(live: LiveServer):
    (forced,) = Tokenizer.from_file().encode(" apple")

    async def go():
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            gen = await c.generate("Once", params={"max_tokens": 5, "logit_bias": {str(forced): 100}})
            frames = [f async for f in gen]
            with pytest.raises(GenerationError) as e:
                await (await c.generate("Once", params={"max_tokens": 1, "logit_bias": {"70000": 1}})).wait()
            return frames, e.value

    frames, error = asyncio.run(asyncio.wait_for(go(), 120))
    assert frames[0]["params"]["logit_bias"] == {str(forced): 100.0}
    assert frames[-1]["text"] == " apple" * 5
    assert "params.logit_bias" in str(error)
