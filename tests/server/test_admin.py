"""Admin routes against a live server of its own (they change the model, so the shared server stays clean):
LoRA hot switching mid-stream, tuned initial states, saved-state export/import, model hot swap, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from backend.client import Client
from backend.config import Config
from backend.gpu.loader import read_model
from backend.st_file import read_st
from backend.tools.demo_model import write_demo_model
from tests.adapters import random_lora, random_time_state, save_lora, save_time_state
from tests.server.conftest import API_KEY, MODEL, MODEL_ID, TEST_CONFIG, LiveServer, start_server, stop_server

GREEDY = {"temperature": 0.0, "max_tokens": 4}  # ~50 ms a token on lavapipe
STREAM_TOKENS = 24  # long enough for an admin request sent after the first delta to arrive mid-stream


@dataclass(frozen=True)
class Files:
    demo: Path
    other: Path  # another model of the demo's shape, to swap to
    lora: Path
    state: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("admin")
    demo = MODEL
    info, tensors = read_model(demo)
    targets = [f"blocks.{i}.{m}.weight" for i in range(info.n_layer) for m in ("att.key", "att.value", "ffn.key")]
    lora = save_lora(root / "tiny-lora.st", random_lora(tensors, targets, rank=8, seed=5, std=0.3))
    state = save_time_state(root / "tuned.st", random_time_state(info, std=2.0))
    return Files(demo, write_demo_model(root / "other-tiny.st", seed=11), lora, state)


@pytest.fixture(scope="module")
def admin(files: Files) -> Iterator[LiveServer]:
    states = [{"path": str(files.state), "name": "from-config"}]
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": 4, "prefix_cache": 2, "states": states},
              "files": {"allowed_dirs": [str(files.lora.parent), str(files.demo.parent)]}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def call(live: LiveServer, method: str, path: str, **kwargs) -> httpx.Response:
    kwargs.setdefault("headers", live.headers)
    return httpx.request(method, f"{live.base}{path}", timeout=120, **kwargs)


def ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def complete(live: LiveServer, prompt: str = "Once upon a time", **fields) -> str:
    body = {"prompt": prompt, **GREEDY, **fields}
    return ok(call(live, "POST", "/api/oai/v1/completions", json=body))["choices"][0]["text"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def during_a_stream(live: LiveServer, method: str, path: str, body: dict, **params) -> tuple[str, dict, int]:
    """Start a greedy WebSocket generation, send an admin request after its first delta; (its text, its done
    frame, the admin response's status)."""
    async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
        gen = await c.generate("Once upon a time", params={**GREEDY, "max_tokens": STREAM_TOKENS, **params})
        response = None
        async for frame in gen:
            if frame["type"] == "delta" and response is None:
                response = asyncio.create_task(asyncio.to_thread(call, live, method, path, json=body))
        r = await response
        return gen.texts[0], gen.dones[0], r.status_code


ADMIN_ROUTES = [("GET", "/api/models/info"), ("POST", "/api/models/load"), ("POST", "/api/models/unload"),
                ("GET", "/api/models/state"), ("POST", "/api/models/state"), ("POST", "/api/models/state/unload"),
                ("DELETE", "/api/models/state/{id}"), ("GET", "/api/loras"), ("POST", "/api/loras"),
                ("POST", "/api/loras/switch"), ("POST", "/api/loras/unload"), ("DELETE", "/api/loras/{name}"),
                ("GET", "/api/states"), ("POST", "/api/states/save"), ("POST", "/api/states/import"),
                ("GET", "/api/states/{handle}"), ("DELETE", "/api/states/{handle}")]  # fmt: skip


def test_admin_routes_need_the_key_and_are_documented(admin: LiveServer) -> None:
    spec = httpx.get(f"{admin.base}/api-docs/openapi.json").json()
    for method, path in ADMIN_ROUTES:
        assert method.lower() in spec["paths"][path], (method, path)
        r = call(admin, method, path.replace("{", "").replace("}", ""), json={}, headers={"Authorization": "Bearer no"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (method, path)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/api/models/load", {"path": "nope.st"}, 400, "path"),
        ("POST", "/api/models/load", {"path": "x.st", "precision": "int3"}, 400, "precision"),
        ("POST", "/api/models/load", {"path": "x.st", "quant": 4, "quant_type": "q3"}, 400, "quant_type"),
        ("POST", "/api/models/state", {"path": "nope.st"}, 400, "path"),
        ("POST", "/api/models/state", {"id": "a b", "path": "x.st"}, 400, "id"),
        ("POST", "/api/models/state", {"id": "x", "handle": "state-nope"}, 404, "handle"),
        ("POST", "/api/models/state/unload", {"id": "nope"}, 404, "id"),
        ("POST", "/api/loras", {"path": "nope.st"}, 400, "path"),
        ("POST", "/api/loras", {"path": "x.st", "alpha": "big"}, 400, "alpha"),
        ("POST", "/api/loras/switch", {"active": ["nope"]}, 404, "active.0"),
        ("POST", "/api/loras/unload", {"name": "nope"}, 404, "name"),
        ("POST", "/api/states/save", {"id": "cmpl-nope"}, 404, "id"),
        ("POST", "/api/states/import", {"path": "nope.st"}, 400, "path"),
        ("POST", "/api/loras/switch", {"active": [], "drain": True, "extra": 1}, 400, "extra"),
    ],
)
def test_bad_admin_input_is_refused_naming_the_field(
    admin: LiveServer, method: str, path: str, body: dict, status: int, param: str
) -> None:
    r = call(admin, method, path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_files_that_do_not_fit_the_model_are_400_naming_the_field_and_tensor(admin: LiveServer, files: Files) -> None:
    r = call(admin, "POST", "/api/loras", json={"path": str(files.state)})  # a state is no adapter
    assert r.status_code == 400 and r.json()["error"]["param"] == "path" and "time_state" not in r.json()["error"]
    r = call(admin, "POST", "/api/models/state", json={"path": str(files.lora)})  # an adapter is no state
    assert r.status_code == 400 and "blocks.0.att.key.lora_A" in r.json()["error"]["message"]
    binary = {**admin.headers, "Content-Type": "application/octet-stream"}
    r = call(admin, "POST", "/api/states/import", content=b"not a state", headers=binary)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = call(admin, "POST", "/api/models/unload", json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "only_model"


def test_adapter_switch_mid_stream_keeps_the_stream_going(admin: LiveServer, files: Files) -> None:
    plain = complete(admin)
    load = {"path": str(files.lora), "alpha": 8.0}
    text, done, status = run(during_a_stream(admin, "POST", "/api/loras", load))
    assert status == 200 and done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == STREAM_TOKENS
    assert text.startswith(plain[:1])  # the switch came after the first delta
    listed = ok(call(admin, "GET", "/api/loras"))
    assert listed["active"] == ["tiny-lora"] and listed["data"][0]["rank"] == 8
    with_lora = complete(admin)
    assert with_lora != plain

    # drain: the running stream finishes on the weights it started with, then the adapter goes
    text, done, status = run(during_a_stream(admin, "POST", "/api/loras/switch", {"active": [], "drain": True}))
    assert status == 200 and done["finish_reason"] == "length"
    assert text.startswith(with_lora) and complete(admin) == plain
    ok(call(admin, "POST", "/api/loras/switch", json={"active": [{"name": "tiny-lora", "alpha": 8.0}]}))
    assert complete(admin) == with_lora
    assert ok(call(admin, "DELETE", "/api/loras/tiny-lora"))["data"] == []
    assert complete(admin) == plain


def test_tuned_state_changes_the_output_and_equals_its_file_imported_as_a_handle(
    admin: LiveServer, files: Files
) -> None:
    plain = complete(admin)
    loaded = ok(call(admin, "POST", "/api/models/state", json={"path": str(files.state), "id": "tuned"}))
    assert loaded["id"] == "tuned" and not loaded["default"]
    tuned = complete(admin, state="tuned")
    assert tuned != plain and complete(admin, state="from-config") == tuned
    handle = ok(call(admin, "POST", "/api/states/import", json={"path": str(files.state)}))["handle"]
    assert complete(admin, state=handle) == tuned

    ok(call(admin, "POST", "/api/models/state", json={"handle": handle, "id": "tuned-default", "default": True}))
    assert ok(call(admin, "GET", "/api/models/state"))["default"] == "tuned-default"
    assert complete(admin) == tuned and complete(admin, state="") == plain  # "": the zero state
    r = call(admin, "POST", "/api/models/state", json={"path": str(files.state), "id": "tuned"})
    assert r.status_code == 409 and r.json()["error"]["param"] == "id"
    ok(call(admin, "DELETE", "/api/models/state/tuned-default"))
    ok(call(admin, "POST", "/api/models/state/unload", json={"id": "tuned"}))
    assert complete(admin) == plain
    r = call(admin, "POST", "/api/oai/v1/completions", json={"prompt": "x", "state": "tuned"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "state"


def test_saved_state_exported_and_imported_continues_identically(admin: LiveServer) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.9, "seed": 42, "max_tokens": 8}

    async def go():
        async with await Client.connect(admin.ws_url, api_key=API_KEY) as c:
            await (await c.generate("The history of", params={**GREEDY, "max_tokens": 6}, id="a")).wait()
            return (await c.save_state("a"))["handle"]

    handle = run(go())
    exported = call(admin, "GET", f"/api/states/{handle}")
    assert exported.status_code == 200 and exported.headers["Content-Type"] == "application/octet-stream"
    imported = ok(call(admin, "POST", "/api/states/import", content=exported.content,
                       headers={**admin.headers, "Content-Type": "application/octet-stream"}))  # fmt: skip
    assert imported["handle"] != handle
    again, _ = read_st(call(admin, "GET", f"/api/states/{imported['handle']}").content)
    first, metadata = read_st(exported.content)
    assert metadata["model"] == MODEL_ID and again.keys() == first.keys()
    assert all(np.array_equal(again[k], first[k]) for k in first)
    assert complete(admin, " and", state=handle, **sampled) == complete(admin, " and", state=imported["handle"],
                                                                        **sampled)  # fmt: skip
    assert {handle, imported["handle"]} <= {s["handle"] for s in ok(call(admin, "GET", "/api/states"))["data"]}

    # the REST way to save: a finished completion's id
    r = ok(call(admin, "POST", "/api/oai/v1/completions", json={"prompt": "A short note", **GREEDY}))
    saved = ok(call(admin, "POST", "/api/states/save", json={"id": r["id"]}))
    assert saved["handle"].startswith("state-") and saved["bytes"] > 0
    ok(call(admin, "DELETE", f"/api/states/{saved['handle']}"))
    assert call(admin, "GET", f"/api/states/{saved['handle']}").status_code == 404


def test_hot_swap_waits_for_running_streams_and_shows_in_models(admin: LiveServer, files: Files) -> None:
    plain = complete(admin)
    text, _, status = run(during_a_stream(admin, "POST", "/api/models/load", {"path": str(files.other), "wait": False}))
    assert status == 409 and text.startswith(plain)
    text, done, status = run(during_a_stream(admin, "POST", "/api/models/load", {"path": str(files.other)}))
    assert status == 200 and done["finish_reason"] == "length" and text.startswith(plain)
    models = ok(call(admin, "GET", "/api/oai/v1/models"))
    assert [m["id"] for m in models["data"]] == ["other-tiny"]
    assert ok(call(admin, "GET", "/api/models/info"))["model"]["id"] == "other-tiny"
    assert complete(admin) != plain

    back = {"path": str(files.demo), "loras": [{"path": str(files.lora), "alpha": 8.0}],
            "states": [{"path": str(files.state), "default": True}]}  # fmt: skip
    info = ok(call(admin, "POST", "/api/models/load", json=back))
    assert info["model"]["id"] == MODEL_ID and info["active_adapters"] == ["tiny-lora"]
    assert info["default_state"] == "tuned" and complete(admin) != plain
    ok(call(admin, "POST", "/api/models/load", json={"path": str(files.demo)}))
    assert complete(admin) == plain
    r = call(admin, "POST", "/api/models/load", json={"path": str(files.other), "loras": [{"path": str(files.state)}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "loras.0.path"
    assert ok(call(admin, "GET", "/api/oai/v1/models"))["data"][0]["id"] == MODEL_ID
