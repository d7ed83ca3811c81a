"""Model files and config files over the API: listings, config load/save validated first, and every file route
refusing paths outside [files] allowed_dirs (`..`, absolute paths, symlinks out)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from backend.config import Config
from tests.server.conftest import API_KEY, MODEL, TEST_CONFIG, LiveServer, start_server, stop_server

VALID = "[model]\nmax_batch = 4\n\n[listen]\nport = 0\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("files")
    allowed, outside = base / "allowed", base / "outside"
    (allowed / "models").mkdir(parents=True)
    (allowed / "configs").mkdir()
    outside.mkdir()
    shutil.copy(MODEL, allowed / "models" / "demo.st")
    (allowed / "models" / "junk.st").write_bytes(b"not a model")
    (allowed / "configs" / "Config.toml").write_text(VALID)
    (outside / "secret.toml").write_text(VALID)
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    return allowed


@pytest.fixture(scope="module")
def files_server(root: Path) -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": 2, "prefix_cache": 0},
              "files": {"allowed_dirs": [str(root)]}}  # fmt: skip
    server, runner, thread = start_server(Config.from_dict(config))
    yield server
    stop_server(server, runner, thread)


def post(live: LiveServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{live.base}{path}", json=body, headers=live.headers, timeout=60)


def test_models_list_shows_model_files_with_size_and_version(files_server: LiveServer) -> None:
    r = httpx.get(f"{files_server.base}/api/models/list", headers=files_server.headers, timeout=60)
    assert r.status_code == 200, r.text
    by_name = {m["name"]: m for m in r.json()["data"]}
    assert by_name["demo.st"]["version"].lower().startswith("v7") and by_name["demo.st"]["n_layer"] > 0
    assert by_name["demo.st"]["size"] == MODEL.stat().st_size
    assert by_name["junk.st"]["version"] is None


def test_dir_lists_a_folder_inside_the_allowed_ones(files_server: LiveServer) -> None:
    r = post(files_server, "/api/files/dir", {"path": "models"})
    assert r.status_code == 200, r.text
    assert {e["name"] for e in r.json()["data"]} == {"demo.st", "junk.st"}


@pytest.mark.parametrize("route", ["/api/files/dir", "/api/files/config/load", "/api/files/config/save"])
@pytest.mark.parametrize("path", ["../outside/secret.toml", "configs/../../outside/secret.toml", "/etc/passwd",
                                  "OUTSIDE_ABS", "link/secret.toml", "link"])  # fmt: skip
def test_every_file_route_refuses_paths_out_of_the_allowed_folders(files_server: LiveServer, root: Path,
                                                                   route: str, path: str) -> None:  # fmt: skip
    path = str(root.parent / "outside" / "secret.toml") if path == "OUTSIDE_ABS" else path
    body = {"path": path, "content": VALID} if route.endswith("save") else {"path": path}
    r = post(files_server, route, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "path"
    assert (root.parent / "outside" / "secret.toml").read_text() == VALID


def test_config_load_and_save_validate_and_keep_the_old_file_on_error(files_server: LiveServer, root: Path) -> None:
    target = root / "configs" / "Config.toml"
    r = post(files_server, "/api/files/config/load", {"path": "configs/Config.toml"})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == VALID and r.json()["config"]["model"]["max_batch"] == 4
    for bad, words in [("[model]\nmax_batch = 0\n", "model.max_batch"), ("[model\n", "not TOML"),
                       ("[model]\nnope = 1\n", "model.nope")]:  # fmt: skip
        r = post(files_server, "/api/files/config/save", {"path": "configs/Config.toml", "content": bad})
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
        assert r.json()["error"]["param"] == "content"
        assert target.read_text() == VALID  # the old file, intact
    # what the running server locks (its keys, its folders) must stay locked: see test_hostile_files_and_auth
    new = VALID.replace("max_batch = 4", "max_batch = 6").replace("port = 0\n", f'port = 0\napi_keys = ["{API_KEY}"]\n')
    new += f"\n[files]\nallowed_dirs = [{str(root)!r}]\n"
    r = post(files_server, "/api/files/config/save", {"path": "configs/Config.toml", "content": new})
    assert r.status_code == 200, r.text
    assert target.read_text() == new
    assert post(files_server, "/api/files/config/load", {"path": "configs/Config.toml"}).json()["config"]["model"][
        "max_batch"] == 6  # fmt: skip
