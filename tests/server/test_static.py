"""The web UI's routes: index.html for any page path (SPA fallback), year-long caching of hashed assets,
API paths never answered with the page, and a hint instead of the UI when it is not built."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx2 as httpx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backend.api import static
from tests.server.conftest import LiveServer


def fake_build(root: Path) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><div id=app></div>")
    (root / "assets" / "index-3f2a9c.js").write_text("console.log('ui')")
    (root / "robots.txt").write_text("User-agent: *")
    (root.parent / "secret.txt").write_text("not served")
    return root


def get_all(root: Path, paths: list[str]) -> dict[str, tuple[int, str, str]]:
    """GET each path from an app holding only the UI routes: path -> (status, Cache-Control, body)."""

    async def run() -> dict[str, tuple[int, str, str]]:
        app = web.Application()
        app.add_routes(static.routes(root))
        async with TestClient(TestServer(app)) as client:
            out = {}
            for p in paths:
                r = await client.get(p)
                out[p] = (r.status, r.headers.get("Cache-Control", ""), await r.text())
            return out

    return asyncio.run(run())


def test_page_paths_get_index_html_revalidated_and_assets_cached_for_a_year(tmp_path: Path):
    got = get_all(
        fake_build(tmp_path / "static"),
        ["/", "/chat", "/paper", "/chat/some/deep/link", "/assets/index-3f2a9c.js", "/robots.txt"],
    )
    for page in ("/", "/chat", "/paper", "/chat/some/deep/link"):
        assert got[page][0] == 200 and "id=app" in got[page][2], page
        assert got[page][1] == "no-cache", page
    assert got["/assets/index-3f2a9c.js"][:2] == (200, "public, max-age=31536000, immutable")
    assert got["/robots.txt"][0] == 200


def test_missing_files_and_unknown_api_paths_are_404_not_the_page(tmp_path: Path):
    paths = [
        "/assets/index-old.js",
        "/favicon.ico",
        "/api/nope",
        "/api-docs/nope",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
    ]
    got = get_all(fake_build(tmp_path / "static"), paths)
    for p in paths:
        assert got[p][0] == 404, (p, got[p])
        assert "not served" not in got[p][2]


def test_without_a_build_the_server_logs_how_to_build_and_answers_pages_with_the_hint(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="ai00.static"):
        got = get_all(tmp_path / "nothing", ["/", "/paper", "/api/nope"])
    assert "npm ci && npm run build" in caplog.text
    assert got["/"][0] == 503 and "npm ci && npm run build" in got["/"][2]
    assert got["/paper"][0] == 503
    assert got["/api/nope"][0] == 404


def test_api_routes_win_over_the_ui_and_only_the_ui_is_open_without_a_key(live: LiveServer):
    page = httpx.get(f"{live.base}/", timeout=30)
    assert page.status_code in (200, 503)  # 503: the UI is not built in this checkout; never 401
    assert page.headers["Content-Type"].startswith("text/html")
    models = httpx.get(f"{live.oai}/models", timeout=30)
    assert models.status_code == 401 and models.json()["error"]["code"] == "invalid_api_key"
    models = httpx.get(f"{live.oai}/models", headers=live.headers, timeout=30)
    assert models.status_code == 200 and models.json()["object"] == "list"
    health = httpx.get(f"{live.base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    missing = httpx.get(f"{live.base}/api/oai/v1/nope", headers=live.headers, timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
