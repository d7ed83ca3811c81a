"""Each vLLM-named metric moves as requests run (backend/metrics.py), read the way Prometheus reads them."""

from __future__ import annotations

import threading
import time

import httpx2 as httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import MODEL_ID, LiveServer


def scrape(live: LiveServer) -> dict[tuple[str, tuple], float]:
    """(sample name, labels) -> value."""
    text = httpx.get(f"{live.base}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def complete(live: LiveServer, prompt: str, max_tokens: int, n: int = 1) -> None:
    r = httpx.post(f"{live.v1}/completions", headers=live.headers, timeout=120,
                   json={"prompt": prompt, "max_tokens": max_tokens, "n": n, "temperature": 1.0})  # fmt: skip
    assert r.status_code == 200, r.text


def test_each_new_metric_moves_while_requests_run(live: LiveServer):
    before = scrape(live)
    prompt = "A long shared preamble about metrics and what they count."
    complete(live, prompt, 4)  # caches the prompt's state: the next prompts start with its tokens
    # three requests of 4 branches on 8 slots: while they run, some hold every slot and one waits
    peak: dict[str, float] = {}
    threads = [threading.Thread(target=complete, args=(live, prompt + f"\nQuestion {i}", 16, 4)) for i in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        now = scrape(live)
        for name in ("ai00:num_requests_running", "ai00:num_requests_waiting", "ai00:slot_usage_perc"):
            peak[name] = max(peak.get(name, 0.0), value(now, name))
        time.sleep(0.02)
    for t in threads:
        t.join()
    after = scrape(live)

    def grew(name: str, **labels: str) -> bool:
        return value(after, name, **labels) > value(before, name, **labels)

    for histogram in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                      "request_queue_time_seconds"):  # fmt: skip
        assert grew(f"ai00:{histogram}_count") and grew(f"ai00:{histogram}_sum"), histogram
    assert value(after, "ai00:request_success_total", finished_reason="length") - value(
        before, "ai00:request_success_total", finished_reason="length") >= 12  # fmt: skip
    assert grew("ai00:prefix_cache_queries_total") and grew("ai00:prefix_cache_hits_total")
    assert peak["ai00:num_requests_running"] >= 4 and peak["ai00:num_requests_waiting"] >= 4
    assert peak["ai00:slot_usage_perc"] == 1.0
    assert value(after, "ai00:num_requests_running") == value(after, "ai00:slot_usage_perc") == 0
    model = next(labels for (name, labels) in after if name == "ai00:model_info")
    assert ("model_name", MODEL_ID) in model and ("n_layer", "2") in model and ("max_batch", "8") in model
    assert value(after, "ai00:gpu_memory_bytes") > 1 << 20


def test_metrics_are_open_without_any_key_by_default(live: LiveServer):
    assert live.server.config.listen.api_keys  # the shared server wants an API key everywhere else
    assert httpx.get(f"{live.base}/metrics").status_code == 200
