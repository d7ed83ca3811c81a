"""The model loader: every version and both layouts read back to the same canonical tensors; bad files fail
with errors that name the file and the tensor."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from backend.gpu.loader import ModelFormatError, read_model, read_model_pth, to_ai00
from backend.gpu.models.info import ModelInfo, Version
from backend.tools.demo_model import ensure_demo_model, make_random_model, save_pth, save_st

VOCAB = 1000  # the loader does not care about vocab size; keep the files small
MODELS = {  # id -> (version, deep_embed)
    "v4": (Version.V4, False),
    "v5.0": (Version.V5_0, False),
    "v5.1": (Version.V5_1, False),
    "v5.2": (Version.V5_2, False),
    "v6": (Version.V6, False),
    "v7": (Version.V7, False),
    "v7-deepembed": (Version.V7, True),
}


def small_model(key: str) -> dict[str, np.ndarray]:
    version, deep_embed = MODELS[key]
    return make_random_model(version, n_layer=2, n_embd=128, n_vocab=VOCAB, deep_embed=deep_embed)


def expected_info(key: str) -> ModelInfo:
    version, deep_embed = MODELS[key]
    n_ffn = 512 if version in (Version.V4, Version.V7) else 448
    return ModelInfo(
        version,
        n_layer=2,
        n_embd=128,
        n_vocab=VOCAB,
        n_ffn=n_ffn,
        head_size=0 if version is Version.V4 else 64,
        deep_embed=deep_embed,
    )


def write_like_ai00_converter(tensors: dict[str, np.ndarray], info: ModelInfo, path: Path) -> Path:
    """What AI00's convert_safetensors.py writes: its names and shapes, fp16, no layout hint."""
    out = dict(to_ai00(name, array, info) for name, array in tensors.items())
    save_file({k: np.ascontiguousarray(v, np.float16) for k, v in out.items()}, str(path), {"format": "pt"})
    return path


def fp16(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16).astype(np.float32) for k, v in tensors.items()}


def assert_same_tensors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == np.float32 and got[name].flags.c_contiguous, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


@pytest.mark.parametrize("key", MODELS)
def test_official_st_reads_back_identical_tensors_and_info(tmp_path: Path, key: str) -> None:
    tensors = small_model(key)
    info, got = read_model(save_st(tensors, tmp_path / "m.st", layout="official", dtype=np.float32))
    assert info == expected_info(key)
    assert_same_tensors(got, tensors)


@pytest.mark.parametrize("key", MODELS)
def test_ai00_converter_output_reads_back_to_canonical(tmp_path: Path, key: str) -> None:
    tensors = small_model(key)
    path = write_like_ai00_converter(tensors, expected_info(key), tmp_path / "m.st")
    info, got = read_model(path)
    assert info == expected_info(key)
    assert_same_tensors(got, fp16(tensors))


@pytest.mark.parametrize(("key", "name", "shape"), [
    ("v5.1", "blocks.1.att.time_decay", (2, 64)),  # per head -> per channel
    ("v5.1", "blocks.1.att.time_first", (2, 64)),  # time_faaaa renamed
    ("v6", "blocks.1.att.time_mix_w1", (5 * 32, 128)),  # time_maa renamed, transposed
    ("v6", "blocks.1.att.time_mix_w2", (5, 128, 32)),
    ("v6", "blocks.1.att.time_decay_w1", (64, 128)),
    ("v7", "blocks.1.att.w1", (32, 128)),
    ("v7", "blocks.1.att.g2", (128, 32)),
    ("v4", "blocks.1.att.time_first", (128,)),  # v4's own name, untouched
])  # fmt: skip
def test_converter_writes_ai00_names_and_shapes(tmp_path: Path, key: str, name: str, shape: tuple) -> None:
    from safetensors import safe_open

    path = save_st(small_model(key), tmp_path / "m.st", layout="ai00", dtype=np.float16)
    with safe_open(str(path), framework="numpy") as f:
        assert tuple(f.get_slice(name).get_shape()) == shape
        assert f.get_slice(name).get_dtype() == "F16"


def test_v5_log_space_time_first_becomes_the_bonus(tmp_path: Path) -> None:
    """Official v5.0 files may store log(u) as time_first; the canonical layout holds u as time_faaaa."""
    tensors = small_model("v5.0")
    file = dict(tensors)
    for i in range(2):
        u = np.abs(file.pop(f"blocks.{i}.att.time_faaaa")) + 0.1
        file[f"blocks.{i}.att.time_first"] = np.log(u).reshape(-1, 1)  # [H, 1] is accepted too
        tensors[f"blocks.{i}.att.time_faaaa"] = u
    info, got = read_model(save_st(file, tmp_path / "m.st", dtype=np.float32, info=expected_info("v5.0")))
    assert info.version is Version.V5_0 and "blocks.0.att.time_first" not in got
    np.testing.assert_allclose(got["blocks.1.att.time_faaaa"], tensors["blocks.1.att.time_faaaa"], rtol=1e-6)


