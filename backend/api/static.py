"""The browser UI: the vite build in backend/static/ (package data) served at `/`, with SPA fallback.

Hashed files under /assets/ never change, so browsers keep them for a year; index.html is revalidated on
every load so a new build shows at once. create_app registers these routes after every API route, so API
paths always win over the catch-all, and the UI's routes need no API key (the page asks for one itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from backend.resources import STATIC

log = logging.getLogger("ai00.static")

IMMUTABLE = "public, max-age=31536000, immutable"
UI_ROUTES = ("ui.assets", "ui.page")
NOT_UI = ("/api/", "/v1/", "/api-docs", "/health", "/metrics")  # unknown paths here: API 404s (JSON), not pages
BUILD_HINT = "run `npm ci && npm run build` in the repository root (Node.js >= 20.19)"


def routes(root: Path = STATIC) -> list[web.RouteDef]:
    """GET /assets/* (immutable) and every other non-API path (index.html); a hint page when not built."""
    index = root / "index.html"
    if not index.is_file():
        log.warning("the web UI is not built (%s is missing): %s; serving the API only", index, BUILD_HINT)
        return [web.route("*", "/{path:.*}", not_built, name="ui.page")]
    root = root.resolve()

    async def asset(request: web.Request) -> web.FileResponse:
        file = inside(root / "assets", request.match_info["path"])
        if file is None:
            raise web.HTTPNotFound()
        return web.FileResponse(file, headers={"Cache-Control": IMMUTABLE})

    async def page(request: web.Request) -> web.FileResponse:
        path = request.match_info["path"]
        if request.path.startswith(NOT_UI):
            raise web.HTTPNotFound()
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        file = inside(root, path) if path else None
        if file is not None:  # a top-level file of the build (e.g. robots.txt)
            return web.FileResponse(file, headers={"Cache-Control": "no-cache"})
        if "." in path.rsplit("/", 1)[-1]:  # a missing file is a 404, not a page
            raise web.HTTPNotFound()
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    return [web.get("/assets/{path:.+}", asset, name="ui.assets"), web.route("*", "/{path:.*}", page, name="ui.page")]


def inside(root: Path, rel: str) -> Path | None:
    """The file `rel` under `root`, or None when missing or outside it (`..`)."""
    file = (root / rel).resolve()
    return file if file.is_relative_to(root) and file.is_file() else None


async def not_built(request: web.Request) -> web.Response:
    if request.path.startswith(NOT_UI):
        raise web.HTTPNotFound()
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    return web.Response(
        status=503,
        content_type="text/html",
        text=f"<!doctype html><title>AI00: UI not built</title><h1>The web UI is not built</h1>"
        f"<p>To build it, {BUILD_HINT}, then restart the server. The API works without it: "
        f'see <a href="/api-docs">/api-docs</a>.</p>',
    )


def is_ui(request: web.Request) -> bool:
    """Whether the request is for the UI's own routes, which are open without an API key."""
    return request.match_info.route.name in UI_ROUTES
