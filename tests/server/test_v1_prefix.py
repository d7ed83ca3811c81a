"""OpenAI's default base URL (`http://host:port/v1`) serves the same routes as /api/oai/v1; unknown API paths
answer a JSON 404, never the web UI's page."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.server.conftest import API_KEY, LiveServer


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=API_KEY, timeout=120, max_retries=0)


def test_sdk_default_path_lists_models_and_chats(client: openai.OpenAI, live: LiveServer):
    assert [m.id for m in client.models.list().data] == [live.server.model_id]
    chat = client.chat.completions.create(model="rwkv", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                          seed=1)  # fmt: skip
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens <= 3


def test_sdk_default_path_completes_the_same_as_the_ai00_path(client: openai.OpenAI, live: LiveServer):
    args = {"model": "rwkv", "prompt": "The sky is", "max_tokens": 4, "seed": 7}
    ours = openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)
    assert client.completions.create(**args).choices[0].text == ours.completions.create(**args).choices[0].text


def test_sdk_default_path_streams_and_embeds(client: openai.OpenAI, live: LiveServer):
    chunks = list(client.chat.completions.create(model="rwkv", messages=[{"role": "user", "content": "Count."}],
                                                 max_tokens=4, seed=2, stream=True))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    vectors = client.embeddings.create(model="rwkv", input=["one", "two"]).data
    assert [len(v.embedding) for v in vectors] == [live.server.n_embd] * 2


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/chat/nothing", "/api/nothing", "/api/oai/v1/nothing"])
def test_unknown_api_paths_answer_json_404_not_the_ui(live: LiveServer, path: str, method: str):
    r = httpx.request(method, f"{live.base}{path}", headers=live.headers, json={} if method == "POST" else None)
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == "not_found"


def test_ui_pages_still_fall_back_to_the_app(live: LiveServer):
    r = httpx.get(f"{live.base}/chat/some-conversation")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert httpx.post(f"{live.base}/chat").status_code == 405
