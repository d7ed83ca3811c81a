"""Operations routes: /health, /metrics, and the admin routes under /api/ in AI00's spirit.

  GET  /api/models/info               the model, its adapters and initial states
  POST /api/models/load               with a new `name`: serve another model beside the others (own engines,
                                      after the GPU budget check); else swap the named (or default) model's file
                                      once its running generations end (409 when busy)
  POST /api/models/unload             stop serving a model ({name}); the others' streams go on (409: the last one)
  GET  /api/models/state              initial states; POST loads one (file or saved handle)
  POST /api/models/state/unload       (or DELETE /api/models/state/{id})
  GET  /api/loras                     LoRA adapters; POST loads one; /switch sets the active ones; /unload
  GET  /api/adapters                  the machine's GPU adapters (`[model] adapter` picks one at start)
  GET  /api/states                    saved-state handles; POST /api/states/save {id} saves a REST generation's
  GET  /api/states/{handle}           export as .st; POST /api/states/import takes one back; DELETE drops it

/health and /metrics need no API key (/metrics has its own, [listen] metrics_key, when set); every other route
is behind the API key when keys are configured (app.auth_middleware); POST/DELETE
routes also need [listen] admin_key when it is set (app.admin_middleware).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from pydantic import ValidationError

from backend.api import admin_schemas as a
from backend.api.guard import TENANT
from backend.api.http import failed_error, json_response, read_json
from backend.api.schemas import ApiError, parse
from backend.config import ModelSection
from backend.gpu.models.info import StateLayout
from backend.messages import DropSavedState, EventSink, Failed, ListSavedStates, SaveState
from backend.metrics import LabelledRegistries
from backend.model_pool import BudgetError, EveryEngine, ModelGroup, load_group, unload_group
from backend.paths import resolve_allowed
from backend.served_model import AdminError, ModelSpec, StateSource

if TYPE_CHECKING:
    from backend.api.context import Server

ST_TYPE = "application/octet-stream"


@contextmanager
def api_errors() -> Iterator[None]:
    try:
        yield
    except AdminError as e:
        raise ApiError(e.status, e.message, param=e.param, code=e.code,
                       type="invalid_request_error" if e.status < 500 else "server_error") from None  # fmt: skip


def routes(server: Server) -> list[web.RouteDef]:
    model = server.model

    async def health(request: web.Request) -> web.Response:
        """200 `ok` once the model serves; 503 `loading` (with progress), `failed`, `draining` or `unhealthy`."""
        s, readiness = server.scheduler, server.readiness
        engines = [e.scheduler for e in server.pool.engines()] if server.pool else [s]
        error = next((e.error for e in engines if e.error is not None), None)
        alive = all(e.alive for e in engines)
        status = readiness.status if readiness.status != "ready" else "ok" if alive else "unhealthy"
        body = {
            "status": status,
            "model": server.model_id,
            "slots": {"total": s.max_batch, "free": s.free_slots},
            "error": readiness.error or (None if error is None else repr(error)),
        }
        if server.pool is not None and (len(server.pool) > 1 or len(engines) > 1):
            body["models"] = [describe_group(g) for g in server.pool]
        if status == "loading":
            body["progress"] = server.model.load_progress().as_dict()
        return json_response(body, 200 if status == "ok" else 503)

    metrics_key = server.config.listen.metrics_key.encode()

    async def metrics(request: web.Request) -> web.Response:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
        if metrics_key and not hmac.compare_digest(offered, metrics_key):
            raise ApiError(401, "metrics: send 'Authorization: Bearer METRICS_KEY' ([listen] metrics_key)",
                           code="invalid_metrics_key")  # fmt: skip
        body = generate_latest(metrics_registry(server))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def allowed(user_path: str, field: str = "path") -> str:
        """A client's path, only inside [files] allowed_dirs (no `..`, no absolute path or symlink out)."""
        try:
            return str(resolve_allowed(server.config.files.roots, user_path, field))
        except ValueError as e:
            raise ApiError(400, str(e), param=field, code="path_not_allowed") from None

    def admin_view(request: web.Request) -> Server:
        """The server as the model an admin request is about sees it (`?model=NAME`, default: the default
        model). Always strict: a change must never land on the default model because of a typo."""
        name = request.query.get("model")
        if name is not None and server.pool is not None and server.pool.get(name) is None:
            raise ApiError(404, f"model: '{name}' is not served", param="model", code="model_not_found")
        return server.route(name)

    def model_of(request: web.Request) -> Any:
        """The model an admin request is about, as one served model whose changes reach every engine of it."""
        view = admin_view(request)
        return EveryEngine(view.group) if view.group is not None else view.model

    def info(request: web.Request) -> dict[str, Any]:
        view = admin_view(request)
        slots = {"total": view.scheduler.max_batch, "free": view.scheduler.free_slots}
        return {**view.model.describe(), "slots": slots}

    # ---- models ----

    async def models_info(request: web.Request) -> web.Response:
        return json_response(info(request))

    async def models_load(request: web.Request) -> web.Response:
        req: a.ModelLoadRequest = parse(a.ModelLoadRequest, await read_json(request))
        pool = server.pool
        if pool is not None and req.name is not None and pool.get(req.name) is None:
            return await models_add(req)
        target = server.route(req.name)
        spec = ModelSpec(Path(allowed(req.path)), req.precision or target.model.spec.precision, req.quant,
                         req.quant_type)  # fmt: skip
        states = [StateSource(s.id, allowed(s.path, f"states.{i}.path"), None, s.default)
                  for i, s in enumerate(req.states)]  # fmt: skip
        loras = [(allowed(x.path, f"loras.{i}.path"), x.alpha) for i, x in enumerate(req.loras)]
        engines = target.group.engines if target.group is not None else ()
        with api_errors():
            for served in [e.model for e in engines] or [target.model]:  # every engine of it serves the new file
                await served.swap(spec, loras, states, req.wait, req.timeout_s)
        return json_response(target.model.describe())

    async def models_add(req: a.ModelLoadRequest) -> web.Response:
        """Serve another model beside the others: its own engines, loaded while the others go on."""
        assert server.pool is not None and req.name is not None
        path = Path(allowed(req.path))
        try:
            section = ModelSection(**{**server.config.model.model_dump(exclude={"states", "loras", "adapters"}),
                "name": req.name, "path": str(path), "precision": req.precision or "fp16", "quant": req.quant,
                "quant_type": req.quant_type, "adapters": tuple(req.adapters),
                "max_batch": req.max_batch or server.config.model.max_batch,
                "loras": [{"path": allowed(x.path, f"loras.{i}.path"), "alpha": x.alpha}
                          for i, x in enumerate(req.loras)],
                "states": [{"path": allowed(x.path, f"states.{i}.path"), "name": x.id or "", "default": x.default}
                           for i, x in enumerate(req.states)]})  # fmt: skip
        except ValidationError as e:
            raise ApiError(400, f"{e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}", param="path") from None
        try:
            group = await load_group(server.pool, section, path, server.tokenizer)
        except BudgetError as e:
            raise ApiError(507, str(e), param="path", code="gpu_budget") from None
        except ValueError as e:
            raise ApiError(400, f"path: the model failed to load ({e})", param="path", code="load_failed") from None
        server.watch_model(group)
        return json_response(describe_group(group))

    async def models_unload(request: web.Request) -> web.Response:
        req: a.ModelUnloadRequest = parse(a.ModelUnloadRequest, await read_json(request))
        pool = server.pool
        if pool is None or len(pool) == 1:
            raise ApiError(409, f"the server always serves one model ({server.model_id}); switch to another with "
                                "POST /api/models/load", code="only_model")  # fmt: skip
        group = pool.get(req.name) if req.name is not None else pool.default
        if group is None:
            raise ApiError(404, f"name: model '{req.name}' is not served", param="name", code="model_not_found")
        if group is pool.default:  # it answers every unknown name: swap its file instead
            raise ApiError(409, f"name: '{group.name}' is the default model; swap it with POST /api/models/load",
                           param="name", code="default_model")  # fmt: skip
        await unload_group(pool, group)
        return json_response({"ok": True})

    # ---- initial states ----

    def state_list(model: Any) -> dict[str, Any]:
        data = [model.describe_state(s) for s in model.states.values()]
        return {"data": data, "default": next((s["id"] for s in data if s["default"]), None)}

    async def states_list(request: web.Request) -> web.Response:
        model = model_of(request)
        return json_response(state_list(model))

    async def states_load(request: web.Request) -> web.Response:
        model = model_of(request)
        req: a.StateLoadRequest = parse(a.StateLoadRequest, await read_json(request))
        with api_errors():
            path = None if req.path is None else allowed(req.path)
            state = await model.load_state(StateSource(req.id or (path and Path(req.path).stem), path, req.handle,
                                                       req.default))  # fmt: skip
        return json_response(model.describe_state(state))

    async def states_unload(request: web.Request) -> web.Response:
        model = model_of(request)
        if request.method == "DELETE":
            state_id = request.match_info["id"]
        else:
            state_id = parse(a.StateUnloadRequest, await read_json(request)).id
        with api_errors():
            await model.unload_state(state_id)
        return json_response({"ok": True})

    # ---- adapters ----

    def adapter_list(model: Any) -> dict[str, Any]:
        return {"data": [model.describe_adapter(x) for x in model.adapters.values()], "active": list(model.active)}

    async def adapters_list(request: web.Request) -> web.Response:
        model = model_of(request)
        return json_response(adapter_list(model))

    async def adapters_load(request: web.Request) -> web.Response:
        model = model_of(request)
        req: a.AdapterLoadRequest = parse(a.AdapterLoadRequest, await read_json(request))
        with api_errors():
            name = req.name or Path(req.path).stem
            await model.load_adapter(allowed(req.path), req.alpha, name, req.active, req.drain, req.timeout_s)
        return json_response(adapter_list(model))

    async def adapters_switch(request: web.Request) -> web.Response:
        model = model_of(request)
        req: a.AdapterSwitchRequest = parse(a.AdapterSwitchRequest, await read_json(request))
        with api_errors():
            await model.switch_adapters(req.refs(), req.drain, req.timeout_s)
        return json_response(adapter_list(model))

    async def adapters_unload(request: web.Request) -> web.Response:
        model = model_of(request)
        if request.method == "DELETE":
            req = parse(a.AdapterUnloadRequest, {"name": request.match_info["name"]})
        else:
            req = parse(a.AdapterUnloadRequest, await read_json(request))
        with api_errors():
            await model.unload_adapter(req.name, req.drain, req.timeout_s)
        return json_response(adapter_list(model))

    # ---- GPU adapters ----

    async def gpu_adapters(request: web.Request) -> web.Response:
        from backend.gpu.adapters import list_adapters

        used = model.describe_gpu() or {}
        data = await asyncio.to_thread(list_adapters)
        for d in data:
            d["in_use"] = all(d[k] == used.get(k) for k in ("name", "backend", "type"))
        return json_response({"data": data})

    # ---- saved states ----

    async def saved_list(request: web.Request) -> web.Response:
        with api_errors():
            handles = await model.ask(ListSavedStates(request.get(TENANT, ""), EventSink()))
        return json_response({"data": [{"handle": h, "bytes": n} for h, n in handles.items()]})

    async def saved_save(request: web.Request) -> web.Response:
        req: a.StateSaveRequest = parse(a.StateSaveRequest, await read_json(request))
        sink = EventSink()
        server.scheduler.submit(SaveState(req.id, sink, req.branch, request.get(TENANT, "")))
        event = await sink.get()
        if isinstance(event, Failed):
            raise failed_error(event)
        return json_response({"handle": event.handle, "bytes": event.bytes})

    async def saved_export(request: web.Request) -> web.Response:
        handle = request.match_info["handle"]
        with api_errors():  # another key's handle is as unknown as none
            data = await model.export_state(handle, request.get(TENANT, ""))
        disposition = f'attachment; filename="{handle}.st"'
        return web.Response(body=data, content_type=ST_TYPE, headers={"Content-Disposition": disposition})

    async def saved_import(request: web.Request) -> web.Response:
        source: bytes | str = await read_body(request, state_file_limit(server))
        if request.content_type != ST_TYPE and source.startswith(b"{"):  # JSON {"path": ...}, not a file
            try:
                source = allowed(parse(a.StateImportRequest, orjson.loads(source)).path)
            except orjson.JSONDecodeError as e:
                raise ApiError(400, f"body is not valid JSON: {e}", code="invalid_json") from None
        with api_errors():
            handle, size = await model.import_state(source)
        return json_response({"handle": handle, "bytes": size})

    async def saved_drop(request: web.Request) -> web.Response:
        handle = request.match_info["handle"]
        with api_errors():
            dropped = await model.ask(DropSavedState(handle, request.get(TENANT, ""), EventSink()))
        if not dropped:
            raise ApiError(404, f"handle: no saved state '{handle}'", param="handle", code="state_not_found")
        return json_response({"ok": True})

    return [
        web.get("/health", health),
        web.get("/metrics", metrics),
        web.get("/api/models/info", models_info),
        web.post("/api/models/load", models_load),
        web.post("/api/models/unload", models_unload),
        web.get("/api/models/state", states_list),
        web.post("/api/models/state", states_load),
        web.post("/api/models/state/unload", states_unload),
        web.delete("/api/models/state/{id}", states_unload),
        web.get("/api/loras", adapters_list),
        web.post("/api/loras", adapters_load),
        web.post("/api/loras/switch", adapters_switch),
        web.post("/api/loras/unload", adapters_unload),
        web.delete("/api/loras/{name}", adapters_unload),
        web.get("/api/adapters", gpu_adapters),
        web.get("/api/states", saved_list),
        web.post("/api/states/save", saved_save),
        web.post("/api/states/import", saved_import),
        web.get("/api/states/{handle}", saved_export),
        web.delete("/api/states/{handle}", saved_drop),
    ]


