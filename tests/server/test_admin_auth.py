"""[listen] admin_key guards the state-changing admin routes; reads stay open; force_pass turns the check off."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from backend.config import Config
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server

ADMIN_KEY = "adm-test-key"
SWITCH = ("POST", "/api/loras/switch", {"active": []})


def serve(listen: dict) -> tuple:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": 2, "prefix_cache": 0},
              "listen": {"ip": "127.0.0.1", "port": 0, **listen}}  # fmt: skip
    return start_server(Config.from_dict(config))


@pytest.fixture(scope="module")
def guarded() -> Iterator[LiveServer]:
    server, runner, thread = serve({"admin_key": ADMIN_KEY})  # no API keys: reads are open
    yield server
    stop_server(server, runner, thread)


def send(live: LiveServer, method: str, path: str, body: dict | None = None, key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{live.base}{path}", json=body, headers=headers, timeout=60)


def test_state_changing_routes_need_the_admin_key_and_reads_stay_open(guarded: LiveServer) -> None:
    for key in (None, "wrong"):
        r = send(guarded, *SWITCH, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key", r.text
    for method, path, body in [("POST", "/api/models/load", {"path": "x.st"}), ("DELETE", "/api/loras/x", None),
                               ("POST", "/api/states/save", {"id": "x"}), ("POST", "/api/files/dir", {"path": "."}),
                               ("POST", "/api/models/state", {"path": "x.st"})]:  # fmt: skip
        assert send(guarded, method, path, body).status_code == 401, path
    assert send(guarded, *SWITCH, key=ADMIN_KEY).status_code == 200
    for path in ("/api/models/info", "/api/loras", "/api/adapters", "/api/models/list", "/api/oai/v1/models"):
        assert send(guarded, "GET", path).status_code == 200, path
    r = send(guarded, "POST", "/api/oai/v1/completions", {"prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 200, r.text  # generation is no admin work


def test_with_api_keys_the_admin_key_is_also_an_api_key_and_api_keys_are_not_admin() -> None:
    server, runner, thread = serve({"api_keys": [API_KEY], "admin_key": ADMIN_KEY})
    try:
        assert send(server, "GET", "/api/models/info").status_code == 401
        assert send(server, "GET", "/api/models/info", key=ADMIN_KEY).status_code == 200
        assert send(server, *SWITCH, key=API_KEY).json()["error"]["code"] == "invalid_admin_key"
        assert send(server, *SWITCH, key=ADMIN_KEY).status_code == 200
    finally:
        stop_server(server, runner, thread)


def test_force_pass_turns_the_admin_check_off() -> None:
    server, runner, thread = serve({"admin_key": ADMIN_KEY, "force_pass": True})
    try:
        assert send(server, *SWITCH).status_code == 200
    finally:
        stop_server(server, runner, thread)
