"""The web UI in a real browser: Debian's chromium driven by playwright-core (tests/e2e/run.mjs) against the real
server (`python -m backend`, demo model, CPU Vulkan) started here. Screenshots land in tests/e2e/screenshots/.

Nothing is skipped: a missing chromium, node, `npm ci` or `npm run build` fails with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.tools.demo_model import ensure_random_model, write_demo_model

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "e2e" / "run.mjs"
CHROMIUM = os.environ.get("AI00_CHROMIUM", "/usr/bin/chromium")
API_KEY = "sk-e2e-key"
# fp32: lavapipe emulates f16, so f32 weights are its fast path; 8 slots hold Paper's 4 branches and the rest.
# The untrained random model: the scenarios need replies that run to max_tokens (stop mid-stream, live updates),
# and the trained demo model ends its answers early (tests/server/test_demo_model_answers.py checks what it says)
CONFIG = f"""
[model]
path = "{{model}}"
precision = "fp32"
max_batch = 8
token_chunk_size = 64
prefix_cache = 2

[listen]
ip = "127.0.0.1"
port = {{port}}
api_keys = ["{API_KEY}"]

[limits]
max_tokens = 512
max_n = 8
"""


def require_tools() -> None:
    """Fail (never skip) when a piece of the browser test set-up is missing, saying how to install it."""
    problems = []
    if not Path(CHROMIUM).is_file():
        problems.append(
            f"Debian chromium not found at {CHROMIUM}: apt-get install -y chromium "
            "(scripts/setup.sh --test installs it)"
        )
    if shutil.which("node") is None:
        problems.append("node not found: scripts/setup.sh installs Node.js")
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        problems.append("node_modules/playwright-core missing: run `npm ci` in the repository root")
    if not (ROOT / "backend" / "static" / "index.html").is_file():
        problems.append("the UI is not built (backend/static/index.html): run `npm run build`")
    if problems:
        pytest.fail("browser tests cannot run:\n" + "\n".join(problems), pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not become healthy in {timeout:.0f} s:\n{log.read_text()[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m backend` on a free port, as a user starts it; yields its base URL."""
    yield from serve(tmp_path_factory.mktemp("e2e"), lambda port: CONFIG.format(port=port, model=ensure_random_model()))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same, serving the random model as "alpha" and another seed of it as "beta"."""
    tmp = tmp_path_factory.mktemp("e2e-models")
    beta = write_demo_model(tmp / "random-seed1.st", seed=1)
    models = "".join(f'[[models]]\nname = "{name}"\npath = "{path}"\nprecision = "fp32"\nmax_batch = 4\n\n'
                     for name, path in (("alpha", ensure_random_model()), ("beta", beta)))  # fmt: skip
    rest = CONFIG[CONFIG.index("[listen]") :]  # the same [listen] and [limits]
    yield from serve(tmp, lambda port: models + rest.format(port=port))


def serve(tmp: Path, config_text: Callable[[int], str]) -> Iterator[str]:
    """`python -m backend` with the config `config_text(port)` until the module's tests end; yields its URL."""
    require_tools()
    port = free_port()
    config = tmp / "Config.toml"
    config.write_text(config_text(port))
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "--config", str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_scenario(base: str, name: str) -> None:
    cmd = ["node", str(RUNNER), name, "--base", base, "--key", API_KEY, "--chromium", CHROMIUM]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(r.stdout)
    assert r.returncode == 0, f"{name} failed (see tests/e2e/screenshots/failure-{name}.png):\n{r.stdout}{r.stderr}"


def test_chat_asks_for_the_key_then_streams_a_reply(server: str) -> None:
    run_scenario(server, "chat_streams_reply")


def test_stop_ends_the_reply_mid_stream(server: str) -> None:
    run_scenario(server, "stop_mid_stream")


def test_regenerate_edit_delete_and_a_second_conversation(server: str) -> None:
    run_scenario(server, "chat_edit_regenerate_delete")


def test_paper_streams_four_continuations_side_by_side(server: str) -> None:
    run_scenario(server, "paper_four_streams")


def test_temperature_change_during_a_generation_is_acknowledged(server: str) -> None:
    run_scenario(server, "live_temperature_update")


def test_every_page_on_desktop_and_phone_in_both_themes(server: str) -> None:
    run_scenario(server, "screenshots")


def test_the_model_picker_sends_generations_to_the_chosen_model(two_models: str) -> None:
    run_scenario(two_models, "model_picker")
