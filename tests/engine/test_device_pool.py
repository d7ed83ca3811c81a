"""Engine threads take their devices from the process's pool (backend/gpu/device_pool.py): two live ones never
share a device, a model loaded after another's engine thread ended takes its device and compiles no shader
variant again, and engines built at once on one device each count only the memory they allocated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from backend.catalog import ModelSpec
from backend.config import Config
from backend.engine_builder import EngineBuilder
from backend.gpu.models.info import Version
from tests.engine.conftest import Case, Device


def test_a_model_loaded_after_another_ended_takes_its_device_and_compiles_nothing_again(
    cases: dict[Version, Case],
) -> None:
    case = cases[Version.V6]
    config = Config.from_dict({"model": {"path": str(case.st), "precision": "fp32", "max_batch": 2}})
    first_builder, beside_builder = (EngineBuilder(config, ModelSpec(case.st, "fp32")) for _ in range(2))
    first, _ = first_builder.load(2)
    beside, _ = beside_builder.load(2)
    assert beside.gpu is not first.gpu  # two live engine threads: each waits on its own device
    beside_builder.close()

    pipelines = first.pipelines
    first_builder.close()
    compiled = pipelines.misses
    after, _ = EngineBuilder(config, ModelSpec(case.st, "fp32")).load(2)  # the device given back last
    assert after.gpu is first.gpu and after.pipelines is pipelines
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
