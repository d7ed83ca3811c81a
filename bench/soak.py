"""Soak a running server: many concurrent streams (half SSE, half WebSocket) for minutes, then the figures.

    python -m bench.soak http://127.0.0.1:65530 --streams 256 --minutes 10 [--api-key KEY] [--tokens 64]

Each stream runs generations back to back until the time is up, each with its own seed. A generation counts as
ok when it ends with `length` or `stop` and its token count matches its text; 429 / `overloaded` answers are
counted apart (the client waits Retry-After and tries again); anything else is an error. Server memory comes
from /metrics (process_resident_memory_bytes): at start, after a warm-up (`before`: the first large batches build
their step buffers and pipelines), and after the run once every slot is free again (`after`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx2 as httpx
import orjson

from backend.client import Client, GenerationError


@dataclass
class Tally:
    generations: int = 0
    tokens: int = 0
    rejected: int = 0  # 429 / overloaded: the server said "later", as it should when full
    errors: Counter = field(default_factory=Counter)  # kind -> count
    first_error: dict[str, str] = field(default_factory=dict)
    ttft_s: dict[str, list[float]] = field(default_factory=lambda: {"sse": [], "ws": []})  # request -> first text
    gaps_s: dict[str, list[float]] = field(default_factory=lambda: {"sse": [], "ws": []})  # between text events

    def timing(self, kind: str, start: float, arrivals: list[float]) -> None:
        """A finished generation's text-event times (time.monotonic) since its request left at `start`."""
        if arrivals:
            self.ttft_s[kind].append(arrivals[0] - start)
            self.gaps_s[kind].extend(b - a for a, b in itertools.pairwise(arrivals))

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.first_error.setdefault(kind, detail[:300])


def prompt_of(rng: random.Random) -> str:
    return "Soak " + " ".join(
        rng.choice(["red", "fox", "river", "stone", "light", "wind"]) for _ in range(rng.randint(1, 40))
    )


