"""The server's life seen from HTTP: a request id on every request, 503 while the model loads or the server
drains, and the model load itself (in the background, so the port listens from the start)."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from backend.api import static
from backend.api.schemas import ApiError
from backend.logs import request_id
from backend.model_pool import wait_loaded

if TYPE_CHECKING:
    from backend.api.context import Server

log = logging.getLogger("ai00.app")

OPEN_WHILE_LOADING = ("/health", "/metrics", "/api-docs")  # probes, metrics and docs answer at any time
REQUEST_ID = "X-Request-Id"


@web.middleware
async def request_id_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The client's X-Request-Id (a proxy's) or a new one: on every log line of the request, and echoed back."""
    rid = request.headers.get(REQUEST_ID, "")[:64] or uuid.uuid4().hex
    request_id.set(rid)  # not reset after: the access log line, written after the handler, carries it too
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers[REQUEST_ID] = rid
        raise
    if not response.prepared:  # a stream already sent its headers (they carry no id)
        response.headers[REQUEST_ID] = rid
    return response


def readiness_middleware(server: Server):
    """While the model loads, fails to load, or the server drains: 503 (with Retry-After) for every route that
    needs the engine; probes, metrics, the docs and the UI's pages still answer."""

    @web.middleware
    async def readiness(request: web.Request, handler) -> web.StreamResponse:
        status = server.readiness.status
        if status == "ready" or request.path.startswith(OPEN_WHILE_LOADING) or static.is_ui(request):
            return await handler(request)
        if status == "loading":
            raise ApiError(503, "the model is loading; retry shortly (GET /health shows the progress)",
                           type="server_error", code="model_loading")  # fmt: skip
        if status == "draining":
            raise ApiError(503, "the server is shutting down; retry on another replica", type="server_error",
                           code="draining")  # fmt: skip
        raise ApiError(503, f"the model failed to load: {server.readiness.error}", type="server_error",
                       code="load_failed")  # fmt: skip

    return readiness


async def load_model(server: Server) -> None:
    """Wait for every engine's load, then the configured initial states; mark the server ready or failed."""
    assert server.pool is not None
    for group in server.pool:
        try:
            await wait_loaded(group)
        except ValueError as e:
            log.error("the engine failed to load: %s", e)
            server.readiness.fail(f"the engine failed to load: {e}")
            return
        view = server.route(group.name)
        log.info("model %s ready (%d engine(s)): %s", view.model_id, len(group.engines), view.model_summary())
    server.readiness.ready()
