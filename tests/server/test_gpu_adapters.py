"""GET /api/adapters lists the machine's wgpu adapters; `[model] adapter` picks one, or the start fails naming them."""

from __future__ import annotations

import asyncio
import re

import httpx2 as httpx
import pytest
from aiohttp import web

from backend.api.context import SERVER
from backend.app import create_app
from backend.config import Config
from backend.gpu.adapters import AdapterError, choose_adapter, list_adapters
from tests.server.conftest import TEST_CONFIG, LiveServer


def test_adapter_list_shows_lavapipe_and_marks_the_one_in_use(live: LiveServer) -> None:
    r = httpx.get(f"{live.base}/api/adapters", headers=live.headers, timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert any("llvmpipe" in d["name"] and d["type"] == "CPU" for d in data), data
    used = [d for d in data if d["in_use"]]
    assert used and used[0]["backend"] == "Vulkan"
    assert used[0]["limits"]["max-storage-buffer-binding-size"] > 0
    assert isinstance(used[0]["shader_f16"], bool)


def test_models_info_shows_the_adapter_in_use(live: LiveServer) -> None:
    info = httpx.get(f"{live.base}/api/models/info", headers=live.headers, timeout=30).json()
    assert "llvmpipe" in info["adapter"]["name"] and info["adapter"]["backend"] == "Vulkan"


def test_adapter_is_chosen_by_index_or_name_substring() -> None:
    adapters = list_adapters()
    assert choose_adapter("auto") is None
    assert choose_adapter(0).info["device"] == adapters[0]["name"]
    assert "llvmpipe" in choose_adapter("LLVMPIPE").info["device"]
    assert choose_adapter("opengl" if any(d["backend"] == "OpenGL" for d in adapters) else "vulkan") is not None


def test_a_missing_adapter_fails_at_start_listing_the_available_ones() -> None:
    with pytest.raises(AdapterError, match=r"available: 0: llvmpipe"):
        choose_adapter("no-such-gpu")
    with pytest.raises(AdapterError, match=r"model\.adapter"):
        choose_adapter(99)
    config = Config.from_dict({**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "adapter": "no-such-gpu"}})

    async def start() -> tuple[str, str | None]:
        runner = web.AppRunner(create_app(config))
        try:
            await runner.setup()  # the model loads in the background: the failure shows in readiness (and /health)
            readiness = runner.app[SERVER].readiness
            await asyncio.wait_for(readiness.settled.wait(), 60)
            return readiness.status, readiness.error
        finally:
            await runner.cleanup()

    status, error = asyncio.run(start())
    assert status == "failed"
    assert re.search(r"no GPU adapter matches 'no-such-gpu'; available: .*llvmpipe", error)
