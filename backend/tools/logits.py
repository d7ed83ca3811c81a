"""Diagnostic: the engine's logits for every position of a token list.

    python -m backend.tools.logits MODEL.st --tokens 1,2,3 --out logits.npy [--chunk N] [--precision fp32|fp16]
        [--quant N --quant-type int8|nf4]

Writes float32 [len(tokens), vocab]. The tokens are fed in chunks of N (default: all at once),
each chunk continuing the previous chunk's state, so chunking can be checked against the reference.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from backend.gpu.engine import Engine
from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.tools.engine_args import add_engine_args, engine_kwargs


def logits_for(engine: Engine, tokens: Sequence[int], chunk: int, slot: int = 0) -> np.ndarray:
    """[len(tokens), vocab] f32: each position's logits, fed `chunk` tokens per step."""
    engine.reset_slot(slot)
    lines = []
    for start in range(0, len(tokens), chunk):
        row = StepRow(slot, tuple(tokens[start : start + chunk]), Logits.ALL)
        lines.append(engine.step(StepPlan((row,))).logits)
    return np.concatenate(lines)


def parse_tokens(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--tokens: expected comma-separated integers ({e})") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m backend.tools.logits", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help=".st model file")
    parser.add_argument("--tokens", type=parse_tokens, required=True, help="comma-separated token ids")
    parser.add_argument("--out", required=True, help="output .npy path")
    parser.add_argument("--chunk", type=int, default=0, help="tokens per step (default: all in one step)")
    add_engine_args(parser, precision="fp32")
    args = parser.parse_args(argv)
    if not args.tokens:
        parser.error("--tokens: no token ids given")
    chunk = args.chunk or len(args.tokens)
    engine = Engine.load(args.model, max_batch=1, max_step_tokens=max(chunk, 1), **engine_kwargs(args))
    result = logits_for(engine, args.tokens, chunk)
    np.save(args.out, result.astype(np.float32))
    print(f"wrote {args.out}: {result.shape[0]} x {result.shape[1]} float32 logits")


if __name__ == "__main__":
    main()
