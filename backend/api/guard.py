"""Checks every request passes before a route sees it, against clients and against web pages.

A browser lets any page send a "simple" cross-site POST (text/plain, no preflight) and open a WebSocket to
any host; neither carries the user's intent. So state-changing requests must be JSON (which a page can only
send cross-site after a CORS preflight we answer for `cors_origins` alone), and those requests and WebSocket
upgrades that carry an `Origin` must come from the server's own origin or one of `cors_origins`.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from aiohttp import web

from backend.api.schemas import ApiError

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
JSON = "application/json"
RAW_BODY_ROUTES = {"/api/states/import": "application/octet-stream"}  # a state file, as exported
TENANT = web.RequestKey("tenant", str)  # whose saved states and prefix cache a request uses (see tenant_of)
ALL_TENANTS = "*"


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: Bearer TOKEN` (the scheme in any case, RFC 7235); "" without that scheme."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def tenant_of(key: str, admin_key: str) -> str:
    """The namespace of an API key: a digest, so the key itself is never kept or logged; the admin key sees
    every namespace; no key at all (auth off) is the one shared namespace ""."""
    if not key:
        return ""
    if admin_key and key == admin_key:
        return ALL_TENANTS
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def guard_middleware(cors_origins: tuple[str, ...]):
    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        is_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method in STATE_CHANGING or is_upgrade:
            origin = request.headers.get("Origin")
            if origin is not None and not origin_allowed(origin, request, cors_origins):
                raise ApiError(403, f"Origin '{origin[:100]}' may not change state here: only this server's "
                                    "own origin and [listen] cors_origins", code="origin_not_allowed")  # fmt: skip
        if request.method in ("POST", "PUT", "PATCH") and request.body_exists:
            wanted = RAW_BODY_ROUTES.get(request.path)
            if request.content_type != JSON and request.content_type != wanted:
                also = f" (or {wanted})" if wanted else ""
                raise ApiError(415, f"Content-Type must be {JSON}{also}, got '{request.content_type}'",
                               code="unsupported_media_type")  # fmt: skip
        return await handler(request)

    return guard


def origin_allowed(origin: str, request: web.Request, cors_origins: tuple[str, ...]) -> bool:
    if "*" in cors_origins or origin in cors_origins:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()  # same origin (any scheme: a TLS proxy)
