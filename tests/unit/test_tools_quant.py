"""The logits and generate tools quantize like the server does: --quant N --quant-type int8|nf4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.tools import generate, logits
from backend.tools.demo_model import ensure_random_model

TOKENS = "1,2,3,40,500,6000,33"


def run_logits(tmp_path: Path, *flags: str) -> np.ndarray:
    out = tmp_path / f"logits{len(list(tmp_path.iterdir()))}.npy"
    logits.main([str(ensure_random_model()), "--tokens", TOKENS, "--out", str(out), *flags])
    return np.load(out)


def test_logits_tool_quantizes_with_either_type_and_stays_close(tmp_path: Path):
    plain = run_logits(tmp_path)
    for kind in ("int8", "nf4"):
        quant = run_logits(tmp_path, "--quant", "2", "--quant-type", kind)
        assert quant.shape == plain.shape and not np.array_equal(quant, plain), kind
        assert np.corrcoef(quant.ravel(), plain.ravel())[0, 1] > 0.9, kind


def test_generate_tool_runs_quantized(capsys: pytest.CaptureFixture[str]):
    generate.main([str(ensure_random_model()), "Hello", "--max-tokens", "4", "--seed", "1", "--quant", "1",
                   "--quant-type", "nf4", "--precision", "fp32"])  # fmt: skip
    assert capsys.readouterr().out.startswith("Hello")


def test_quantizing_more_layers_than_the_model_has_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"quant: must be 0\.\.2"):
        run_logits(tmp_path, "--quant", "3")
