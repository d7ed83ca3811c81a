"""Several models in one server ([[models]]), through real servers on lavapipe: each answers by its name as a
server of its own would; loading and unloading one at run time leaves the other's running stream intact; the
GPU budget refuses a load before it starts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from backend.client import Client
from backend.config import Config, ModelSection
from backend.model_pool import estimate_gpu_bytes
from backend.tools.demo_model import write_demo_model
from tests.server.conftest import API_KEY, MODEL, TEST_CONFIG, LiveServer, start_server, stop_server

MODEL_SETTINGS = {k: v for k, v in TEST_CONFIG["model"].items() if k != "path"}
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random model again with another seed: the same shape, other weights, other answers."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "random-seed1.st", seed=1)


def two_model_config(second: Path, **extra: Any) -> Config:
    rest = {k: v for k, v in TEST_CONFIG.items() if k != "model"}
    return Config.from_dict({**rest, "models": [{"name": "alpha", "path": str(MODEL), **MODEL_SETTINGS},
                                                       {"name": "beta", "path": str(second), **MODEL_SETTINGS}],
                             "files": {"allowed_dirs": [str(second.parent)]}, **extra})  # fmt: skip


@pytest.fixture(scope="module")
def two(second_model: Path) -> Iterator[LiveServer]:
    # the start checks the estimate (2 x ~86 MB: the weights and a quarter more of workspace); a run-time load
    # adds it to what the engines hold (~121 MB each): a third model is refused until one goes
    budget = int(3.5 * estimate_gpu_bytes(MODEL, ModelSection(precision="fp32"), 1))
    server, runner, thread = start_server(two_model_config(second_model, strict_model_names=True,
                                                           gpu_budget_bytes=budget))  # fmt: skip
    yield server
    stop_server(server, runner, thread)


@pytest.fixture(scope="module")
def beta_alone(second_model: Path) -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "path": str(second_model)}}
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def complete(live: LiveServer, model: str, max_tokens: int = 12, **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 1.0, "seed": 7, **extra}
    return httpx.post(f"{live.v1}/completions", json=body, headers=live.headers, timeout=120)


def text_of(live: LiveServer, model: str) -> str:
    r = complete(live, model)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model or live.server.pool is None or len(live.server.pool) == 1
    return r.json()["choices"][0]["text"]


def test_two_models_answer_by_name_as_their_own_single_model_servers(two: LiveServer, live: LiveServer,
                                                                     beta_alone: LiveServer):  # fmt: skip
    served = httpx.get(f"{two.v1}/models", headers=two.headers).json()
    assert [m["id"] for m in served["data"]] == ["alpha", "beta"]
    alpha, beta = text_of(two, "alpha"), text_of(two, "beta")
    assert alpha == text_of(live, "anything")  # the single-model server of the same file and seed
    assert beta == text_of(beta_alone, "anything")
    assert alpha != beta  # other weights: the routing is visible
    # a single-model server answers any name with its model, as AI00's clients expect; a strict one refuses
    assert text_of(live, "gpt-4o") == alpha
    r = complete(two, "gamma")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text


def test_a_websocket_session_picks_its_model(two: LiveServer):
    async def go() -> tuple[str, str]:
        async with await Client.connect(two.ws_url, api_key=API_KEY) as c:
            await c.send({"type": "session.update", "model": "beta"})
            gen = await c.generate(PROMPT, params={"max_tokens": 12, "temperature": 1.0, "seed": 7})
            await gen.wait()
            await c.send({"type": "session.update", "model": "gamma"})  # strict: refused, the socket goes on
            error = await c.errors.get()
            assert (await c.ping("still here"))["data"] == "still here"
            return gen.texts[0], error["param"]

    text, param = asyncio.run(asyncio.wait_for(go(), 120))
    assert text == text_of(two, "beta") and param == "model"


def stream_in_background(live: LiveServer, model: str, first_chunk: threading.Event) -> dict[str, Any]:
    """A streamed completion read in a thread; `first_chunk` is set once it runs. Returns (in the dict, when
    done) its text, finish reason and whether [DONE] came."""
    out: dict[str, Any] = {"text": "", "finish": None, "done": False}

    def read() -> None:
        body = {"model": model, "prompt": PROMPT, "max_tokens": 64, "temperature": 1.0, "seed": 7, "stream": True}
        with httpx.stream("POST", f"{live.v1}/completions", json=body, headers=live.headers, timeout=300) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    out["done"] = True
                elif line.startswith("data: "):
                    choice = orjson.loads(line[6:])["choices"][0]
                    out["text"] += choice["text"] or ""
                    out["finish"] = choice["finish_reason"] or out["finish"]
                    first_chunk.set()

    out["thread"] = threading.Thread(target=read)
    out["thread"].start()
    return out


def admin(live: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{live.base}{path}", json=body, headers=live.headers, timeout=300)


def test_loading_and_unloading_a_model_leaves_the_others_stream_intact(two: LiveServer, second_model: Path):
    reference = complete(two, "alpha", max_tokens=64).json()["choices"][0]["text"]
    beta = text_of(two, "beta")
    # over the budget: refused before any load starts
    r = admin(two, "/api/models/load", {"name": "gamma", "path": str(second_model), "precision": "fp32"})
    assert r.status_code == 507 and r.json()["error"]["code"] == "gpu_budget", r.text
    running = threading.Event()
    stream = stream_in_background(two, "alpha", running)
    assert running.wait(120)
    r = admin(two, "/api/models/unload", {"name": "beta"})
    assert r.status_code == 200, r.text
    assert complete(two, "beta").status_code == 404  # strict: it is gone
    r = admin(two, "/api/models/load", {"name": "gamma", "path": str(second_model), "precision": "fp32"})
    assert r.status_code == 200, r.text  # room again, and loaded while alpha streams
    stream["thread"].join(300)
    assert stream["done"] and stream["finish"] == "length" and stream["text"] == reference
    served = httpx.get(f"{two.v1}/models", headers=two.headers).json()
    assert [m["id"] for m in served["data"]] == ["alpha", "gamma"]
    assert text_of(two, "gamma") == beta  # the same file under another name, loaded at run time
    r = admin(two, "/api/models/unload", {"name": "alpha"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "default_model"
    info = httpx.get(f"{two.base}/api/models/info?model=gamma", headers=two.headers).json()  # admin: ?model=
    assert info["model"]["path"] == str(second_model)
    r = httpx.get(f"{two.base}/api/models/info?model=beta", headers=two.headers)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_responses_answer_with_the_named_model_and_follow_ups_keep_it(two: LiveServer, beta_alone: LiveServer):
    """/v1/responses routes by `model` as the other routes do; a follow-up continues with the model that
    answered its previous response (its state is that model's), and naming another model is a 400."""

    def respond(live: LiveServer, **body: Any) -> httpx.Response:
        body = {"input": PROMPT, "max_output_tokens": 8, "temperature": 0, **body}
        return httpx.post(f"{live.v1}/responses", json=body, headers=live.headers, timeout=120)

    def said(r: httpx.Response) -> str:
        return "".join(p["text"] for item in r.json()["output"] if item["type"] == "message" for p in item["content"])

    # the second model's file under the name it has now (the load/unload test renames it beta -> gamma)
    other = httpx.get(f"{two.v1}/models", headers=two.headers).json()["data"][1]["id"]
    first = respond(two, model=other)
    assert first.status_code == 200, first.text
    assert first.json()["model"] == other
    assert said(first) == said(respond(beta_alone))  # beta's weights answered
    follow = respond(two, input="And then?", previous_response_id=first.json()["id"])
    assert follow.status_code == 200, follow.text
    assert follow.json()["model"] == other
    wrong = respond(two, model="alpha", input="And then?", previous_response_id=first.json()["id"])
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model", wrong.text
