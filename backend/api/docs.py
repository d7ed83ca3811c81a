"""/api-docs (a readable page) and /api-docs/openapi.json, both generated from the pydantic models in schemas.py."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend.api import admin_schemas as a
from backend.api import responses_schemas as r
from backend.api import schemas as s
from backend.api.http import json_response

if TYPE_CHECKING:
    from backend.api.context import Server

# (method, path, summary, request model, response model (None: a .st file), streams)
OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, bool]] = [
    ("get", "/api/oai/v1/models", "The served model", None, s.ModelList, False),
    ("get", "/api/oai/v1/models/{id}", "One model by id", None, s.ModelCard, False),
    ("post", "/api/oai/v1/completions", "Continue a prompt, token ids, or a list of either (choice i * n + j is "
     "prompt i's j-th); best_of keeps the n candidates with the highest cumulative logprob; echo with logprobs "
     "gives the prompt tokens' logprobs (the first null); a non-empty suffix is refused (RWKV has no "
     "fill-in-the-middle)", s.CompletionRequest, s.CompletionResponse, True),
    ("post", "/api/oai/v1/chat/completions", "Answer a chat, in the prompt format of [chat] template (AI00's "
     "User:/Assistant: by default). Tools are listed in a System turn and called as "
     '<tool_call>{"name": ..., "arguments": {...}}</tool_call>, constrained to their parameters\' schema '
     "(required/named: only calls; auto: text, or calls once the model writes <tool_call>); a leading "
     "<think>...</think> comes back as reasoning_content", s.ChatCompletionRequest, s.ChatCompletionResponse, True),
    ("post", "/api/oai/v1/responses", "Responses API: text or messages, instructions, max_output_tokens, sampling, "
     "function tools, typed SSE events with `stream` (`event: TYPE` lines, no `[DONE]`); `previous_response_id` "
     "continues from that response's RWKV state (only the new turn is prefilled: "
     "usage.input_tokens_details.cached_tokens)", r.ResponseRequest, r.ResponseObject, True),
    ("get", "/api/oai/v1/responses/{id}", "A stored response (this API key's only)", None, r.ResponseObject, False),
    ("delete", "/api/oai/v1/responses/{id}", "Forget a stored response and its saved state", None,
     r.DeletedResponse, False),
    ("post", "/api/oai/v1/embeddings", "Embed texts: last-token pooled final-layer ln2 state, L2-normalized",
     s.EmbeddingRequest, s.EmbeddingResponse, False),
    ("post", "/api/oai/v1/chooses", "Rank continuations of an input by perplexity (one prefill, one batched "
     "step over forked states; `calibrate` divides by each choice's likelihood after END_OF_TEXT)",
     s.ChooseRequest, s.ChooseResponse, False),
    # admin (backend/api/admin.py)
    ("get", "/api/models/info", "The model (`?model=NAME`, as every admin route of a model), its LoRA adapters and "
     "initial states", None, a.ModelInfoResponse, False),
    ("post", "/api/models/load", "With a new `name`: serve another model beside the others (its own engines, after "
     "the gpu_budget_bytes check; answers its name and engines); else swap the named or default model's file once "
     "its running generations end (409 if busy)", a.ModelLoadRequest, a.ModelInfoResponse, False),
    ("post", "/api/models/unload", "Stop serving a model; the others' streams go on (409 for the default or the "
     "only model)", a.ModelUnloadRequest, a.Ok, False),
    ("get", "/api/models/state", "Loaded initial states (`state` of a generation)", None, a.InitialStateList, False),
    ("post", "/api/models/state", "Load an initial state from a tuned-state file or a saved-state handle",
     a.StateLoadRequest, a.InitialStateInfo, False),
    ("post", "/api/models/state/unload", "Unload an initial state", a.StateUnloadRequest, a.Ok, False),
    ("delete", "/api/models/state/{id}", "Unload an initial state", None, a.Ok, False),
    ("get", "/api/loras", "LoRA adapters, loaded and active", None, a.AdapterList, False),
    ("post", "/api/loras", "Load a LoRA adapter (and merge it, hot)", a.AdapterLoadRequest, a.AdapterList, False),
    ("post", "/api/loras/switch", "Set the merged adapters, in order (hot)", a.AdapterSwitchRequest,
     a.AdapterList, False),
    ("post", "/api/loras/unload", "Unload an adapter (unmerged first, hot)", a.AdapterUnloadRequest,
     a.AdapterList, False),
    ("delete", "/api/loras/{name}", "Unload an adapter at once", None, a.AdapterList, False),
    ("get", "/api/adapters", "GPU adapters of this machine (`[model] adapter` = index or name picks one)", None,
     a.GpuAdapterList, False),
    ("get", "/api/models/list", "Model files under the allowed folders' models/ (size, version from the header)",
     None, a.ModelFileList, False),
    ("post", "/api/files/dir", "List a folder inside [files] allowed_dirs", a.DirRequest, a.DirListing, False),
    ("post", "/api/files/config/load", "Read a Config.toml (text and parsed)", a.ConfigLoadRequest, a.ConfigFile,
     False),
    ("post", "/api/files/config/save", "Write a Config.toml, only if valid (400 and the old file kept if not)",
     a.ConfigSaveRequest, a.ConfigFile, False),
    ("get", "/api/states", "Saved-state handles", None, a.SavedStateList, False),
    ("post", "/api/states/save", "Save the state of a REST generation (by its response `id`)",
     a.StateSaveRequest, a.SavedState, False),
    ("post", "/api/states/import", "A handle for a state file: JSON {path} on the server, or the .st file itself "
     "as an application/octet-stream body", a.StateImportRequest, a.SavedState, False),
    ("get", "/api/states/{handle}", "Export a saved state as a .st file (layout: backend/state_file.py)", None,
     None, False),
    ("delete", "/api/states/{handle}", "Forget a saved state", None, a.Ok, False),
]
WS_FRAMES = (s.SessionUpdateFrame, s.GenerateFrame, s.UpdateFrame, s.CancelFrame, s.StateSaveFrame, s.PingFrame)


def openapi(server: Server) -> dict[str, Any]:
    models = {m for op in OPERATIONS for m in (op[3], op[4]) if m is not None} | {s.ErrorResponse, *WS_FRAMES}
    keys = sorted(models, key=lambda m: m.__name__)
    refs, top = models_json_schema([(m, "validation") for m in keys], ref_template="#/components/schemas/{model}")
    ref = {m: refs[(m, "validation")]["$ref"] for m in keys}
    error = {"description": "error", "content": {"application/json": {"schema": {"$ref": ref[s.ErrorResponse]}}}}
    paths: dict[str, Any] = {}
    for method, path, summary, req, resp, streams in OPERATIONS:
        if resp is None:
            content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        else:
            content = {"application/json": {"schema": {"$ref": ref[resp]}}}
        if streams:
            # OpenAPI 3.1: a text/event-stream `schema` describes each event
            content["text/event-stream"] = {"schema": {
                "type": "object", "required": ["data"], "description": "one SSE event",
                "properties": {"data": {"type": "string", "description": "a JSON chunk; `[DONE]` last"}}}}
        op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "ok", "content": content},
                                                                "default": error}}
        if req is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": ref[req]}}}}
        if names := re.findall(r"\{(\w+)\}", path):
            string = {"type": "string"}
            op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": string} for n in names]
        paths.setdefault(path, {})[method] = op
    paths["/api/ws"] = {"get": {
        "summary": "WebSocket protocol v1 (client frames: components *Frame; see ws-protocol.md)",
        "responses": {"101": {"description": "switching protocols"}, "401": error,
                      "400": {**error, "description": "not a WebSocket upgrade request"}},
    }}
    paths["/health"] = {"get": {"summary": "Liveness of the engine thread", "security": [],
                                "responses": {"200": {"description": "ok"}, "503": {"description": "unhealthy"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition format"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "AI00 Server (Python)", "version": server.version,
                 "description": "OpenAI-compatible RWKV server. Unknown request fields are ignored, except these "
                                "sampling fields of other servers, refused (400 naming the field) unless null or "
                                "neutral, since ignoring them would change the result: "
                                f"{', '.join(s.UNSUPPORTED_SAMPLING)}. "
                                "Every /api/oai/v1/ route is also under /v1/ and "
                                "/api/oai/."},
        "servers": [{"url": "/"}],
        "components": {"schemas": top.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}] if server.config.listen.api_keys else [],
        "paths": paths,
    }


def render_page(spec: dict[str, Any]) -> str:
    """A plain page: each route with its summary and the fields of its request body."""
    schemas = spec["components"]["schemas"]
    parts = [f"<h1>{html.escape(spec['info']['title'])} {html.escape(spec['info']['version'])}</h1>",
             f"<p>{html.escape(spec['info']['description'])} Machine-readable: "
             "<a href='/api-docs/openapi.json'>openapi.json</a>.</p>"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            title = f"<code>{method.upper()} {html.escape(path)}</code>"
            parts.append(f"<h2>{title}</h2><p>{html.escape(op['summary'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(fields_table(schemas[body["$ref"].rsplit("/", 1)[1]]))
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><meta charset=utf-8><title>API docs</title><style>{style}</style>{''.join(parts)}"


def fields_table(schema: dict[str, Any]) -> str:
    rows = []
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type") or " | ".join(
            str(a.get("type", a.get("$ref", "").rsplit("/", 1)[-1])) for a in prop.get("anyOf", [])
        )
        notes = ", ".join(f"{k} {prop[k]}" for k in ("minimum", "maximum", "default", "description") if k in prop)
        rows.append(f"<tr><td><code>{name}</code></td><td>{html.escape(str(kind))}</td><td>{html.escape(notes)}</td></tr>")
    return "<table><tr><th>field</th><th>type</th><th>notes</th></tr>" + "".join(rows) + "</table>"


def routes(server: Server) -> list[web.RouteDef]:
    spec = openapi(server)
    page = render_page(spec)

    async def spec_json(request: web.Request) -> web.Response:
        return json_response(spec)

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    return [web.get("/api-docs", docs_page), web.get("/api-docs/", docs_page),
            web.get("/api-docs/openapi.json", spec_json)]
