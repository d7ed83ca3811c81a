"""The engine's tuning knobs that take a number (DEVELOPERS.md): read from the environment, refused by name."""

from __future__ import annotations

import os
from typing import TypeVar

Default = TypeVar("Default", int, None)


def env_count(name: str, default: Default, what: str, low: int = 0, high: int | None = None) -> int | Default:
    """The whole number in environment variable `name` (`default` where it is unset or empty); a value that is
    not one, or lies outside low..high, is refused as '{name}: {what}, got ...'."""
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        raise ValueError(f"{name}: {what}, got {text!r}")
    return int(text)
