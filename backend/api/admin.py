"""Operations routes: /health and /metrics (model, state and LoRA management arrive with the admin issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api.openai import json_response

if TYPE_CHECKING:
    from backend.app import Server


def routes(server: Server) -> list[web.RouteDef]:
    async def health(request: web.Request) -> web.Response:
        s = server.scheduler
        ok = s.alive
        body = {
            "status": "ok" if ok else "unhealthy",
            "model": server.model_id,
            "slots": {"total": s.max_batch, "free": s.free_slots},
            "error": None if s.error is None else repr(s.error),
        }
        return json_response(body, 200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(server.scheduler.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/health", health), web.get("/metrics", metrics)]