def test_bf16_file_loads_as_float32(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    tensors = small_model("v7")
    save_torch({k: torch.from_numpy(v).bfloat16() for k, v in tensors.items()}, str(tmp_path / "m.st"))
    _, got = read_model(tmp_path / "m.st")
    want = {k: torch.from_numpy(v).bfloat16().float().numpy() for k, v in tensors.items()}
    assert_same_tensors(got, want)


def test_v7_layer0_without_v_lora_gets_zeros(tmp_path: Path) -> None:
    tensors = small_model("v7")
    file = {k: v for k, v in tensors.items() if not re.fullmatch(r"blocks\.0\.att\.v[012]", k)}
    _, got = read_model(save_st(file, tmp_path / "m.st", dtype=np.float32, info=expected_info("v7")))
    assert got["blocks.0.att.v1"].shape == tensors["blocks.0.att.v1"].shape
    assert not got["blocks.0.att.v0"].any() and not got["blocks.0.att.v2"].any()
    np.testing.assert_array_equal(got["blocks.1.att.v1"], tensors["blocks.1.att.v1"])


@pytest.mark.parametrize("layout", ["official", "ai00"])
def test_time_state_is_returned_as_saved_by_state_tuning(tmp_path: Path, layout: str) -> None:
    tensors = small_model("v6")
    states = {f"blocks.{i}.att.time_state": np.random.default_rng(i).normal(size=(2, 64, 64)) for i in range(2)}
    path = save_st(tensors | states, tmp_path / "m.st", layout=layout, dtype=np.float32, info=expected_info("v6"))
    _, got = read_model(path)
    for name, state in states.items():
        np.testing.assert_array_equal(got[name], state.astype(np.float32))


def test_pth_reads_like_st(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    tensors = small_model("v5.2")
    info, got = read_model_pth(save_pth(tensors, tmp_path / "m.pth"))
    assert info == expected_info("v5.2")
    assert_same_tensors(got, tensors)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = small_model("v6")
    del tensors["blocks.1.att.key.weight"]
    path = save_st(tensors, tmp_path / "x.st", info=expected_info("v6"))
    with pytest.raises(ModelFormatError, match=r"^blocks\.1\.att\.key\.weight: missing in x\.st"):
        read_model(path)


def test_wrong_shape_names_tensor_expected_found_and_file(tmp_path: Path) -> None:
    tensors = small_model("v7")
    tensors["blocks.1.att.key.weight"] = tensors["blocks.1.att.key.weight"][:, :64]
    path = save_st(tensors, tmp_path / "x.st", info=expected_info("v7"))
    expected = "blocks.1.att.key.weight: expected shape (128, 128), found (128, 64) in x.st"
    with pytest.raises(ModelFormatError, match=re.escape(expected)):
        read_model(path)


def test_wrong_shape_in_ai00_file_is_reported_in_its_own_orientation(tmp_path: Path) -> None:
    tensors = small_model("v7")
    tensors["blocks.1.att.w1"] = tensors["blocks.1.att.w1"][:100]  # [C, D] -> AI00 [D, C]
    path = save_st(tensors, tmp_path / "x.st", layout="ai00", info=expected_info("v7"))
    expected = "blocks.1.att.w1: expected shape (32, 128), found (32, 100) in x.st"
    with pytest.raises(ModelFormatError, match=re.escape(expected)):
        read_model(path)


def test_not_safetensors_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.st"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelFormatError, match=r"^notes\.st: not a safetensors file"):
        read_model(path)


def test_pth_given_to_read_model_suggests_the_converter(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = save_pth(small_model("v4"), tmp_path / "m.pth")
    with pytest.raises(ModelFormatError, match=r"^m\.pth: not a safetensors file .*ai00-convert"):
        read_model(path)


def test_empty_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty.st").touch()
    with pytest.raises(ModelFormatError, match=r"^empty\.st: empty file"):
        read_model(tmp_path / "empty.st")


def test_safetensors_without_rwkv_tensors_is_rejected(tmp_path: Path) -> None:
    save_file({"weight": np.zeros((3, 3), np.float32)}, str(tmp_path / "other.st"))
    with pytest.raises(ModelFormatError, match=r"^emb\.weight: missing in other\.st"):
        read_model(tmp_path / "other.st")


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.st"):
        read_model(tmp_path / "nothing.st")


def test_random_model_depends_only_on_seed() -> None:
    a, b, c = (make_random_model("v6", 2, 128, n_vocab=VOCAB, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blocks.1.att.key.weight"], c["blocks.1.att.key.weight"])


def test_demo_model_is_made_once_and_loads_as_v7(tmp_path: Path) -> None:
    path = ensure_demo_model(tmp_path / "demo.st")
    first = path.stat().st_mtime_ns
    assert ensure_demo_model(path) == path and path.stat().st_mtime_ns == first
    info, tensors = read_model(path)
    assert (info.version, info.n_layer, info.n_embd, info.n_vocab) == (Version.V7, 4, 256, 65536)  # the trained one
    assert all(np.isfinite(t).all() for t in tensors.values())
