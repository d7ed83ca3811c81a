"""Bad input of every kind, over REST and WebSocket: each gets its documented answer (status, `error.code`,
`error.param`), never a 5xx, a hang or a dropped socket. Complements test_rest_errors and test_ws_protocol."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import orjson
import pytest

from backend.client import Client
from tests.server.conftest import API_KEY, LiveServer

JSON = {"Content-Type": "application/json"}
OK = {"prompt": "x", "max_tokens": 1}


def send(live: LiveServer, method: str, path: str, body: dict | bytes | None = None) -> httpx.Response:
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body, "headers": {**live.headers, **JSON}}
    kwargs.setdefault("headers", live.headers)
    return httpx.request(method, f"{live.base}{path}", timeout=60, **kwargs)


def lora_route(live: LiveServer) -> str:
    """LoRA routes are /api/loras (AI00's name) or, in older builds, /api/adapters."""
    paths = httpx.get(f"{live.base}/api-docs/openapi.json").json()["paths"]
    return "/api/loras" if "/api/loras" in paths else "/api/adapters"


COMPLETIONS, CHAT = "/api/oai/v1/completions", "/api/oai/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        # not JSON, or not the JSON we want
        (COMPLETIONS, b"", 400, "invalid_json", None),
        (COMPLETIONS, b'{"prompt": "x",}', 400, "invalid_json", None),
        (COMPLETIONS, b'{"prompt": "\xff\xfe"}', 400, "invalid_json", None),  # invalid UTF-8
        (COMPLETIONS, b'{"prompt": "x", "temperature": NaN}', 400, "invalid_json", None),
        (COMPLETIONS, b"[1, 2]", 400, "invalid_value", None),
        (COMPLETIONS, b"null", 400, "invalid_value", None),
        # wrong types
        (COMPLETIONS, {"prompt": 5}, 400, "invalid_value", "prompt"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": "ten"}, 400, "invalid_value", "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "stream": "yes please"}, 400, "invalid_value", "stream"),
        (COMPLETIONS, {"prompt": "x", "stop": 7}, 400, "invalid_value", "stop"),
        (CHAT, {"messages": "hi"}, 400, "invalid_value", "messages"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "invalid_value", "messages.0.content"),
        # negative and absurd numbers
        (COMPLETIONS, {"prompt": "x", "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": 10**30}, 400, "invalid_value", "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "n": 0}, 400, "invalid_value", "n"),
        (COMPLETIONS, {"prompt": "x", "top_k": -5}, 400, "invalid_value", "top_k"),
        (COMPLETIONS, {"prompt": "x", "temperature": 1e308}, 400, "invalid_value", "temperature"),
        (COMPLETIONS, {"prompt": "x", "presence_penalty": -1e9}, 400, "invalid_value", "presence_penalty"),
        (COMPLETIONS, {"prompt": "x", "half_life": -3}, 400, "invalid_value", "half_life"),
        (COMPLETIONS, {"prompt": "x", "logprobs": 1000}, 400, "invalid_value", "logprobs"),
        # empty
        (CHAT, {"messages": []}, 400, "invalid_value", "messages"),
        (CHAT, {"messages": [{"content": "hi"}]}, 400, "invalid_value", "messages.0.role"),
        (CHAT, {}, 400, "invalid_value", "messages"),
        # bad grammars
        (COMPLETIONS, {**OK, "bnf_schema": "start ::= 'a'"}, 400, None, "bnf_schema"),
        (COMPLETIONS, {**OK, "bnf_schema": "<start> ::= 'a"}, 400, None, "bnf_schema"),
        (CHAT, {"messages": USER, "response_format": {"type": "json_schema"}}, 400, None, "response_format"),
        # unknown ids
        (COMPLETIONS, {**OK, "state": "no-such-state"}, 400, "invalid_request", "state"),
        (CHAT, {"messages": USER, "max_tokens": 1, "state": "state-0123456789abcdef"}, 400, "invalid_request", "state"),
        ("/api/states/save", {"id": "no-such-generation"}, 404, "unknown_id", "id"),
        ("/api/models/state/unload", {"id": "no-such-state"}, 404, None, "id"),
        # unknown fields: admin bodies are strict (OpenAI bodies ignore them, as OpenAI's SDKs send extras)
        ("/api/models/state", {"path": "x.st", "colour": "red"}, 400, "invalid_value", "colour"),
        ("/api/states/save", {"id": "x", "brnch": 1}, 400, "invalid_value", "brnch"),
        # files outside the allowed folders
        ("/api/models/state", {"path": "../../../etc/passwd"}, 400, "path_not_allowed", "path"),
        ("/api/models/state", {"path": "/etc/passwd"}, 400, "path_not_allowed", "path"),
        ("/api/models/state", {"path": "assets/../../../etc/passwd"}, 400, "path_not_allowed", "path"),
        ("/api/models/load", {"path": "/etc/hostname"}, 400, "path_not_allowed", "path"),
        (
            "/api/models/load",
            {"path": "assets/models/none.st", "loras": [{"path": "/tmp/x.st"}]},
            400,
            "path_not_allowed",
            "loras.0.path",
        ),
        ("/api/states/import", {"path": "/proc/self/environ"}, 400, "path_not_allowed", "path"),
        ("/api/models/state", {"path": "assets/models/no-such-file.st"}, 400, "invalid_file", "path"),
    ],
)
def test_bad_request_gets_its_documented_error(
    live: LiveServer, path: str, body: dict | bytes, status: int, code: str | None, param: str | None
):
    r = send(live, "POST", path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    assert code is None or error["code"] == code, error
    assert error["param"] == param or (param is not None and (error["param"] or "").startswith(param)), error


def test_lora_paths_outside_the_allowed_folders_are_refused(live: LiveServer):
    for path in ("../secret.st", "/etc/passwd", "assets/../../x.st"):
        r = send(live, "POST", lora_route(live), {"path": path})
        assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed", r.text


def test_unknown_model_and_saved_state_ids_are_404(live: LiveServer):
    r = send(live, "GET", "/api/oai/v1/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    for method in ("GET", "DELETE"):
        r = send(live, method, "/api/states/state-doesnotexist00")
        assert r.status_code == 404 and r.json()["error"]["param"] == "handle", r.text


def test_unknown_openai_fields_are_ignored_and_huge_admin_bodies_are_413(live: LiveServer):
    r = send(live, "POST", COMPLETIONS, {**OK, "not_a_field": {"deep": [1, 2]}, "user": "me"})
    assert r.status_code == 200, r.text
    r = send(live, "POST", "/api/models/state", {"path": "x" * 100_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        (b'{"type": "generate", "id": "u", "prompt": "\xff\xfe"}', "invalid_request", None),  # invalid UTF-8
        ({"type": "generate", "id": "e", "messages": []}, "invalid_request", "messages"),
        ({"type": "generate", "id": "t", "prompt": 5}, "invalid_request", "prompt"),
        (
            {"type": "generate", "id": "m", "prompt": "x", "params": {"max_tokens": -1}},
            "invalid_request",
            "params.max_tokens",
        ),
        ({"type": "generate", "id": "n", "prompt": "x", "n": 10**9}, "invalid_request", "n"),
        ({"type": "generate", "id": "k", "prompt": "x", "params": {"top_k": 1e30}}, "invalid_request", "params.top_k"),
        ({"type": "generate", "id": "s", "prompt": "x", "state": "no-such-state"}, "invalid_request", "state"),
        (
            {"type": "generate", "id": "g", "prompt": "x", "params": {"bnf_schema": "<start> ::= 'a"}},
            "invalid_request",
            "params.bnf_schema",
        ),
        ({"type": "generate", "id": 7, "prompt": "x"}, "invalid_request", "id"),
        ({"type": "generate", "id": "x", "prompt": "x", "colour": "red"}, "invalid_request", "colour"),
        ({"type": "state.save", "id": "never-ran"}, "unknown_id", "id"),
        ({"type": "update", "id": "ghost", "params": {"temperature": -1}}, "invalid_request", "params.temperature"),
    ],
)
def test_bad_frame_gets_its_documented_error_and_the_socket_lives_on(
    live: LiveServer, frame: dict | bytes, code: str, param: str | None
):
    async def go() -> dict:
        async with await Client.connect(live.ws_url, api_key=API_KEY) as c:
            await (c.ws.send(frame) if isinstance(frame, bytes) else c.send(frame))
            error = await asyncio.wait_for(c.errors.get(), 30)
            assert (await c.ping("alive"))["data"] == "alive"
            return error

    error = asyncio.run(go())
    assert error["type"] == "error" and error["code"] == code and error["message"], error
    assert error.get("param") == param or (param is not None and (error.get("param") or "").startswith(param)), error


def test_bad_input_leaves_no_slot_taken(live: LiveServer):
    from tests.server.test_cancel_frees_slot import wait_all_slots_free

    wait_all_slots_free(live)
    assert orjson.loads(httpx.get(f"{live.base}/health").content)["status"] == "ok"


def test_no_key_reaches_the_logs(live: LiveServer, caplog: pytest.LogCaptureFixture):
    """Neither a valid nor a wrong key shows in any log line (access log included), nor in a config error."""
    from backend.config import Config, ConfigError

    caplog.set_level("DEBUG")
    wrong = "sk-wrong-0123456789"
    send(live, "POST", COMPLETIONS, OK)
    httpx.post(f"{live.oai}/completions", json=OK, headers={"Authorization": f"Bearer {wrong}"}, timeout=60)
    httpx.get(f"{live.base}/api/ws", headers={"Sec-WebSocket-Protocol": f"ai00.v1, bearer.{wrong}"}, timeout=60)
    send(live, "POST", "/api/models/state", {"path": "/etc/passwd"})
    with pytest.raises(ConfigError) as config_error:
        Config.from_dict({"listen": {"api_keys": API_KEY}})  # a string, not a list: the error names no key
    assert API_KEY not in str(config_error.value) and "listen.api_keys" in str(config_error.value)
    assert caplog.records and API_KEY not in caplog.text and wrong not in caplog.text
