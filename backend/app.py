"""create_app(config): assembles the tokenizer, the scheduler (which loads the engine in its own thread), the
served model, routes and middlewares. One cleanup_ctx starts and stops the engine thread; shutdown ends every
stream with `done`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web

from backend.api import admin, chooses, docs, files, openai, responses, static, ws
from backend.api.context import SERVER, Server
from backend.api.guard import guard_middleware
from backend.api.lifecycle import load_model, readiness_middleware, request_id_middleware
from backend.api.middleware import admin_middleware, auth_middleware, cors_headers, error_middleware, preflight
from backend.config import Config, ConfigError, ModelSection
from backend.model_pool import BudgetError, ModelPool, build_group, check_budget, estimate_gpu_bytes, start_group
from backend.tokenizer import Tokenizer

__all__ = ["SERVER", "Server", "create_app", "ssl_context"]

log = logging.getLogger("ai00.app")


def resolve_model_path(section: ModelSection) -> Path:
    """The configured model, or the embedded demo model (the trained tiny RWKV-7, unpacked on first use)."""
    if section.path:
        return Path(section.path)
    from backend.tools.demo_model import ensure_demo_model

    path = ensure_demo_model()
    log.warning("model.path is empty: serving the demo model %s, a 4-layer RWKV-7 trained on a few MB of "
                "public-domain text (assets/models/README.md): it writes simple sentences, no more", path)
    return path


def create_app(config: Config, *, tokenizer: Tokenizer | None = None) -> web.Application:
    """The whole server."""
    tokenizer = tokenizer or Tokenizer.from_file(config.tokenizer.path or None)
    if tokenizer.engine == "hf":
        log.warning("tokenizer: the C matcher is not built (no C compiler at install?): using the ~10x slower "
                    "HF path; `pip install -e .` with gcc or clang present builds it")
    pool = ModelPool(config, [build_group(config, m, resolve_model_path(m), tokenizer) for m in config.served()])
    check_start_budget(pool)
    default = pool.default
    server = Server(config, tokenizer, default.router.bind(None), default.model, pool=pool, group=default)
    listen = config.listen
    keys = (*listen.api_keys, listen.admin_key) if listen.api_keys and listen.admin_key else listen.api_keys
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, guard_middleware(listen.cors_origins),
                     auth_middleware(keys, listen.admin_key),
                     admin_middleware(listen.admin_key, listen.force_pass), readiness_middleware(server)],
        client_max_size=config.limits.max_body_bytes,
    )
    app[SERVER] = server
    for group in pool:
        server.watch_model(group)
    app.cleanup_ctx.append(run_engine)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_grammar_workers)
    app.add_routes(openai.routes(server) + responses.routes(server) + chooses.routes(server) + ws.routes(server)
                   + admin.routes(server) + files.routes(server) + docs.routes(server))  # fmt: skip
    if config.listen.cors_origins:
        app.on_response_prepare.append(cors_headers(config.listen.cors_origins))
        app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.add_routes(static.routes())  # last: every API route wins over the UI's catch-all
    return app


async def run_engine(app: web.Application) -> AsyncIterator[None]:
    """Start the engine thread, which loads the model while the port already answers (/health: 503 until
    app[SERVER].readiness is ready); at exit stop it."""
    pool = app[SERVER].pool
    assert pool is not None
    for group in pool:
        start_group(group)
    loading = asyncio.create_task(load_model(app[SERVER]))
    yield
    loading.cancel()
    await asyncio.get_running_loop().run_in_executor(None, pool.stop)


async def stop_grammar_workers(app: web.Application) -> None:
    if "grammar_workers" in vars(app[SERVER]):  # started only if some request had a grammar
        app[SERVER].grammar_workers.close()


async def end_streams(app: web.Application) -> None:
    """Graceful shutdown: every generation ends with done(cancelled), then sockets close."""
    server = app[SERVER]
    assert server.pool is not None
    await asyncio.get_running_loop().run_in_executor(None, server.pool.stop)
    await asyncio.sleep(0.05)  # let the handlers write their final events
    for sock in list(server.websockets):
        await sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def check_start_budget(pool: ModelPool) -> None:
    """[gpu_budget_bytes]: the configured models' weights must fit before any load starts."""
    loaded = 0
    try:
        for g in pool:
            check_budget(pool, g.model.spec.path, g.section, loaded)
            loaded += estimate_gpu_bytes(g.model.spec.path, g.section, len(g.engines))
    except BudgetError as e:
        raise ConfigError(str(e)) from None


def ssl_context(config: Config):
    """TLS from [listen.tls] cert/key, or None for plain HTTP."""
    tls = config.listen.tls
    if tls is None:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    return ctx
