"""What every hostile-input test checks, against a real server process (`python -m backend`, the random model,
lavapipe): while the hostile request runs, /health answers within 1 s and a bystander stream keeps
receiving tokens; afterwards the process is alive and its memory grew by less than MEMORY_BOUND."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
import websockets

from tests.server.conftest import MODEL

ROOT = Path(__file__).resolve().parents[2]
API_KEY, OTHER_KEY, ADMIN_KEY = "sk-hostile-a", "sk-hostile-b", "sk-hostile-admin"
HEALTH_WITHIN_S = 1.0
MEMORY_BOUND = 256 << 20  # RSS growth allowed across one hostile request (the grammar workers are other processes)
CONFIG = f"""
[model]
precision = "fp32"
max_batch = 8
token_chunk_size = 64
prefix_cache = 2

[listen]
ip = "127.0.0.1"
api_keys = ["{API_KEY}", "{OTHER_KEY}"]
admin_key = "{ADMIN_KEY}"

[limits]
max_body_bytes = 1048576
max_message_bytes = 65536
max_tokens = 64
max_queue = 16
max_prompt_tokens = 4096
"""


@dataclass
class HostileServer:
    base: str
    proc: subprocess.Popen
    log: Path

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/api/ws"

    def headers(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module", name="hostile")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "Config.toml").write_text(CONFIG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backend", str(MODEL), "--config", str(folder / "Config.toml"),
                                 "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    server = HostileServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.alive(), server.output()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Watch:
    """What the bystanders saw while a hostile request ran."""

    health_s: list[float] = field(default_factory=list)  # each /health round trip
    tokens: list[float] = field(default_factory=list)  # when each bystander delta arrived
    rss_before: int = 0
    rss_after: int = 0

    def tokens_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.tokens if t0 <= t <= t1)


@contextlib.asynccontextmanager
async def watched(server: HostileServer) -> AsyncIterator[Watch]:
    """Run the body (the hostile request) while a stream and a /health poller run beside it; then assert the
    bystanders' view: alive, /health within 1 s every time, tokens flowing, memory bounded."""
    watch = Watch(rss_before=server.rss())
    stop = asyncio.Event()

    async def poll_health() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                r = await http.get(f"{server.base}/health")
                assert r.status_code == 200, r.text
                watch.health_s.append(time.monotonic() - t0)
                await asyncio.sleep(0.1)

    async def stream() -> None:
        async with websockets.connect(server.ws_url, subprotocols=["ai00.v1", f"bearer.{OTHER_KEY}"],
                                      max_size=None) as ws:  # fmt: skip
            n = 0
            while not stop.is_set():
                n += 1
                await ws.send(orjson.dumps({"type": "generate", "id": f"b{n}", "prompt": "Once upon a time",
                                            "params": {"max_tokens": 64, "temperature": 1.0}}).decode())
                while True:
                    frame = orjson.loads(await ws.recv())
                    if frame["type"] == "delta":
                        watch.tokens.append(time.monotonic())
                    if frame["type"] == "done" or frame["type"] == "error":
                        break

    tasks = [asyncio.create_task(poll_health()), asyncio.create_task(stream())]
    while not watch.tokens:  # the bystander stream is running before the hostile request starts
        await asyncio.sleep(0.05)
        for t in tasks:
            if t.done():
                t.result()
    try:
        yield watch
    finally:
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        watch.rss_after = server.rss()
    assert server.alive(), server.output()
    assert max(watch.health_s) < HEALTH_WITHIN_S, f"/health took {max(watch.health_s):.2f} s"
    assert watch.rss_after - watch.rss_before < MEMORY_BOUND, (watch.rss_before, watch.rss_after)


async def timed(coro) -> tuple[float, float, object]:
    """(start, end, result) of an awaited hostile request, on the monotonic clock the Watch uses."""
    t0 = time.monotonic()
    result = await coro
    return t0, time.monotonic(), result


def post(server: HostileServer, path: str, body: object, key: str = API_KEY, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, headers=server.headers(key), timeout=120, **kwargs)


async def apost(server: HostileServer, path: str, body: object, key: str = API_KEY) -> httpx.Response:
    async with httpx.AsyncClient(timeout=300) as http:
        return await http.post(f"{server.base}{path}", json=body, headers=server.headers(key))
