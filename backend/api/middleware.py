"""The middlewares every request passes, outermost first in app.create_app: errors as OpenAI-shaped JSON, API
keys (bearer header, or the `bearer.KEY` subprotocol for browsers' WebSockets), the admin key on state-changing
admin routes, and CORS."""

from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web

from backend.api import static
from backend.api.guard import TENANT, bearer_token, tenant_of
from backend.api.http import json_response
from backend.api.schemas import ApiError
from backend.readiness import RETRY_AFTER_S

log = logging.getLogger("ai00.app")

OPEN_PATHS = ("/health", "/api-docs", "/metrics")  # no API key: probes, docs, metrics ([listen] metrics_key)
ADMIN_PATHS = ("/api/models/", "/api/loras", "/api/states", "/api/files/")  # their POST/DELETE need the admin key


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every error leaves as JSON in OpenAI's shape."""
    try:
        return await handler(request)
    except ApiError as e:
        resp = json_response(e.body(), e.status)
        if e.status == 429:
            resp.headers["Retry-After"] = "1"
        elif e.status == 503:
            resp.headers["Retry-After"] = RETRY_AFTER_S
        return resp
    except web.HTTPRequestEntityTooLarge as e:
        return json_response(ApiError(413, f"body too large: {e.text}", code="too_large").body(), 413)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return json_response(ApiError(e.status, e.reason, code=e.reason.lower().replace(" ", "_")).body(),
                             e.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(ApiError(500, "internal error", type="server_error", code="internal").body(), 500)


def auth_middleware(keys: tuple[str, ...], admin_key: str = ""):
    """Bearer keys on every route but the open ones; browsers' WebSockets send `bearer.KEY` as a subprotocol."""
    encoded = [k.encode() for k in keys]

    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        if not encoded or request.path.startswith(OPEN_PATHS) or static.is_ui(request) or request.method == "OPTIONS":
            return await handler(request)
        offered = bearer_token(request)
        if not offered and request.path == "/api/ws":
            protocols = (p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(","))
            offered = next((p.removeprefix("bearer.") for p in protocols if p.startswith("bearer.")), "")
        # compare with every key, in constant time, so timing tells nothing about a key
        if not offered or not any([hmac.compare_digest(offered.encode(), k) for k in encoded]):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")
        request[TENANT] = tenant_of(offered, admin_key)
        return await handler(request)

    return auth


def admin_middleware(admin_key: str, force_pass: bool):
    """State-changing admin routes need the admin key when one is set (and force_pass is off); reads stay open."""
    key = admin_key.encode()

    @web.middleware
    async def admin(request: web.Request, handler) -> web.StreamResponse:
        changes = request.method in ("POST", "DELETE") and request.path.startswith(ADMIN_PATHS)
        guarded = key and not force_pass and changes
        if guarded and not hmac.compare_digest(bearer_token(request).encode(), key):
            raise ApiError(401, "admin route: send 'Authorization: Bearer ADMIN_KEY' ([listen] admin_key)",
                           code="invalid_admin_key")  # fmt: skip
        return await handler(request)

    return admin


def cors_headers(origins: tuple[str, ...]):
    async def add(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            # X-Session-Id: a page behind deploy/haproxy.cfg keeps its conversation on one replica with it
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Session-Id"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"

    return add


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)
