"""A small client for the AI00 WebSocket protocol (shared/ws-protocol.md), on `websockets`.

    async with await Client.connect("ws://127.0.0.1:65530/api/ws") as client:
        gen = await client.generate("The capital of France is", params={"max_tokens": 16, "seed": 1})
        async for frame in gen:            # generation.started, delta..., done (per branch)
            if frame["type"] == "delta":
                print(frame["text"], end="", flush=True)
        print(gen.texts[0], gen.dones[0]["finish_reason"])
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import websockets

PROTOCOL = "ai00.v1"


class GenerationError(RuntimeError):
    """The server refused a generation (its `error` event came before `generation.started`)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame


class Generation:
    """Events of one `generate`, in order; `texts`/`dones` fill in as they arrive."""

    def __init__(self, client: Client, id: str, n: int) -> None:
        self.client, self.id, self.n = client, id, n
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started: dict[str, Any] | None = None
        self.texts = [""] * n
        self.dones: list[dict[str, Any] | None] = [None] * n
        self.frames: list[dict[str, Any]] = []

    @property
    def finished(self) -> bool:
        return all(d is not None for d in self.dones)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while not self.finished:
            frame = await self.queue.get()
            if frame["type"] == "error" and self.started is None:
                raise GenerationError(frame)
            self.frames.append(frame)
            if frame["type"] == "generation.started":
                self.started = frame
            elif frame["type"] == "delta":
                self.texts[frame["branch"]] += frame["text"]
            elif frame["type"] == "done":
                self.dones[frame["branch"]] = frame
            yield frame

    async def wait(self) -> list[dict[str, Any]]:
        """Read to the end; the `done` frame of every branch."""
        async for _ in self:
            pass
        return self.dones  # type: ignore[return-value]

    async def cancel(self) -> None:
        await self.client.send({"type": "cancel", "id": self.id})

    async def update(self, **params: Any) -> None:
        await self.client.send({"type": "update", "id": self.id, "params": params})


class Client:
    def __init__(self, ws: Any, session: dict[str, Any]) -> None:
        self.ws = ws
        self.session = session  # the server's session.created frame
        self.generations: dict[str, Generation] = {}
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # error events of no live generation
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # pong, state.saved
        self._ids = itertools.count()
        self._saving: set[str] = set()  # ids with a state.save in flight: their errors are its answer
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None, **kwargs: Any) -> Client:
        protocols = [PROTOCOL] + ([f"bearer.{api_key}"] if api_key else [])
        ws = await websockets.connect(url, subprotocols=protocols, max_size=None, **kwargs)
        session = orjson.loads(await ws.recv())
        return cls(ws, session)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def generate(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
                       names: dict[str, str] | None = None, params: dict[str, Any] | None = None, n: int = 1,
                       state: str | None = None, id: str | None = None) -> Generation:
        id = id or f"g{next(self._ids)}"
        frame: dict[str, Any] = {"type": "generate", "id": id, "n": n}
        if messages is not None:
            frame["messages"] = messages
        else:
            frame["prompt"] = prompt or ""
        for key, value in (("names", names), ("params", params), ("state", state)):
            if value is not None:
                frame[key] = value
        gen = self.generations[id] = Generation(self, id, n)
        await self.send(frame)
        return gen

    async def save_state(self, id: str, branch: int = 0) -> dict[str, Any]:
        self._saving.add(id)
        await self.send({"type": "state.save", "id": id, "branch": branch})
        return await self._reply("state.saved")

    async def ping(self, data: Any = None) -> dict[str, Any]:
        await self.send({"type": "ping", "data": data})
        return await self._reply("pong")

    async def _reply(self, kind: str) -> dict[str, Any]:
        frame = await self.replies.get()
        if frame["type"] == "error":
            raise GenerationError(frame)
        assert frame["type"] == kind, frame
        return frame

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = orjson.loads(raw)
            kind, id = frame.get("type"), frame.get("id")
            gen = self.generations.get(id) if isinstance(id, str) else None
            if kind in ("pong", "state.saved") or (kind == "error" and id in self._saving):
                self._saving.discard(id)
                await self.replies.put(frame)
            elif gen is not None and not gen.finished and frame.get("code") != "duplicate_id":
                await gen.queue.put(frame)
            else:
                await self.errors.put(frame)
