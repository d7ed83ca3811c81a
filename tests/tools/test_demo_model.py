"""The committed demo model (assets/models/demo-rwkv7-tiny.st.xz): it unpacks where the server looks, the reference
and our engine agree on it, it knows its corpus (held-out perplexity far under the unigram baseline's), and
int8/NF4 keep that perplexity within 1 % / 5 %."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from backend.gpu.device import Gpu
from backend.gpu.engine import Engine
from backend.gpu.loader import read_model
from backend.gpu.models.info import ModelInfo
from backend.gpu.pipelines import PipelineCache
from backend.tokenizer import Tokenizer
from backend.tools.demo_model import DEMO_MODEL_PACKED, ensure_demo_model, save_pth, write_demo_model
from backend.tools.logits import logits_for
from tests.oracle import reference
from tests.tools.test_train_demo import assert_close

DATA = Path(__file__).parent / "data"
HELDOUT = (DATA / "heldout-sample.txt").read_text()  # held-out documents, one per corpus source
N_TOKENS = 64  # of the sample: every position's logits cost ~0.15 s on lavapipe (the head is 65536 x 256)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "np") as f:
        return f.metadata() or {}


def cross_entropy(logits: np.ndarray, tokens: list[int]) -> float:
    """Mean -log p(next token) over the text, in nats."""
    x = logits[:-1].astype(np.float64)
    x -= x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean())


@dataclass(frozen=True)
class Demo:
    path: Path
    info: ModelInfo
    tensors: dict[str, np.ndarray]
    gpu: Gpu
    pipelines: PipelineCache

    def logits(self, tokens: list[int], precision: str = "fp16", **quant: object) -> np.ndarray:
        """Every position's logits, the tokens fed in one step."""
        engine = Engine(self.info, self.tensors, max_batch=1, max_step_tokens=len(tokens), precision=precision,
                        gpu=self.gpu, pipelines=self.pipelines, **quant)  # fmt: skip
        return logits_for(engine, tokens, chunk=len(tokens))


@pytest.fixture(scope="module")
def demo() -> Demo:
    path = ensure_demo_model()
    gpu = Gpu()
    return Demo(path, *read_model(path), gpu, PipelineCache(gpu.device))


@pytest.fixture(scope="module")
def heldout_tokens() -> list[int]:
    return Tokenizer.from_file().encode(HELDOUT)[:N_TOKENS]


@pytest.fixture(scope="module")
def fp16_cross_entropy(demo: Demo, heldout_tokens: list[int]) -> float:
    return cross_entropy(demo.logits(heldout_tokens), heldout_tokens)


def test_demo_model_replaces_a_stale_random_file_and_then_stays(tmp_path: Path) -> None:
    path = write_demo_model(tmp_path / "demo.st")  # what an older checkout generated at this path
    assert ensure_demo_model(path) == path
    assert "trained demo" in read_metadata(path)["note"]
    first = path.stat().st_mtime_ns
    assert ensure_demo_model(path) == path and path.stat().st_mtime_ns == first
    assert DEMO_MODEL_PACKED.stat().st_size < 25 * 2**20


def test_reference_and_our_engine_agree_on_the_demo_model(demo: Demo, heldout_tokens: list[int],
                                                           tmp_path: Path) -> None:  # fmt: skip
    ref = reference(save_pth(demo.tensors, tmp_path / "demo.pth"), heldout_tokens)
    assert_close(demo.logits(heldout_tokens, "fp32"), ref.logits, "demo model: engine vs reference")


def test_heldout_perplexity_is_far_below_the_unigram_baseline(demo: Demo, fp16_cross_entropy: float) -> None:
    """The training run's figures are in the file; our engine finds the same order on the sample."""
    summary = json.loads(read_metadata(demo.path)["summary"])
    assert summary["heldout_perplexity"] < summary["unigram_perplexity"] / 10, summary
    assert math.exp(fp16_cross_entropy) < summary["unigram_perplexity"] / 10, (fp16_cross_entropy, summary)


@pytest.mark.parametrize(("kind", "bound"), [("int8", 0.01), ("nf4", 0.05)])
def test_quantized_demo_model_keeps_heldout_perplexity(
    demo: Demo, heldout_tokens: list[int], fp16_cross_entropy: float, kind: str, bound: float
) -> None:
    quantized = cross_entropy(demo.logits(heldout_tokens, quant=demo.info.n_layer, quant_type=kind), heldout_tokens)
    fp16, ppl = math.exp(fp16_cross_entropy), math.exp(quantized)
    assert ppl / fp16 - 1 < bound, f"{kind}: held-out perplexity {fp16:.3f} -> {ppl:.3f}"
