"""A real server on loopback (demo model, CPU Vulkan), started once per session in its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from backend.api.context import SERVER, Server
from backend.app import create_app, ssl_context
from backend.config import Config
from backend.tools.demo_model import ensure_random_model

API_KEY = "sk-test-key"
# fp32: lavapipe emulates f16, so f32 weights are the faster path on the CPU driver. The untrained random model,
# not the trained demo model: it never ends a text before max_tokens, and it is 2.3x faster on lavapipe
# (test_demo_model_answers.py serves the demo model)
MODEL = ensure_random_model()
MODEL_ID = MODEL.stem
TEST_CONFIG = {
    "model": {"path": str(MODEL), "precision": "fp32", "max_batch": 8, "token_chunk_size": 64, "prefix_cache": 4},
    "listen": {"ip": "127.0.0.1", "port": 0, "api_keys": [API_KEY]},
    "limits": {"max_queue": 2, "max_body_bytes": 65536, "max_message_bytes": 4096, "max_tokens": 64, "max_n": 4},
}


@dataclass
class LiveServer:
    base: str  # http://127.0.0.1:PORT
    server: Server
    loop: asyncio.AbstractEventLoop

    @property
    def oai(self) -> str:
        return f"{self.base}/api/oai/v1"

    @property
    def v1(self) -> str:
        return f"{self.base}/v1"

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/api/ws"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}


def start_server(config: Config) -> tuple[LiveServer, web.AppRunner, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()

    async def setup() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(create_app(config), handler_cancellation=True, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, config.listen.ip, config.listen.port, ssl_context=ssl_context(config))
        await site.start()  # listens at once; the model loads behind /health's 503
        readiness = runner.app[SERVER].readiness
        await readiness.settled.wait()
        if readiness.status == "failed":
            await runner.cleanup()
            raise RuntimeError(readiness.error)
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(setup(), loop).result(timeout=120)
    scheme = "https" if config.listen.tls else "http"
    return LiveServer(f"{scheme}://127.0.0.1:{port}", runner.app[SERVER], loop), runner, thread


def stop_server(live: LiveServer, runner: web.AppRunner, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(runner.cleanup(), live.loop).result(timeout=60)
    live.loop.call_soon_threadsafe(live.loop.stop)
    thread.join(10)


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    server, runner, thread = start_server(Config.from_dict(TEST_CONFIG))
    yield server
    stop_server(server, runner, thread)
