"""Stream a model's continuation of a prompt to the terminal.

python -m backend.tools.generate MODEL.st "prompt" [--max-tokens N] [--temperature T] [--top-p P]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from backend.gpu.engine import Engine
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.sampling.cpu import record_token, sample_token
from backend.sampling.params import SamplerParams
from backend.tokenizer import Detokenizer, Tokenizer


def generate(
    engine: Engine, prompt: list[int], params: SamplerParams, chunk: int = 128, slot: int = 0
) -> Iterator[int]:
    """Prefill `prompt` in chunks, then yield sampled tokens until max_tokens or end-of-text (id 0)."""
    engine.reset_slot(slot)
    logits = None
    for start in range(0, len(prompt), chunk):
        part = tuple(prompt[start : start + chunk])
        last = start + chunk >= len(prompt)
        result = engine.step(StepPlan((StepRow(slot, part, Logits.LAST if last else Logits.NONE),)))
        logits = result.logits[0] if last else None
    assert logits is not None
    rng = np.random.default_rng(params.seed)
    counts = np.zeros(engine.info.n_vocab, np.float32)
    for _ in range(params.max_tokens):
        token = sample_token(logits, counts, params, rng)
        if token == 0:
            return
        record_token(counts, token, params)
        yield token
        logits = engine.step(StepPlan((StepRow(slot, (token,)),))).logits[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m backend.tools.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help=".st model file")
    parser.add_argument("prompt")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_file()
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        parser.error("prompt: empty after tokenization")
    engine = Engine.load(args.model, max_batch=1, max_step_tokens=128, precision=args.precision)
    params = SamplerParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    detok = Detokenizer(tokenizer)
    sys.stdout.write(args.prompt)
    start, n = time.perf_counter(), 0
    for token in generate(engine, prompt, params):
        sys.stdout.write(detok.push(token))
        sys.stdout.flush()
        n += 1
    sys.stdout.write(detok.flush() + "\n")
    elapsed = time.perf_counter() - start
    print(f"[{n} tokens in {elapsed:.2f} s, {n / max(elapsed, 1e-9):.1f} tok/s]", file=sys.stderr)


if __name__ == "__main__":
    main()
