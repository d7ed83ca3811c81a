"""Tokens prefilled per turn of a 5-turn conversation through the Responses API: a follow-up that names
`previous_response_id` against one that resends the whole conversation (what a chat-completions client
does), on an in-process server with the demo model on the CPU (lavapipe).

    python -m bench.responses_turns [--turns 5] [--tokens 24] [--pressure N --gpu-slots 2 --host-bytes 0]

Each way runs under its own API key, so neither finds the other's states in the state cache (namespaced per
key). "conversation" is every token the model reads before answering: what a server without any state cache
prefills on a resend. Greedy decoding; the last column says whether both ways wrote the same answer.
`--pressure N` runs N short unrelated requests (a third key) between turns, which push the conversation's states
out of a small state cache (`--gpu-slots`, `--host-bytes`): then a follow-up finds them only in the saved state
its previous response pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from typing import Any

import openai
from aiohttp import web

from backend.api.context import SERVER
from backend.app import create_app
from backend.config import Config
from backend.tools.demo_model import ensure_demo_model

KEYS = ("sk-previous-response-id", "sk-resend", "sk-other-traffic")
INSTRUCTIONS = "You are a helpful assistant. Answer in one sentence."
QUESTIONS = ["What is a compiler?", "And an interpreter?", "Which one is faster?", "Why?", "Name one of each.",
             "Thanks. One more?", "Is Python compiled?"]  # fmt: skip


def serve(config: Config) -> tuple[str, asyncio.AbstractEventLoop]:
    """The app on a loopback port, in a thread of its own; its base URL once the model is loaded."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> int:
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        await runner.app[SERVER].readiness.settled.wait()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=300)
    return f"http://127.0.0.1:{port}/v1", loop


def prefilled(resp: Any) -> int:
    return resp.usage.input_tokens - resp.usage.input_tokens_details.cached_tokens


def run(base: str, turns: int, tokens: int, pressure: int) -> list[tuple[int, int, int, bool]]:
    """(conversation tokens, prefilled with previous_response_id, prefilled resending, same answer) per turn."""
    chained, resend, other = (openai.OpenAI(base_url=base, api_key=k, max_retries=0, timeout=600) for k in KEYS)
    args = {"model": "rwkv", "temperature": 0, "max_output_tokens": tokens, "instructions": INSTRUCTIONS}
    rows, previous, history = [], None, []
    for question in QUESTIONS[:turns]:
        a = chained.responses.create(input=question, previous_response_id=previous, **args)
        history.append({"role": "user", "content": question})
        for i in range(pressure):
            other.responses.create(input=f"Unrelated question {i}?", model="rwkv", max_output_tokens=2, store=False)
        b = resend.responses.create(input=history, **args)
        history.append({"role": "assistant", "content": b.output_text})
        rows.append((a.usage.input_tokens, prefilled(a), prefilled(b), a.output_text == b.output_text))
        previous = a.id
        for i in range(pressure):
            other.responses.create(input=f"Another one {i}?", model="rwkv", max_output_tokens=2, store=False)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=24, help="max_output_tokens of each answer")
    ap.add_argument("--pressure", type=int, default=0, help="unrelated requests between turns")
    ap.add_argument("--gpu-slots", type=int, default=8, help="model.prefix_cache: the state cache's GPU tier")
    ap.add_argument("--host-bytes", default="auto", help="cache.host_bytes: its host tier")
    args = ap.parse_args(argv)
    host_bytes = args.host_bytes if args.host_bytes == "auto" else int(args.host_bytes)
    config = Config.from_dict({
        "model": {"path": str(ensure_demo_model()), "precision": "fp32", "max_batch": 4,
                  "prefix_cache": args.gpu_slots},
        "cache": {"host_bytes": host_bytes},
        "listen": {"ip": "127.0.0.1", "port": 0, "api_keys": list(KEYS)},
    })  # fmt: skip
    base, _ = serve(config)
    rows = run(base, args.turns, args.tokens, args.pressure)
    print("| turn | conversation tokens | prefilled, previous_response_id | prefilled, resending | same answer |")
    print("| ---: | ---: | ---: | ---: | :---: |")
    for i, (total, chained, resent, same) in enumerate(rows, 1):
        print(f"| {i} | {total} | {chained} | {resent} | {'yes' if same else 'no'} |")
    sums = [sum(r[k] for r in rows[1:]) for k in range(3)]
    print(f"| follow-ups (2..{len(rows)}) | {sums[0]} | {sums[1]} | {sums[2]} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
