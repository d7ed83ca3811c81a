"""Engine fixtures: one wgpu device for the session, and random-init models of every version
with the reference's outputs for a fixed prompt (computed out of process, cached)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend.gpu.device import Gpu
from backend.gpu.device_pool import give_back, take_device
from backend.gpu.engine import Engine
from backend.gpu.loader import read_model
from backend.gpu.models.info import ModelInfo, Version
from backend.gpu.pipelines import PipelineCache
from backend.tools.convert import save_st
from backend.tools.demo_model import make_random_model, save_pth
from tests.oracle import Reference, references

VERSIONS = (Version.V4, Version.V5_0, Version.V5_1, Version.V5_2, Version.V6, Version.V7)
PROMPT_LEN = 64
N_LAYER = 3
N_EMBD = 128


@dataclass(frozen=True)
class Case:
    version: Version
    st: Path
    info: ModelInfo
    tensors: dict[str, np.ndarray]
    prompt: tuple[int, ...]
    ref: Reference


@dataclass(frozen=True)
class Device:
    gpu: Gpu
    pipelines: PipelineCache

    def engine(self, case: Case, precision: str = "fp32", max_batch: int = 4, max_step_tokens: int = 64) -> Engine:
        return Engine(
            case.info, case.tensors, max_batch=max_batch, max_step_tokens=max_step_tokens,
            precision=precision, gpu=self.gpu, pipelines=self.pipelines,
        )  # fmt: skip


def long_prompt(case: Case, chunk: int) -> tuple[int, ...]:
    """What a test of steps of `chunk` tokens runs: the prompt the reference covers (64 tokens), or for a
    chunk of 100 or more 100 tokens (36 the reference does not check), so that one step holds them all."""
    return case.prompt + case.prompt[:36] if chunk >= 100 else case.prompt


def prompt_tokens(seed: int = 1) -> tuple[int, ...]:
    """Token ids spread over the vocabulary, common (low) ids more often, as in text."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.pareto(0.6, PROMPT_LEN) * 200, 65534).astype(int) + 1
    return tuple(int(i) for i in ids)


@pytest.fixture(scope="session")
def device() -> Iterator[Device]:
    """A device of the process's pool (backend/gpu/device_pool.py), as an engine thread takes one."""
    taken = take_device()
    yield Device(*taken)
    give_back("auto", taken)


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[Version, Case]:
    root = tmp_path_factory.mktemp("models")
    prompt = prompt_tokens()
    made = []
    for version in VERSIONS:
        tensors = make_random_model(version, N_LAYER, N_EMBD, seed=7)
        name = f"random-{version.value}"
        save_pth(tensors, root / f"{name}.pth")
        save_st(tensors, root / f"{name}.st", layout="official", dtype=np.float32)
        made.append((version, root / f"{name}.pth", root / f"{name}.st"))
    refs = references([(pth, prompt) for _, pth, _ in made])
    out = {}
    for (version, _, st), ref in zip(made, refs, strict=True):
        info, tensors = read_model(st)
        out[version] = Case(version, st, info, tensors, prompt, ref)
    return out


@pytest.fixture(params=VERSIONS, ids=lambda v: v.value)
def case(request: pytest.FixtureRequest, cases: dict[Version, Case]) -> Case:
    return cases[request.param]
