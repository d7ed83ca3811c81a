"""Prometheus metrics, named as vLLM names its own (`vllm:x` -> `ai00:x`) so dashboards and alerts carry over.

The scheduler thread observes requests as they move (SchedulerMetrics); what describes the served model
(model info, GPU memory) is read when /metrics is scraped (ModelCollector). Each server has its own
registry: no global state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.messages import Submit
from backend.sessions import Session

# vLLM's buckets: from a fast GPU's first token to a long queue's
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)  # fmt: skip
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


class CacheSizes(Protocol):
    """What the metrics read of backend/state_cache.StateCache."""

    def tier_bytes(self) -> dict[str, int]: ...

    def tier_entries(self) -> dict[str, int]: ...


class SchedulerMetrics:
    """What the scheduler thread observes: requests, tokens, latencies, slots, the prefix cache, steps."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes etc., so a soak can watch memory remotely
        self.requests = Counter("ai00:requests", "Requests submitted", ["kind"], registry=r)
        self.rejected = Counter("ai00:requests_rejected", "Requests refused before start", ["code"], registry=r)
        self.finished = Counter("ai00:request_success", "Generations ended, by finish reason (stop, length, "
                                "grammar, cancelled, error)", ["finished_reason"], registry=r)  # fmt: skip
        self.prompt_tokens = Counter("ai00:prompt_tokens", "Prompt tokens fed to the engine", registry=r)
        self.generation_tokens = Counter("ai00:generation_tokens", "Tokens generated", registry=r)
        self.prefix_queries = Counter("ai00:prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      registry=r)  # fmt: skip
        self.prefix_hits = Counter("ai00:prefix_cache_hits", "Prompt tokens restored from the prefix cache",
                                   registry=r)  # fmt: skip
        self.cache_queries = Counter("ai00:state_cache_queries", "Requests looked up in the state cache", registry=r)
        self.cache_hits = Counter("ai00:state_cache_hits", "Requests that started from a cached state, by tier",
                                  ["tier"], registry=r)  # fmt: skip
        self.cache_tokens_saved = Counter("ai00:state_cache_tokens_saved", "Prompt tokens not fed thanks to the "
                                          "state cache", registry=r)  # fmt: skip
        self.cache_bytes = Gauge("ai00:state_cache_bytes", "Bytes of cached states, by tier", ["tier"], registry=r)
        self.cache_entries = Gauge("ai00:state_cache_entries", "Cached states, by tier", ["tier"], registry=r)
        self.running = Gauge("ai00:num_requests_running", "Sessions holding a slot", registry=r)
        self.waiting = Gauge("ai00:num_requests_waiting", "Sessions waiting for a slot", registry=r)
        self.slot_usage = Gauge("ai00:slot_usage_perc", "Fraction of state slots in use (vLLM: kv_cache_usage_perc)",
                                registry=r)  # fmt: skip
        self.ttft = Histogram("ai00:time_to_first_token_seconds", "Submit to first token", buckets=TTFT_BUCKETS,
                              registry=r)  # fmt: skip
        self.itl = Histogram("ai00:inter_token_latency_seconds", "Between two tokens of one generation",
                             buckets=ITL_BUCKETS, registry=r)  # fmt: skip
        self.e2e = Histogram("ai00:e2e_request_latency_seconds", "Submit to the end of a generation",
                             buckets=REQUEST_BUCKETS, registry=r)  # fmt: skip
        self.queue_time = Histogram("ai00:request_queue_time_seconds", "Submit to a slot", buckets=REQUEST_BUCKETS,
                                    registry=r)  # fmt: skip
        self.step_rows = Histogram("ai00:step_rows", "Rows (sequences) per engine step",
                                   buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)  # fmt: skip
        self.step_tokens = Histogram("ai00:step_tokens", "Tokens per engine step",
                                     buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=r)  # fmt: skip
        self.step_seconds = Histogram("ai00:step_seconds", "Engine step time (with sampling)", registry=r)

    def admitted(self, sub: Submit, cached: int, looked_up: bool, tier: str | None = None) -> None:
        """A request got its slots: its wait, and what the state cache held of its prompt (from `tier`)."""
        self.queue_time.observe(time.monotonic() - sub.submitted_at)
        if looked_up:
            self.prefix_queries.inc(len(sub.tokens))
            self.prefix_hits.inc(cached)
            self.cache_queries.inc()
            self.cache_tokens_saved.inc(cached)
        if tier is not None:
            self.cache_hits.labels(tier).inc()

    def cache_stored(self, cache: CacheSizes) -> None:
        """A state went into the cache (perhaps pushing others to the host tier or out): its size per tier."""
        for tier, n in cache.tier_bytes().items():
            self.cache_bytes.labels(tier).set(n)
        for tier, n in cache.tier_entries().items():
            self.cache_entries.labels(tier).set(n)

    def token(self, s: Session) -> None:
        """A token was taken by `s` (after Session.accept): time to first token, or since the one before."""
        self.generation_tokens.inc()
        if len(s.out_tokens) == 1:
            self.ttft.observe(s.first_token_at - s.submit.submitted_at)
        elif s.prev_token_at:
            self.itl.observe(s.last_token_at - s.prev_token_at)

    def ended(self, s: Session) -> None:
        self.finished.labels(s.finish_reason or "cancelled").inc()
        self.e2e.observe(time.monotonic() - s.submit.submitted_at)

    def occupancy(self, running: int, waiting: int, slots_used: int, slots: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.slot_usage.set(slots_used / slots)


class ModelCollector(Collector):
    """ai00:model_info (labels describe the served model) and ai00:gpu_memory_bytes, read at scrape time."""

    def __init__(self, labels: Callable[[], dict[str, Any] | None], gpu_bytes: Callable[[], int | None]) -> None:
        self._labels, self._gpu_bytes = labels, gpu_bytes  # not `describe`: the registry would call it

    def collect(self) -> Iterator[Any]:
        labels = self._labels()
        if labels is not None:
            yield InfoMetricFamily("ai00:model", "The served model", value={k: str(v) for k, v in labels.items()})
        n = self._gpu_bytes()
        if n is not None:
            yield GaugeMetricFamily("ai00:gpu_memory_bytes", "GPU memory held by the engine (weights, states, "
                                    "workspace, staging)", value=n)  # fmt: skip


LOG_EVERY_S = 2.0


class LabelledRegistries(Collector):
    """Several engines' registries as one exposition: each sample gets its engine's labels (model, engine), each
    family appears once; the process's own metrics once, unlabelled (the engines share the process)."""

    def __init__(self, sources: Sequence[tuple[dict[str, str], CollectorRegistry]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Any]:
        merged: dict[str, Metric] = {}
        for labels, registry in self._sources:
            for family in registry.collect():
                process = family.name.startswith("process_")
                if process and family.name in merged:
                    continue
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                             family.unit))  # fmt: skip
                for s in family.samples:
                    into.add_sample(s.name, s.labels if process else {**s.labels, **labels}, s.value, s.timestamp,
                                    s.exemplar)  # fmt: skip
        yield from merged.values()


class StepStats:
    """Logs a line every few seconds while busy, so batching is visible: rows per step, tokens, speed."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since, self.steps, self.rows, self.max_rows, self.tokens, self.busy_s = now, 0, 0, 0, 0, 0.0

    def record(self, rows: int, tokens: int, dt: float) -> None:
        self.steps += 1
        self.rows += rows
        self.max_rows = max(self.max_rows, rows)
        self.tokens += tokens
        self.busy_s += dt
        self.log.debug("step: %d rows, %d tokens, %.1f ms", rows, tokens, dt * 1e3)
        now = time.monotonic()
        if now - self.since >= LOG_EVERY_S:
            self.log.info(
                "engine: %d steps, batch rows mean %.1f max %d, %d tokens, %.1f steps/s busy",
                self.steps,
                self.rows / self.steps,
                self.max_rows,
                self.tokens,
                self.steps / max(self.busy_s, 1e-9),
            )
            self._reset(now)
