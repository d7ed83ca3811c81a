"""The reference oracle runs on our random-init models and gives realistic numbers; .pth -> .st conversion
through the CLI keeps every tensor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.gpu.loader import read_model, read_model_pth
from backend.gpu.models.info import ModelInfo, StateLayout, Version
from backend.tools.convert import main as convert_main
from backend.tools.demo_model import make_random_model, save_pth
from tests.oracle import OracleError, Reference, check_sane, references

pytest.importorskip("rwkv")
REPO = Path(__file__).resolve().parents[2]
TOKENS = [0, 11, 33, 3319, 65535, 261, 4000, 19, 19, 19, 7, 30000, 1, 2, 50000, 11]
MODELS = {  # id -> (version, deep_embed, vocab): DeepEmbed keeps a [vocab, 1024] table per layer
    "v4": (Version.V4, False, 65536),
    "v5.0": (Version.V5_0, False, 65536),
    "v5.1": (Version.V5_1, False, 65536),
    "v5.2": (Version.V5_2, False, 65536),
    "v6": (Version.V6, False, 65536),
    "v7": (Version.V7, False, 65536),
    "v7-deepembed": (Version.V7, True, 4096),
}


@pytest.fixture(scope="module")
def pths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oracle-models")
    return {
        key: save_pth(make_random_model(version, 2, 128, n_vocab=vocab, deep_embed=de), root / f"{key}.pth")
        for key, (version, de, vocab) in MODELS.items()
    }


@pytest.fixture(scope="module")
def refs(pths: dict[str, Path]) -> dict[str, Reference]:
    tokens = {key: [t % MODELS[key][2] for t in TOKENS] for key in MODELS}
    return dict(zip(pths, references([(pths[key], tokens[key]) for key in pths]), strict=True))


@pytest.mark.parametrize("key", MODELS)
def test_reference_logits_are_finite_with_a_sane_spread(refs: dict[str, Reference], key: str) -> None:
    logits = refs[key].logits
    assert logits.shape == (len(TOKENS), MODELS[key][2]) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert logits.std(axis=-1).min() > 0.1 and logits.std(axis=-1).max() < 50
    assert len({int(row.argmax()) for row in logits}) > 1  # the output depends on the input


@pytest.mark.parametrize("key", MODELS)
def test_reference_state_matches_our_state_layout(refs: dict[str, Reference], key: str) -> None:
    version, de, vocab = MODELS[key]
    info = ModelInfo(version, 2, 128, vocab, 0, 0 if version is Version.V4 else 64, de)
    for layer in refs[key].state:
        assert sum(s.size for s in layer) == StateLayout.of(info).size
        assert layer[0].shape == (128,) and layer[-1].shape == (128,)
        if version is not Version.V4:
            assert layer[1].shape == (2, 64, 64) and np.abs(layer[1]).max() > 0


@pytest.mark.parametrize("key", MODELS)
def test_reference_sequence_mode_agrees_with_token_by_token(refs: dict[str, Reference], key: str) -> None:
    ref = refs[key]
    np.testing.assert_allclose(ref.seq_logits, ref.logits, atol=1e-4, rtol=1e-4)
    for one, seq in zip(ref.state, ref.seq_state, strict=True):
        for a, b in zip(one, seq, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_log_space_time_first_means_what_the_loader_makes_of_it(tmp_path: Path) -> None:
    """v5.0/v5.1 files may hold log(u) as time_first: the reference must agree with our time_faaaa = u."""
    bonus = make_random_model(Version.V5_1, 2, 128, n_vocab=4096)
    log_space = dict(bonus)
    for i in range(2):
        u = bonus[f"blocks.{i}.att.time_faaaa"] = np.abs(bonus[f"blocks.{i}.att.time_faaaa"]) + 0.1
        del log_space[f"blocks.{i}.att.time_faaaa"]
        log_space[f"blocks.{i}.att.time_first"] = np.log(u)
    tokens = [t % 4096 for t in TOKENS[:8]]
    a, b = references(
        [(save_pth(bonus, tmp_path / "bonus.pth"), tokens), (save_pth(log_space, tmp_path / "log.pth"), tokens)]
    )
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-4, rtol=1e-4)
    _, loaded = read_model_pth(tmp_path / "log.pth")
    np.testing.assert_allclose(loaded["blocks.1.att.time_faaaa"], bonus["blocks.1.att.time_faaaa"], rtol=1e-6)


def test_oracle_rejects_nan_and_flat_logits() -> None:
    flat = np.zeros((2, 10), np.float32)
    with pytest.raises(OracleError, match="outside"):
        check_sane(Reference(flat, [], flat, []), "flat.pth")
    nan = np.full((2, 10), np.nan, np.float32)
    with pytest.raises(OracleError, match="NaN"):
        check_sane(Reference(nan, [], nan, []), "nan.pth")


def test_cli_converts_pth_to_ai00_st_that_reads_back(pths: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "v6.st"
    cmd = [sys.executable, "-m", "backend.tools.convert", "--input", str(pths["v6"]), "--output", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    want_info, want = read_model_pth(pths["v6"])
    info, got = read_model(out)
    assert info == want_info and list(got) == list(want)
    for name in want:  # default: AI00 layout, fp16
        np.testing.assert_array_equal(got[name], want[name].astype(np.float16).astype(np.float32), err_msg=name)


@pytest.mark.parametrize("key", ["v5.1", "v7"])
def test_convert_official_fp32_is_lossless(pths: dict[str, Path], tmp_path: Path, key: str) -> None:
    out = tmp_path / "m.st"
    assert (
        convert_main(["--input", str(pths[key]), "--output", str(out), "--layout", "official", "--dtype", "fp32"]) == 0
    )
    _, want = read_model_pth(pths[key])
    _, got = read_model(out)
    assert list(got) == list(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_cli_reports_a_bad_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.st").write_bytes(b"\x00" * 64)
    assert convert_main(["--input", str(tmp_path / "bad.st"), "--output", str(tmp_path / "o.st")]) == 1
    assert "bad.st: not a safetensors file" in capsys.readouterr().err
