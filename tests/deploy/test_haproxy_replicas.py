"""Two server replicas (random model, lavapipe) behind Debian's HAProxy with the shipped deploy/haproxy.cfg, which
takes its listen address and replicas from the environment: least connections without a session, the same replica
for one X-Session-Id (or OpenAI `user`) so follow-ups reuse its state cache, WebSocket upgrades, saved states moving
between replicas by export/import, no failed request when a replica dies or drains, and the replica's return.

Which replica served a request is read from each replica's own /metrics (ai00:requests_total), never from the proxy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.client import Client
from backend.tools.demo_model import ensure_random_model
from tests.server.process import ROOT, ServerProcess, free_port

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="Debian's haproxy is not installed (apt-get install haproxy; "
                                "scripts/setup.sh --test installs it)")  # fmt: skip

CONFIG = ROOT / "deploy" / "haproxy.cfg"
# fp32: lavapipe emulates f16. The random model never ends a text early, so a stream runs as long as asked.
REPLICA_ARGS = [str(ensure_random_model()), "--model.precision", "fp32", "--drain-timeout", "60"]
TIMEOUT = 120


@dataclass
class Cluster:
    tmp: Path
    ports: list[int]  # the replicas' ports, as AI00_REPLICA_1 and _2 give them to HAProxy
    replicas: list[ServerProcess]
    proxy: subprocess.Popen
    base: str  # http://127.0.0.1:PORT of HAProxy
    restarts: int = 0
    homes: dict[int, str] = field(default_factory=dict)  # replica index -> a session id the hash sends there

    def start_replica(self, i: int) -> ServerProcess:
        self.restarts += 1
        log = self.tmp / f"replica{i + 1}-{self.restarts}.log"
        self.replicas[i] = ServerProcess(REPLICA_ARGS, log, port=self.ports[i])
        return self.replicas[i]

    def served(self) -> list[int]:
        """Requests each replica has taken so far (a replica that is down counts as -1)."""
        return [requests_total(r) for r in self.replicas]

    def where(self, send: Callable[[], Any]) -> tuple[int, Any]:
        """Which replica took the one request `send` makes, and what it answered."""
        before = self.served()
        answer = send()
        moved = [i for i, (a, b) in enumerate(zip(before, self.served(), strict=True)) if b > a]
        assert len(moved) == 1, (before, self.served())
        return moved[0], answer


def requests_total(replica: ServerProcess) -> int:
    if replica.proc.poll() is not None:
        return -1
    text = httpx.get(f"{replica.base}/metrics", timeout=10).text
    return int(sum(s.value for f in text_string_to_metric_families(text) if f.name == "ai00:requests"
                   for s in f.samples if s.name == "ai00:requests_total"))  # fmt: skip


def post(cluster: Cluster, path: str, body: dict[str, Any], session: str | None = None) -> httpx.Response:
    headers = {"X-Session-Id": session} if session else {}
    return httpx.post(f"{cluster.base}{path}", json=body, headers=headers, timeout=TIMEOUT)


def complete(cluster: Cluster, session: str | None = None, **body: Any) -> dict[str, Any]:
    r = post(cluster, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 2, **body}, session)
    assert r.status_code == 200, r.text
    return r.json()


def chat(cluster: Cluster, messages: list[dict[str, str]], session: str | None = None, **body: Any) -> dict[str, Any]:
    r = post(cluster, "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "temperature": 0.0, **body},
             session)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def wait_proxy(port: int, proxy: subprocess.Popen, log: Path) -> None:
    for _ in range(200):
        assert proxy.poll() is None, log.read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(log.read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("haproxy")
    ports, lb_port = [free_port(), free_port()], free_port()
    cluster = Cluster(tmp, ports, [None, None], None, f"http://127.0.0.1:{lb_port}")  # type: ignore[arg-type]
    for i in range(2):
        cluster.start_replica(i)
    try:
        for replica in cluster.replicas:
            replica.wait_healthy()
        env = {**os.environ, "AI00_LB_BIND": f"127.0.0.1:{lb_port}", "AI00_REPLICA_1": f"127.0.0.1:{ports[0]}",
               "AI00_REPLICA_2": f"127.0.0.1:{ports[1]}"}  # fmt: skip
        log = tmp / "haproxy.log"
        with log.open("wb") as out:  # -db: in the foreground, a child of the test
            cluster.proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG)], env=env, stdout=out,
                                             stderr=subprocess.STDOUT)  # fmt: skip
        wait_proxy(lb_port, cluster.proxy, log)
        for n in range(16):  # a conversation for each replica, found the way a client would land there
            i, _ = cluster.where(lambda n=n: complete(cluster, f"conversation-{n}", max_tokens=1))
            cluster.homes.setdefault(i, f"conversation-{n}")
            if len(cluster.homes) == 2:
                break
        assert len(cluster.homes) == 2, cluster.homes
        yield cluster
    finally:
        if cluster.proxy is not None:
            cluster.proxy.terminate()
            cluster.proxy.wait(10)
        for replica in cluster.replicas:
            replica.stop()


def test_requests_without_a_session_spread_over_both_replicas(cluster: Cluster) -> None:
    before = cluster.served()
    for _ in range(4):
        complete(cluster)
    after = cluster.served()
    assert all(b - a >= 1 for a, b in zip(before, after, strict=True)), (before, after)


def test_one_x_session_id_stays_on_one_replica_and_its_follow_up_reuses_the_cached_state(cluster: Cluster) -> None:
    used = set()
    for session in ("chat-alice", "chat-bob", "chat-carol", "chat-dave"):
        messages = [{"role": "user", "content": f"Hello, I am {session}. Name a colour."}]
        home, first = cluster.where(lambda: chat(cluster, messages, session))  # noqa: B023
        follow_up = [*messages, first["choices"][0]["message"], {"role": "user", "content": "And another?"}]
        again, second = cluster.where(lambda: chat(cluster, follow_up, session))  # noqa: B023
        assert again == home, session
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, second["usage"]
        used.add(home)
    assert used == {0, 1}  # and conversations are spread too


def test_without_the_header_the_openai_user_field_keeps_a_conversation_on_one_replica(cluster: Cluster) -> None:
    for user in ("user-erin", "user-frank"):
        messages = [{"role": "user", "content": f"I am {user}. What is rain?"}]
        home, first = cluster.where(lambda: chat(cluster, messages, user=user))  # noqa: B023
        follow_up = [*messages, first["choices"][0]["message"], {"role": "user", "content": "Why?"}]
        for _ in range(2):
            again, answer = cluster.where(lambda: chat(cluster, follow_up, user=user))  # noqa: B023
            assert again == home, user
            assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, answer["usage"]


def test_a_websocket_session_works_through_the_proxy(cluster: Cluster) -> None:
    async def converse() -> list[dict[str, Any]]:
        url = cluster.base.replace("http", "ws", 1) + "/api/ws"
        async with await Client.connect(url, additional_headers={"X-Session-Id": "ws-conversation"}) as client:
            messages = [{"role": "user", "content": "Tell me about the sea."}]
            gen = await client.generate(messages=messages, params={"max_tokens": 4, "temperature": 0.0})
            [done] = await gen.wait()
            follow_up = [*messages, {"role": "assistant", "content": gen.texts[0]},
                         {"role": "user", "content": "More."}]  # fmt: skip
            again = await client.generate(messages=follow_up, params={"max_tokens": 4, "temperature": 0.0})
            await again.wait()
            return [gen.started, done, again.started]

    started, done, follow_up = asyncio.run(converse())
    assert started["prompt_tokens"] > 0 and done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 4
    assert follow_up["cached_tokens"] > 0  # one socket, one replica: the follow-up starts from its state


def test_a_saved_state_moves_to_the_other_replica_by_export_and_import(cluster: Cluster) -> None:
    here, there = cluster.homes[0], cluster.homes[1]
    answer = complete(cluster, here, max_tokens=3)
    saved = post(cluster, "/api/states/save", {"id": answer["id"]}, here)
    assert saved.status_code == 200, saved.text
    handle = saved.json()["handle"]
    exported = httpx.get(f"{cluster.base}/api/states/{handle}", headers={"X-Session-Id": here}, timeout=TIMEOUT)
    assert exported.status_code == 200, exported.text
    assert post(cluster, "/v1/completions", {"prompt": " and", "state": handle}, there).status_code == 400  # unknown
    imported = httpx.post(f"{cluster.base}/api/states/import", content=exported.content, timeout=TIMEOUT,
                          headers={"X-Session-Id": there, "Content-Type": "application/octet-stream"})  # fmt: skip
    assert imported.status_code == 200, imported.text
    i, _ = cluster.where(lambda: complete(cluster, there, prompt=" and", state=imported.json()["handle"]))
    assert i == 1


def stream(cluster: Cluster, session: str, max_tokens: int, started: threading.Event, out: dict[str, Any]) -> None:
    """A streamed completion: its SSE lines, and the error that ended it, if one did."""
    body = {"prompt": "A long story:", "max_tokens": max_tokens, "stream": True}
    try:
        with httpx.stream("POST", f"{cluster.base}/v1/completions", json=body, headers={"X-Session-Id": session},
                          timeout=TIMEOUT) as r:  # fmt: skip
            out["status"] = r.status_code
            for line in r.iter_lines():
                started.set()
                out.setdefault("lines", []).append(line)
    except httpx.TransportError as e:
        out["error"] = e
    finally:
        started.set()


def new_requests(cluster: Cluster, session: str) -> list[int]:
    """Six short requests at once, half of them for the conversation whose replica is going away."""
    with ThreadPoolExecutor(6) as pool:
        sends = [pool.submit(post, cluster, "/v1/completions", {"prompt": "Hi", "max_tokens": 2}, s)
                 for s in [session, None] * 3]  # fmt: skip
        return [f.result().status_code for f in sends]


def test_killing_a_replica_fails_no_new_request_and_it_rejoins_when_back(cluster: Cluster) -> None:
    victim, session = 0, cluster.homes[0]
    out: dict[str, Any] = {}
    started = threading.Event()
    thread = threading.Thread(target=stream, args=(cluster, session, 400, started, out))  # killed long before its end
    thread.start()
    assert started.wait(TIMEOUT) and out["status"] == 200
    cluster.replicas[victim].proc.kill()  # SIGKILL: no drain, the in-flight stream is cut
    cluster.replicas[victim].stop()
    assert new_requests(cluster, session) == [200] * 6
    thread.join(TIMEOUT)
    assert isinstance(out.get("error"), httpx.RemoteProtocolError), out  # the client sees the cut
    assert "data: [DONE]" not in out["lines"]

    cluster.start_replica(victim).wait_healthy()
    deadline = time.monotonic() + 30  # HAProxy's health check: rise 2 x inter 2 s
    while cluster.where(lambda: complete(cluster, session))[0] != victim:
        assert time.monotonic() < deadline, "the restarted replica did not get its conversations back"
        time.sleep(0.5)
    before = cluster.served()
    for _ in range(2):
        complete(cluster)
    assert cluster.served()[victim] > before[victim]  # and least connections sends it new work again


def test_a_draining_replica_finishes_its_stream_while_new_requests_go_to_the_other(cluster: Cluster) -> None:
    leaving, session = 1, cluster.homes[1]
    out: dict[str, Any] = {}
    started = threading.Event()
    thread = threading.Thread(target=stream, args=(cluster, session, 40, started, out))  # a few seconds on lavapipe
    thread.start()
    assert started.wait(TIMEOUT) and out["status"] == 200
    cluster.replicas[leaving].proc.send_signal(signal.SIGTERM)  # drains: /health and new requests get 503
    time.sleep(0.2)
    assert new_requests(cluster, session) == [200] * 6
    thread.join(TIMEOUT)
    assert "error" not in out and out["lines"][-2:] == ["data: [DONE]", ""], out.get("error")
    assert cluster.replicas[leaving].proc.wait(60) == 0
