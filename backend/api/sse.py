"""Server-sent events on an aiohttp StreamResponse: `data:` lines, `[DONE]`, heartbeats while idle."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from backend.messages import EventSink

HEARTBEAT_S = 15.0


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold tokens back
        }
    )
    await resp.prepare(request)
    return resp


async def send(resp: web.StreamResponse, obj: Any) -> None:
    await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")


async def send_event(resp: web.StreamResponse, name: str, obj: Any) -> None:
    """A named event (`event:` line), as the Responses API's typed stream is framed."""
    await resp.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n")


async def send_done(resp: web.StreamResponse) -> None:
    await resp.write(b"data: [DONE]\n\n")


async def next_event(sink: EventSink, resp: web.StreamResponse, heartbeat_s: float = HEARTBEAT_S) -> Any:
    """The sink's next event; while none comes, a comment line every `heartbeat_s` keeps proxies from timing
    out and finds a client that went away (the write raises)."""
    while True:
        try:
            return await asyncio.wait_for(sink.get(), heartbeat_s)
        except TimeoutError:
            await resp.write(b": keep-alive\n\n")
