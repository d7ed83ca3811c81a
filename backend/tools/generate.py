"""Stream a model's continuation of a prompt to the terminal.

python -m backend.tools.generate MODEL.st "prompt" [--max-tokens N] [--temperature T] [--top-p P]
    [--precision fp32|fp16] [--quant N --quant-type int8|nf4]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from backend.gpu.engine import Engine
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.sampling.params import SamplerParams
from backend.tokenizer import Detokenizer, Tokenizer
from backend.tools.engine_args import add_engine_args, engine_kwargs


def generate(
    engine: Engine, prompt: list[int], params: SamplerParams, chunk: int = 128, slot: int = 0
) -> Iterator[int]:
    """Prefill `prompt` in chunks (the last one with the first draw), then yield tokens drawn on the GPU
    until max_tokens or end-of-text (id 0)."""
    engine.reset_slot(slot)
    rng = np.random.default_rng(params.seed)
    rows: tuple[StepRow, ...] = ()
    for start in range(0, len(prompt), chunk):
        part = tuple(prompt[start : start + chunk])
        rows = (StepRow(slot, part, Logits.LAST if start + chunk >= len(prompt) else Logits.NONE),)
        if start + chunk < len(prompt):
            engine.step(StepPlan(rows))
    for i in range(params.max_tokens):
        (drawn,) = engine.step(StepPlan(rows, (params.draw(0, slot, rng, fresh=i == 0),))).drawn
        if drawn.token == 0:
            return
        yield drawn.token
        rows = (StepRow(slot, (drawn.token,)),)


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
    add_engine_args(parser, precision="fp16")
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_file()
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        parser.error("prompt: empty after tokenization")
    engine = Engine.load(args.model, max_batch=1, max_step_tokens=128, **engine_kwargs(args))
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
