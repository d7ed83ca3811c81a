"""The wheel carries the whole package: every Python package is listed, and the data folders are mapped in."""

from __future__ import annotations

import tomllib
from pathlib import Path

from backend.resources import ASSETS, DEFAULT_CONFIG, DEFAULT_VOCAB, SHADERS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_python_package_under_backend_is_listed_for_the_wheel():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "backend").rglob("__init__.py")}
    listed = set(PYPROJECT["packages"])
    assert found <= listed, f"add to pyproject's [tool.setuptools] packages: {sorted(found - listed)}"


def test_data_folders_are_mapped_into_the_package_with_what_the_server_reads():
    assert PYPROJECT["package-dir"] == {"backend.shaders": "shaders", "backend.assets": "assets"}
    assert {"backend.shaders", "backend.assets"} <= set(PYPROJECT["packages"])
    assert PYPROJECT["package-data"]["backend.shaders"] == ["*.wgsl"] and any(SHADERS.glob("*.wgsl"))
    for file in (DEFAULT_CONFIG, DEFAULT_VOCAB):
        assert file.is_file() and any(file.relative_to(ASSETS).match(g) for g in PYPROJECT["package-data"]
                                      ["backend.assets"]), file  # fmt: skip
