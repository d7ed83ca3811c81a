"""One engine per GPU (`adapters = [...]`), shown with two engines on lavapipe's one adapter: a burst of requests
keeps both busy, and a conversation's follow-up goes to the engine that holds its state (its cached prefix, or
its X-Session-Id), where it reuses that state."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.config import Config
from backend.engine_router import EngineRouter
from backend.gpu.loader import read_model
from tests.adapters import random_time_state, save_time_state
from tests.server.conftest import MODEL, TEST_CONFIG, LiveServer, start_server, stop_server

SYSTEM = "You are a careful assistant who answers in one short sentence about the {topic}, and nothing else."
TOPICS = ["sea", "moon", "forest", "desert", "river", "city"]


@pytest.fixture(scope="module")
def tuned_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    info, _ = read_model(MODEL)
    return save_time_state(tmp_path_factory.mktemp("states") / "tuned.st", random_time_state(info, std=2.0))


@pytest.fixture(scope="module")
def pair(tuned_state: Path) -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "adapters": ["auto", "auto"]},
              "files": {"allowed_dirs": [str(tuned_state.parent)]}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def router(live: LiveServer) -> EngineRouter:
    assert live.server.pool is not None
    return live.server.pool.default.router


def chat(live: LiveServer, messages: list[dict[str, str]], headers: dict[str, str] | None = None,
         max_tokens: int = 4) -> dict[str, Any]:  # fmt: skip
    body = {"model": "rwkv", "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    r = httpx.post(f"{live.v1}/chat/completions", json=body, headers={**live.headers, **(headers or {})},
                   timeout=300)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def requests_by_engine(live: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{live.base}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ai00:requests_total":
                counts[s.labels["engine"]] = counts.get(s.labels["engine"], 0) + s.value
    return counts


def test_two_engines_on_one_adapter_both_take_work_under_load(pair: LiveServer):
    before = requests_by_engine(pair)
    prompts = [[{"role": "user", "content": f"Say something about the {t}."}] for t in TOPICS + TOPICS]
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda m: chat(pair, m, max_tokens=24), prompts))
    engines = [router(pair).engine_of(a["id"]) for a in answers]
    assert set(engines) == {0, 1} and min(engines.count(0), engines.count(1)) >= 3, engines
    after = requests_by_engine(pair)  # each engine's own metrics, labelled with its model and index
    assert all(after[e] - before.get(e, 0) >= 3 for e in ("0", "1")), (before, after)


def test_a_follow_up_lands_on_the_engine_that_holds_its_conversation(pair: LiveServer):
    firsts = [[{"role": "system", "content": SYSTEM.format(topic=t)}, {"role": "user", "content": "Begin."}]
              for t in TOPICS]  # fmt: skip
    with ThreadPoolExecutor(len(firsts)) as pool:  # at once: the conversations spread over both engines
        answers = list(pool.map(lambda m: chat(pair, m), firsts))
    homes = [router(pair).engine_of(a["id"]) for a in answers]
    assert set(homes) == {0, 1}, homes
    for messages, answer, home in zip(firsts, answers, homes, strict=True):
        follow = [*messages, answer["choices"][0]["message"], {"role": "user", "content": "And then?"}]
        again = chat(pair, follow)
        assert router(pair).engine_of(again["id"]) == home
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, again["usage"]


def test_a_session_key_keeps_a_conversation_on_one_engine(pair: LiveServer):
    short = [{"role": "user", "content": "Hi."}]  # shorter than a routed prefix block: only the key can tell
    homes = set()
    for key in ("s-1", "s-2", "s-3", "s-4"):
        first = chat(pair, short, {"X-Session-Id": key})
        home = router(pair).engine_of(first["id"])
        homes.add(home)
        for _ in range(2):
            assert router(pair).engine_of(chat(pair, short, {"X-Session-Id": key})["id"]) == home
    assert homes == {0, 1}  # the keys spread, then each stays


def test_an_initial_state_loaded_at_run_time_reaches_every_engine(pair: LiveServer, tuned_state: Path):
    r = httpx.post(f"{pair.base}/api/models/state", json={"path": str(tuned_state), "id": "tuned"},
                   headers=pair.headers, timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    body = {"model": "rwkv", "prompt": "Once", "max_tokens": 4, "temperature": 0.0, "state": "tuned"}

    def complete(_: int) -> dict[str, Any]:
        r = httpx.post(f"{pair.v1}/completions", json=body, headers=pair.headers, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(complete, range(6)))
    assert {router(pair).engine_of(a["id"]) for a in answers} == {0, 1}
    assert len({a["choices"][0]["text"] for a in answers}) == 1  # the same state and weights on both engines


def test_a_saved_state_is_used_on_the_engine_that_holds_it(pair: LiveServer):
    prompts = [[{"role": "user", "content": f"Tell me of the {t}."}] for t in TOPICS[:4]]
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda m: chat(pair, m), prompts))
    for answer in answers:  # whichever engine each ran on
        home = router(pair).engine_of(answer["id"])
        r = httpx.post(f"{pair.base}/api/states/save", json={"id": answer["id"]}, headers=pair.headers, timeout=60)
        assert r.status_code == 200, r.text
        body = {"model": "rwkv", "prompt": " Go on.", "max_tokens": 2, "state": r.json()["handle"]}
        r = httpx.post(f"{pair.v1}/completions", json=body, headers=pair.headers, timeout=120)
        assert r.status_code == 200, r.text
        assert router(pair).engine_of(r.json()["id"]) == home
    assert {router(pair).engine_of(a["id"]) for a in answers} == {0, 1}