def describe_group(group: ModelGroup) -> dict[str, Any]:
    """A served model in /health and the admin answers: its name and its engines' slots."""
    return {"name": group.name, "path": str(group.model.spec.path),
            "engines": [{"index": e.index, "slots": e.scheduler.max_batch, "free": e.scheduler.free_slots,
                         "busy": e.scheduler.busy} for e in group.engines]}  # fmt: skip


def metrics_registry(server: Server) -> Collector | CollectorRegistry:
    """The one engine's registry as it is; several engines' merged, each sample labelled with its model and
    engine (ai00:requests_total{model_name="a",engine="0"})."""
    engines = list(server.pool.engines()) if server.pool is not None else []
    if len(engines) <= 1:
        return server.scheduler.metrics.registry
    assert server.pool is not None
    sources = [({"model_name": g.name, "engine": str(e.index)}, e.scheduler.metrics.registry)
               for g in server.pool for e in g.engines]  # fmt: skip
    return LabelledRegistries(sources)


def state_file_limit(server: Server) -> int:
    """The largest state file worth reading for this model: f64 tensors plus a generous header."""
    info = server.model.info
    return 8 * info.n_layer * StateLayout.of(info).size + (1 << 20) if info else 1 << 20


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body up to `limit` bytes (a state file may exceed limits.max_body_bytes, meant for JSON)."""
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"body: more than {limit} bytes, too large for a state of this model",
                           param="body", code="too_large")  # fmt: skip
    if not data:
        raise ApiError(400, 'body: send a state .st file (or JSON {"path": ...})', param="body")
    return bytes(data)
