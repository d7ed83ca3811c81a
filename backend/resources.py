"""Where the package's data lies: WGSL shaders, the World vocab, the default config, the built web UI.

The repository keeps shaders/ and assets/ at its top. The build maps them into the package as
backend/shaders/ and backend/assets/ (pyproject's package-dir), beside backend/static/ (the UI build), so a
wheel or an sdist carries everything the server reads. importlib.resources finds them there; a source
checkout (or its editable install, whose finder does not resolve data-only subpackages) has them at the top.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent  # the repository, when running from a source checkout


def data_dir(name: str) -> Path:
    """The package's data folder `name` (shaders, assets, static) as a folder on disk."""
    packaged = Path(str(files("backend").joinpath(name)))  # wheels install unzipped: a real folder
    if packaged.is_dir() or name == "static":  # the UI build lands inside the package even in a checkout
        return packaged
    return _CHECKOUT / name


SHADERS = data_dir("shaders")
ASSETS = data_dir("assets")
STATIC = data_dir("static")
DEFAULT_CONFIG = ASSETS / "configs" / "Config.toml"
DEFAULT_VOCAB = ASSETS / "tokenizer" / "rwkv_vocab_v20230424.txt"


def writable_models_dir() -> Path:
    """Where the demo model is generated: assets/models/ when it can be written (a checkout, a venv), else the
    user's cache (a read-only system install or container layer)."""
    models = ASSETS / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
        if os.access(models, os.W_OK):
            return models
    except OSError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai00"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def package_version() -> str:
    """The installed distribution's version (a checkout that was never installed has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai00-server-py")
    except PackageNotFoundError:
        return "0.0.0+source"
