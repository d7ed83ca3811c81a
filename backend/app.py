"""create_app(config): the tokenizer, the scheduler (which loads the engine in its own thread), routes and
middlewares. One cleanup_ctx starts and stops the engine thread; shutdown ends every stream with `done`."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

from backend.api import admin, chooses, docs, files, openai, static, ws
from backend.api.guard import TENANT, bearer_token, guard_middleware, tenant_of
from backend.api.lifecycle import load_model, readiness_middleware, request_id_middleware
from backend.api.openai import json_response
from backend.api.schemas import ApiError
from backend.config import Config
from backend.grammar.matcher import Grammar, Vocabulary
from backend.grammar.worker import GrammarRequest, GrammarWorkers
from backend.metrics import ModelCollector
from backend.readiness import RETRY_AFTER_S, Readiness
from backend.resources import package_version
from backend.scheduler import Scheduler
from backend.served_model import ModelSpec, ServedModel
from backend.tokenizer import Tokenizer

log = logging.getLogger("ai00.app")

OPEN_PATHS = ("/health", "/api-docs", "/metrics")  # no API key: probes, docs, metrics ([listen] metrics_key)
ADMIN_PATHS = ("/api/models/", "/api/loras", "/api/states", "/api/files/")  # their POST/DELETE need the admin key


@dataclass
class Server:
    """What every route needs, built once by create_app and passed down (no globals)."""

    config: Config
    tokenizer: Tokenizer
    scheduler: Scheduler
    model: ServedModel  # the model file and what the admin routes layered on it; swapped at run time
    created: int = field(default_factory=lambda: int(time.time()))
    websockets: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    readiness: Readiness = field(default_factory=Readiness)  # loading -> ready (or failed) -> draining

    @cached_property
    def grammar_vocab(self) -> Vocabulary:
        """The vocabulary prepared for grammar masks, built on the first request that has a grammar."""
        return Vocabulary(self.tokenizer)

    @cached_property
    def grammar_workers(self) -> GrammarWorkers:
        return GrammarWorkers(self.config.tokenizer.path or None)

    async def compile_grammar(self, req: GrammarRequest) -> Grammar:
        """A request's grammar, checked in a worker process and compiled off the event loop."""
        vocab = await asyncio.to_thread(lambda: self.grammar_vocab)
        return await self.grammar_workers.compile(req, vocab)

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def model_path(self) -> Path:
        return self.model.spec.path

    @property
    def version(self) -> str:
        return package_version()

    @property
    def n_embd(self) -> int:
        return self.model.info.n_embd

    @property
    def sampler_defaults(self) -> dict[str, Any]:
        return self.config.sampler.model_dump(exclude_none=True)

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "ai00"}

    def model_labels(self) -> dict[str, Any] | None:
        """ai00:model_info's labels; None until the model is loaded."""
        info, spec = self.model.info, self.model.spec
        if info is None:
            return None
        return {"model_name": self.model_id, "version": str(info.version), "n_layer": info.n_layer,
                "n_embd": info.n_embd, "n_vocab": info.n_vocab, "precision": spec.precision, "quant": spec.quant,
                "quant_type": spec.quant_type, "max_batch": self.scheduler.max_batch}  # fmt: skip

    def model_summary(self) -> dict[str, Any]:
        info, path = self.model.info, self.model_path
        size = path.stat().st_size if path.is_file() else None
        return {"id": self.model_id, "version": str(info.version), "size": size,
                "n_layer": info.n_layer, "n_embd": info.n_embd, "n_vocab": info.n_vocab}


SERVER = web.AppKey("server", Server)


def resolve_model_path(config: Config) -> Path:
    """The configured model, or the embedded demo model (generated on first use)."""
    if config.model.path:
        return Path(config.model.path)
    from backend.tools.demo_model import ensure_demo_model

    path = ensure_demo_model()
    log.warning("model.path is empty: serving the demo model %s -- it is UNTRAINED, its output is noise", path)
    return path


def create_app(config: Config, *, load_engine: Callable[[int], Any] | None = None,
               tokenizer: Tokenizer | None = None) -> web.Application:
    """The whole server; tests pass their own engine loader only to pick a model or slot count."""
    model = ServedModel(config, ModelSpec(
        resolve_model_path(config), config.model.precision, config.model.quant, config.model.quant_type
    ))
    tokenizer = tokenizer or Tokenizer.from_file(config.tokenizer.path or None)
    if tokenizer.engine == "hf":
        log.warning("tokenizer: the C matcher is not built (no C compiler at install?): using the ~10x slower "
                    "HF path; `pip install -e .` with gcc or clang present builds it")
    m = config.model
    scheduler = Scheduler(
        load_engine or model.load_engine,
        tokenizer,
        max_batch=m.max_batch,
        token_chunk_size=m.token_chunk_size,
        prefix_cache=m.prefix_cache,
        max_queue=config.limits.max_queue,
    )
    model.scheduler = scheduler
    server = Server(config, tokenizer, scheduler, model)
    listen = config.listen
    keys = (*listen.api_keys, listen.admin_key) if listen.api_keys and listen.admin_key else listen.api_keys
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, guard_middleware(listen.cors_origins),
                     auth_middleware(keys, listen.admin_key),
                     admin_middleware(listen.admin_key, listen.force_pass), readiness_middleware(server)],
        client_max_size=config.limits.max_body_bytes,
    )
    app[SERVER] = server
    scheduler.metrics.registry.register(ModelCollector(
        lambda: server.model_labels(), lambda: getattr(scheduler.engine, "gpu_bytes", None)))  # fmt: skip
    app.cleanup_ctx.append(run_engine)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_grammar_workers)
    app.add_routes(openai.routes(server) + chooses.routes(server) + ws.routes(server) + admin.routes(server)
                   + files.routes(server) + docs.routes(server))  # fmt: skip
    if config.listen.cors_origins:
        app.on_response_prepare.append(cors_headers(config.listen.cors_origins))
        app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.add_routes(static.routes())  # last: every API route wins over the UI's catch-all
    return app


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def run_engine(app: web.Application) -> AsyncIterator[None]:
    """Start the engine thread, which loads the model while the port already answers (/health: 503 until
    app[SERVER].readiness is ready); at exit stop it."""
    scheduler = app[SERVER].scheduler
    scheduler.start()
    loading = asyncio.create_task(load_model(app[SERVER]))
    yield
    loading.cancel()
    await asyncio.get_running_loop().run_in_executor(None, scheduler.stop)


async def stop_grammar_workers(app: web.Application) -> None:
    if "grammar_workers" in vars(app[SERVER]):  # started only if some request had a grammar
        app[SERVER].grammar_workers.close()


async def end_streams(app: web.Application) -> None:
    """Graceful shutdown: every generation ends with done(cancelled), then sockets close."""
    server = app[SERVER]
    await asyncio.get_running_loop().run_in_executor(None, server.scheduler.stop)
    await asyncio.sleep(0.05)  # let the handlers write their final events
    for sock in list(server.websockets):
        await sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


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
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"

    return add


def ssl_context(config: Config):
    """TLS from [listen.tls] cert/key, or None for plain HTTP."""
    tls = config.listen.tls
    if tls is None:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    return ctx
