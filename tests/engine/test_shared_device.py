"""Every model on an adapter shares the process's device and pipeline cache (backend/gpu/shared_device.py):
a second model compiles no shader variant the first one did, and engines built at once on one device each
count only the memory they allocated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from backend.catalog import ModelSpec
from backend.config import Config
from backend.engine_builder import EngineBuilder
from backend.gpu.models.info import Version
from backend.gpu.shared_device import shared_device
from tests.engine.conftest import Case, Device


def test_a_second_model_on_the_adapter_shares_the_device_and_compiles_nothing_again(
    cases: dict[Version, Case],
) -> None:
    case = cases[Version.V6]
    config = Config.from_dict({"model": {"path": str(case.st), "precision": "fp32", "max_batch": 2}})
    first, _ = EngineBuilder(config, ModelSpec(case.st, "fp32")).load(2)
    gpu, pipelines = shared_device(config.model.adapter)
    compiled = pipelines.misses
    second, _ = EngineBuilder(config, ModelSpec(case.st, "fp32")).load(2)
    assert first.gpu is second.gpu is gpu and first.pipelines is second.pipelines is pipelines
    assert pipelines.misses == compiled and pipelines.hits > 0


def test_engines_built_at_once_on_one_device_each_count_only_their_own_memory(
    device: Device, cases: dict[Version, Case]
) -> None:
    sizes = [(Version.V7, 2), (Version.V6, 8), (Version.V5_2, 4), (Version.V4, 16)]
    alone = [device.engine(cases[v], max_batch=n).gpu_bytes for v, n in sizes]
    for _ in range(3):
        with ThreadPoolExecutor(len(sizes)) as pool:
            at_once = list(pool.map(lambda s: device.engine(cases[s[0]], max_batch=s[1]).gpu_bytes, sizes))
        assert at_once == alone
