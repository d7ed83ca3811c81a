"""Paths that clients send -> real files inside allow-listed folders. No `..`, and no absolute path or symlink
that leads out: routes that read files on the server (model, state, LoRA loading) only reach what the operator
put under `[files] allowed_dirs` (assets/ by default)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def resolve_inside(root: Path, user_path: str, field: str = "path") -> Path:
    """`user_path` (relative to `root`, or absolute) as a real path inside `root`; ValueError naming `field`."""
    p = _checked(user_path, field)
    real_root = root.resolve()
    real = (p if p.is_absolute() else real_root / p).resolve()  # follows symlinks: a link out is an escape
    if not real.is_relative_to(real_root):
        raise ValueError(f"{field}: '{user_path}' is outside the allowed folder {root}")
    return real


def resolve_allowed(roots: Sequence[Path], user_path: str, field: str = "path") -> Path:
    """A path as AI00 takes it (relative to the working directory, like `assets/models/x.st`, or absolute), or a
    name inside one of `roots` (`models/x.st`); it must lie inside one of `roots`. An existing file wins."""
    p = _checked(user_path, field)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, *((root / p).absolute() for root in roots)]
    inside = []
    for candidate in candidates:
        for root in roots:
            try:
                inside.append(resolve_inside(root, str(candidate), field))
            except ValueError:
                continue
    if not inside:
        where = ", ".join(str(r) for r in roots) or "none configured"
        raise ValueError(f"{field}: '{user_path}' is outside the allowed folders ({where}; see [files] allowed_dirs)")
    return next((real for real in inside if real.exists()), inside[0])


def _checked(user_path: str, field: str) -> Path:
    if not user_path or "\x00" in user_path:
        raise ValueError(f"{field}: give a file name inside the allowed folders")
    p = Path(user_path)
    if ".." in p.parts:
        raise ValueError(f"{field}: '..' is not allowed in '{user_path}'")
    return p
