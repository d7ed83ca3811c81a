"""The engine flags the command-line tools share: precision and quantization, as [model] names them."""

from __future__ import annotations

import argparse
from typing import Any


def add_engine_args(parser: argparse.ArgumentParser, precision: str) -> None:
    parser.add_argument("--precision", choices=("fp32", "fp16"), default=precision)
    parser.add_argument("--quant", type=int, default=0, metavar="N", help="quantize the first N layers (default 0)")
    parser.add_argument("--quant-type", choices=("int8", "nf4"), default="int8", help="with --quant (default int8)")


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Engine.load keyword arguments from the parsed flags."""
    return {"precision": args.precision, "quant": args.quant, "quant_type": args.quant_type}
