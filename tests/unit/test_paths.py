"""Client paths stay inside the allowed folders: `..`, absolute paths and symlinks out are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.paths import resolve_allowed, resolve_inside


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "models").mkdir(parents=True)
    (tmp_path / "allowed" / "models" / "m.st").write_bytes(b"x")
    (tmp_path / "secret.st").write_bytes(b"s")
    (tmp_path / "allowed" / "out.st").symlink_to(tmp_path / "secret.st")
    (tmp_path / "allowed" / "in.st").symlink_to(tmp_path / "allowed" / "models" / "m.st")
    return tmp_path / "allowed"


def test_names_inside_the_root_resolve_to_real_paths(root: Path):
    assert resolve_inside(root, "models/m.st") == (root / "models" / "m.st").resolve()
    assert resolve_inside(root, str(root / "models" / "m.st")) == (root / "models" / "m.st").resolve()
    assert resolve_inside(root, "in.st") == (root / "models" / "m.st").resolve()  # a link that stays inside


@pytest.mark.parametrize("bad", ["../secret.st", "models/../../secret.st", "/etc/passwd", "out.st", "", "a\x00b"])
def test_escapes_are_refused_naming_the_field(root: Path, bad: str):
    with pytest.raises(ValueError, match=r"^loras\.0\.path: "):
        resolve_inside(root, bad, "loras.0.path")


def test_allowed_takes_ai00_style_paths_and_names_inside_any_root(root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(root.parent)
    real = (root / "models" / "m.st").resolve()
    assert resolve_allowed([Path("allowed")], "allowed/models/m.st") == real  # relative to the working directory
    assert resolve_allowed([Path("other"), Path("allowed")], "models/m.st") == real  # a name inside a root
    with pytest.raises(ValueError, match="outside the allowed folders"):
        resolve_allowed([Path("allowed")], str(root.parent / "secret.st"))
    with pytest.raises(ValueError, match="outside the allowed folders"):
        resolve_allowed([Path("allowed")], "out.st")  # a symlink inside that points out
    with pytest.raises(ValueError, match="outside the allowed folders"):
        resolve_allowed([], "allowed/models/m.st")
