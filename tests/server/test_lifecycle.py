"""The server as a process: it listens at once and says `loading` until the model is up; SIGTERM drains."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from backend.gpu.models.info import Version
from backend.tools.demo_model import write_demo_model
from tests.server.process import ServerProcess

FAST = ["--model.precision", "fp32"]  # lavapipe emulates f16: f32 weights are its fast path


@pytest.fixture(scope="module")
def larger_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~160 MB: seconds to read, convert and upload on lavapipe, so /health is seen loading."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "larger.st", Version.V7, 4, 512)


def test_health_is_503_loading_with_progress_then_200_while_a_larger_model_loads(larger_model: Path, tmp_path: Path):
    server = ServerProcess([str(larger_model), *FAST], tmp_path / "server.log")
    try:
        server.wait_listening()
        seen, refused = [], None
        while True:
            r = httpx.get(f"{server.base}/health", timeout=5)
            seen.append((r.status_code, r.json()))
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["status"] == "loading", r.text
            if refused is None:
                refused = httpx.post(f"{server.base}/v1/completions", json={"prompt": "x"}, timeout=5)
            time.sleep(0.05)
        phases = [body["progress"]["phase"] for status, body in seen if status == 503]
        assert "read" in phases and "upload" in phases, phases
        read = [b["progress"] for s, b in seen if s == 503 and b["progress"]["phase"] == "read"]
        assert all(0 < p["bytes"] <= p["total_bytes"] for p in read)
        assert seen[-1][1]["status"] == "ok"
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_loading"
        assert int(refused.headers["Retry-After"]) > 0
        assert httpx.get(f"{server.base}/v1/models", timeout=5).json()["data"][0]["id"] == "larger"
    finally:
        server.stop()


def stream(client: openai.OpenAI, args: dict, started: threading.Event, out: dict) -> None:
    text, reasons = "", []
    for chunk in client.completions.create(**args, stream=True):
        started.set()
        text += chunk.choices[0].text
        reasons += [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
    out.update(text=text, reasons=reasons, ended=time.monotonic())


def test_sigterm_lets_two_streams_finish_with_their_full_text_then_exits(tmp_path: Path):
    server = ServerProcess([*FAST, "--drain-timeout", "60"], tmp_path / "server.log")
    try:
        server.wait_healthy()
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", timeout=120, max_retries=0)
        args = {"model": "rwkv", "prompt": "Once upon a time", "max_tokens": 24, "seed": 3, "temperature": 1.0}
        whole = client.completions.create(**args).choices[0].text  # the same seed alone: the text to expect
        outs = [{}, {}]
        started = [threading.Event(), threading.Event()]
        threads = [threading.Thread(target=stream, args=(client, args, started[i], outs[i])) for i in range(2)]
        for t in threads:
            t.start()
        assert all(e.wait(60) for e in started)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        late = httpx.post(f"{server.base}/v1/completions", json={"prompt": "x"}, timeout=10)
        for t in threads:
            t.join(120)
        assert server.proc.wait(60) == 0
        for out in outs:
            assert out["text"] == whole and out["reasons"] == ["length"]
            assert out["ended"] - sent < 60
        assert late.status_code == 503 and late.json()["error"]["code"] == "draining" and "Retry-After" in late.headers
        assert "draining: 2 generation(s)" in server.output()
    finally:
        server.stop()


def test_sigterm_cuts_what_outlives_the_drain_timeout_with_an_openai_finish_reason(tmp_path: Path):
    server = ServerProcess([*FAST, "--drain-timeout", "0.5", "--limits.max_tokens", "100000"], tmp_path / "server.log",
                           env={"AI00_LISTEN__METRICS_KEY": "mk"})  # fmt: skip
    try:
        server.wait_healthy()
        assert httpx.get(f"{server.base}/metrics").status_code == 401  # its own key, from the environment
        assert httpx.get(f"{server.base}/metrics", headers={"Authorization": "Bearer mk"}).status_code == 200
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", timeout=120, max_retries=0)
        out: dict = {}
        started = threading.Event()
        # the demo model may end a text at once: END_OF_TEXT (id 0) is barred, so only the drain ends this one
        args = {"model": "rwkv", "prompt": "Tell me everything.", "max_tokens": 100000, "seed": 1,
                "logit_bias": {"0": -100}}  # fmt: skip
        thread = threading.Thread(target=stream, args=(client, args, started, out))
        thread.start()
        assert started.wait(60)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert out["reasons"] == ["length"] and out["text"]  # cut short; `cancelled` is no OpenAI reason
        assert out["ended"] - sent < 15
        assert server.proc.wait(30) == 0
        assert "drain: cutting 1 generation(s)" in server.output()
    finally:
        server.stop()
