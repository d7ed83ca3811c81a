"""Where the server stands: loading (with progress), ready, failed, draining -- what /health answers.

The engine thread reports load progress by swapping in a frozen Progress (only data crosses the thread
boundary: ServedModel.load_progress); the event loop reads the latest one when /health is asked.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["loading", "ready", "failed", "draining"]
RETRY_AFTER_S = "5"  # what a client told 503 `loading` or `draining` should wait before trying again


@dataclass(frozen=True)
class Progress:
    """One phase of the model load: read (the file, converted to f32), upload (to the GPU), states."""

    phase: str
    bytes: int = 0
    total_bytes: int | None = None  # unknown for the upload: quantization and f16 change the size

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        if self.total_bytes:
            body["fraction"] = round(min(1.0, self.bytes / self.total_bytes), 4)
        return body


class Readiness:
    def __init__(self) -> None:
        self.status: Status = "loading"
        self.error: str | None = None
        self.settled = asyncio.Event()  # set once loading ends, either way

    def ready(self) -> None:
        self.status = "ready"
        self.settled.set()

    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        self.settled.set()

    def drain(self) -> None:
        self.status = "draining"
