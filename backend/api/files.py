"""Model files and config files over the API, as AI00 offers them; paths only inside [files] allowed_dirs.

GET  /api/models/list          .st/.pth files under each allowed folder's models/ (size, detected version)
POST /api/files/dir            {path}: a folder's entries
POST /api/files/config/load    {path}: a Config.toml's text and its parsed, validated content
POST /api/files/config/save    {path, content}: TOML text, validated as a Config (400, file untouched, if not)
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from backend.api import admin_schemas as a
from backend.api.http import json_response, read_json
from backend.api.schemas import ApiError, parse
from backend.config import Config, ConfigError
from backend.paths import resolve_allowed

if TYPE_CHECKING:
    from backend.api.context import Server

MODEL_SUFFIXES = (".st", ".pth")
MAX_LISTED = 1000


def routes(server: Server) -> list[web.RouteDef]:
    roots = server.config.files.roots

    def allowed(user_path: str, field: str = "path") -> Path:
        try:
            return resolve_allowed(roots, user_path, field)
        except ValueError as e:
            raise ApiError(400, str(e), param=field, code="path_not_allowed") from None

    async def models_list(request: web.Request) -> web.Response:
        return json_response({"data": await asyncio.to_thread(list_models, roots)})

    async def files_dir(request: web.Request) -> web.Response:
        folder = allowed(parse(a.DirRequest, await read_json(request)).path)
        if not folder.is_dir():
            raise ApiError(404, f"path: no folder '{folder}'", param="path", code="not_found")
        return json_response({"path": str(folder), "data": await asyncio.to_thread(list_dir, folder)})

    async def config_load(request: web.Request) -> web.Response:
        path = allowed(parse(a.ConfigLoadRequest, await read_json(request)).path)
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as e:
            raise ApiError(404, f"path: cannot read '{path}' ({e})", param="path", code="not_found") from None
        return json_response({"path": str(path), "content": text, "config": validated(text, roots)})

    async def config_save(request: web.Request) -> web.Response:
        req: a.ConfigSaveRequest = parse(a.ConfigSaveRequest, await read_json(request))
        path = allowed(req.path)
        if path.suffix != ".toml":
            raise ApiError(400, "path: a config file ends in .toml", param="path")
        if not path.parent.is_dir():
            raise ApiError(400, f"path: no folder '{path.parent.name}' to save into", param="path", code="not_found")
        config = validated(req.content, roots)
        refuse_weaker(config, server.config)
        await asyncio.to_thread(write_atomically, path, req.content)
        return json_response({"path": str(path), "config": config})

    return [
        web.get("/api/models/list", models_list),
        web.post("/api/files/dir", files_dir),
        web.post("/api/files/config/load", config_load),
        web.post("/api/files/config/save", config_save),
    ]


def validated(text: str, roots: tuple[Path, ...]) -> dict[str, Any]:
    """The TOML as a dict, if it parses and makes a valid Config; else 400 naming what is wrong. The files it
    names are checked to lie inside `roots` before anything looks at them, so that the answer never tells
    whether a file elsewhere on the host exists."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # tomllib recurses once per nested table
        raise ApiError(400, f"content: not TOML ({str(e)[:200] or type(e).__name__})", param="content",
                       code="invalid_config") from None  # fmt: skip
    for field, value in config_paths(data):
        try:
            resolve_allowed(roots, value, f"content: {field}")
        except ValueError as e:
            raise ApiError(400, str(e), param="content", code="path_not_allowed") from None
    try:
        Config.from_dict(data)
    except ConfigError as e:
        raise ApiError(400, f"content: invalid config: {e}", param="content", code="invalid_config") from None
    return data


def config_paths(data: Any) -> list[tuple[str, str]]:
    """(field, path) for every file a config names."""
    if not isinstance(data, dict):
        return []
    model, listen = data.get("model"), data.get("listen")
    model = model if isinstance(model, dict) else {}
    tls = listen.get("tls") if isinstance(listen, dict) else None
    tokenizer = data.get("tokenizer")
    found = [("model.path", model.get("path")),
             ("tokenizer.path", tokenizer.get("path") if isinstance(tokenizer, dict) else None),
             ("listen.tls.cert", tls.get("cert") if isinstance(tls, dict) else None),
             ("listen.tls.key", tls.get("key") if isinstance(tls, dict) else None)]  # fmt: skip
    for section in ("states", "loras"):
        entries = model.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            found.append((f"model.{section}.{i}.path", entry.get("path") if isinstance(entry, dict) else None))
    return [(field, value) for field, value in found if isinstance(value, str) and value]


def refuse_weaker(data: dict[str, Any], running: Config) -> None:
    """A config written through the API may not open what the running one keeps closed: more folders, no
    keys where there are keys, force_pass, more CORS origins, the network without keys."""
    new = Config.from_dict(data)
    old_roots = [r.resolve() for r in running.files.roots]
    problems = []
    inside = lambda d: any(Path(d).resolve().is_relative_to(r) for r in old_roots)  # noqa: E731
    if widened := [d for d in new.files.allowed_dirs if not inside(d)]:
        problems.append(f"files.allowed_dirs: {widened[0]!r} is outside the folders allowed now")
    if running.listen.api_keys and not new.listen.api_keys:
        problems.append("listen.api_keys: may not be emptied through the API")
    if running.listen.admin_key and not new.listen.admin_key:
        problems.append("listen.admin_key: may not be removed through the API")
    if new.listen.force_pass and not running.listen.force_pass:
        problems.append("listen.force_pass: may not be turned on through the API")
    if extra := set(new.listen.cors_origins) - set(running.listen.cors_origins):
        problems.append(f"listen.cors_origins: may not add {sorted(extra)[0]!r} through the API")
    if new.listen.ip not in ("127.0.0.1", "::1", "localhost") and not new.listen.api_keys:
        problems.append(f"listen.ip: {new.listen.ip!r} serves the network, which needs api_keys")
    if problems:
        raise ApiError(403, "content: " + "; ".join(problems), param="content", code="config_not_allowed")


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def list_dir(folder: Path) -> list[dict[str, Any]]:
    entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))[:MAX_LISTED]
    return [{"name": p.name, "dir": p.is_dir(), "size": None if p.is_dir() else p.stat().st_size} for p in entries]


def list_models(roots: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Model files with their version from the header alone (no tensor data read); unreadable: version null."""
    from backend.gpu.loader import iter_model
    from backend.st_file import check_model_header

    out = []
    for root in roots:
        folder = root / "models" if (root / "models").is_dir() else root
        files = sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
        for p in files[:MAX_LISTED]:
            entry = {"name": str(p.relative_to(folder)), "path": str(p), "size": p.stat().st_size, "version": None,
                     "n_layer": None, "n_embd": None}  # fmt: skip
            if p.suffix == ".st":
                try:
                    check_model_header(p)  # before the loader sizes anything from the header
                    info, _ = iter_model(p)
                    entry |= {"version": str(info.version), "n_layer": info.n_layer, "n_embd": info.n_embd}
                except Exception:  # an adapter, a state, or no model at all: listed without a version
                    pass
            out.append(entry)
    return out