async def sse_stream(http: httpx.AsyncClient, base: str, headers: dict, rng: random.Random, tokens: int, t: Tally):
    body = {"prompt": prompt_of(rng), "max_tokens": tokens, "seed": rng.randrange(1 << 31), "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    start, arrivals = time.monotonic(), []
    async with http.stream("POST", f"{base}/api/oai/v1/completions", json=body, headers=headers) as r:
        if r.status_code == 429:
            t.rejected += 1
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            return
        if r.status_code != 200:
            return t.error(f"http {r.status_code}", (await r.aread()).decode(errors="replace"))
        finish, used = None, None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if "error" in chunk:
                return t.error("sse error", str(chunk["error"]))
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                finish = choice.get("finish_reason") or finish
                if choice.get("text"):
                    arrivals.append(time.monotonic())
    if finish not in ("length", "stop") or used is None or (finish == "length" and used != tokens):
        return t.error("sse end", f"finish_reason {finish}, completion_tokens {used}")
    t.generations += 1
    t.tokens += used
    t.timing("sse", start, arrivals)


async def ws_stream(client: Client, rng: random.Random, tokens: int, t: Tally):
    start, arrivals = time.monotonic(), []
    gen = await client.generate(prompt_of(rng), params={"max_tokens": tokens, "seed": rng.randrange(1 << 31)})
    try:
        async for frame in gen:
            if frame["type"] == "delta" and frame["text"]:
                arrivals.append(time.monotonic())
        (done,) = gen.dones
    except GenerationError as e:
        if e.frame.get("code") == "overloaded":
            t.rejected += 1
            await asyncio.sleep(1.0)
            return
        return t.error(f"ws {e.frame.get('code')}", e.frame.get("message", ""))
    used = done["usage"]["completion_tokens"]
    if done["finish_reason"] not in ("length", "stop") or done["text"] != gen.texts[0]:
        return t.error(
            "ws end", f"finish_reason {done['finish_reason']}, text matches deltas: {done['text'] == gen.texts[0]}"
        )
    t.generations += 1
    t.tokens += used
    t.timing("ws", start, arrivals)


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50 / p99 in milliseconds (None when nothing was measured)."""
    if not values:
        return {"p50": None, "p99": None}
    ordered = sorted(values)
    pick = lambda q: round(1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99)}


async def run_stream(i: int, args: argparse.Namespace, http: httpx.AsyncClient, deadline: float, t: Tally):
    rng = random.Random(i)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    ws_url = args.url.replace("http", "ws", 1) + "/api/ws"
    client = None
    while time.monotonic() < deadline:
        try:
            if i % 2 == 0:
                await sse_stream(http, args.url, headers, rng, args.tokens, t)
            else:
                client = client or await Client.connect(ws_url, api_key=args.api_key, open_timeout=60)
                await ws_stream(client, rng, args.tokens, t)
        except Exception as e:  # a soak counts failures instead of stopping at the first
            t.error(type(e).__name__, repr(e))
            if client is not None:
                await asyncio.gather(client.close(), return_exceptions=True)
            client = None
            await asyncio.sleep(0.5)
    if client is not None:
        await asyncio.gather(client.close(), return_exceptions=True)


def server_rss(url: str, headers: dict) -> int | None:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    line = next((x for x in text.splitlines() if x.startswith("process_resident_memory_bytes ")), None)
    return int(float(line.split()[1])) if line else None


def wait_idle(url: str, timeout: float = 60.0) -> bool:
    """Every slot free again (the server's /health view)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        slots = httpx.get(f"{url}/health", timeout=30).json()["slots"]
        if slots["free"] == slots["total"]:
            return True
        time.sleep(0.2)
    return False


async def soak(args: argparse.Namespace, seconds: float) -> Tally:
    t = Tally()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=args.streams, max_keepalive_connections=args.streams)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(run_stream(i, args, http, deadline, t) for i in range(args.streams)))
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:65530")
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seconds", type=float, help="run time in seconds (instead of --minutes)")
    p.add_argument("--tokens", type=int, default=64, help="max_tokens of every generation")
    p.add_argument("--api-key", default=None)
    p.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="seconds of load before memory is read as 'before' (step buckets and pipelines get built)",
    )
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    args.url = args.url.rstrip("/")
    args.seconds = args.seconds if args.seconds is not None else args.minutes * 60
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    health = httpx.get(f"{args.url}/health", timeout=30).json()
    at_start = server_rss(args.url, headers)
    if args.warmup > 0:
        warm = asyncio.run(soak(args, args.warmup))
        wait_idle(args.url)
        print(f"warm-up: {args.warmup:.0f} s, {warm.generations} generations, errors {dict(warm.errors)}", flush=True)
    before = server_rss(args.url, headers)
    print(f"soak: {args.streams} streams for {args.seconds:.0f} s against {args.url} ({health['model']}, "
          f"{health['slots']['total']} slots), {args.tokens} tokens a generation", flush=True)  # fmt: skip
    start = time.monotonic()
    t = asyncio.run(soak(args, args.seconds))
    elapsed = time.monotonic() - start
    idle = wait_idle(args.url)
    after = server_rss(args.url, headers)
    health = httpx.get(f"{args.url}/health", timeout=30).json()

    figures = {
        "streams": args.streams, "seconds": round(elapsed, 1), "generations": t.generations, "tokens": t.tokens,
        "tokens_per_s": round(t.tokens / elapsed, 1), "rejected_429": t.rejected, "errors": dict(t.errors),
        "first_error": t.first_error,
        "rss_at_start_mib": at_start and round(at_start / 2**20, 1),
        "rss_before_mib": before and round(before / 2**20, 1),
        "rss_after_mib": after and round(after / 2**20, 1), "all_slots_free_after": idle,
        "health_after": health["status"],
        "ttft_ms": {kind: percentiles_ms(v) for kind, v in t.ttft_s.items()},
        "inter_token_gap_ms": {kind: percentiles_ms(v) for kind, v in t.gaps_s.items()},
    }  # fmt: skip
    for key, value in figures.items():
        print(f"  {key:22} {value}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=2)
    ok = not t.errors and idle and health["status"] == "ok" and t.generations > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
