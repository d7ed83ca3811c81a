"""Logging set-up: plain text or JSON lines (one object per line, with the request id where there is one).

The request id comes from the request's `X-Request-Id` header or is made up by app.request_id_middleware;
it lives in a ContextVar, so every line logged while that request is handled carries it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextvars import ContextVar

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonLines(logging.Formatter):
    """{"ts", "level", "logger", "message", "request_id"?, "exc"?} per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (rid := getattr(record, "request_id", None)) is not None:
            line["request_id"] = rid
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(level: str, fmt: str) -> None:
    """Root logging for the server process: `fmt` is "text" or "json"."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def quiet_mesa() -> None:
    """Mesa's Vulkan loader prints `error: XDG_RUNTIME_DIR is invalid or not set` twice on hosts without a
    login session (services, containers); a private runtime folder of our own keeps the log clean."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and os.path.isdir(current) and os.access(current, os.W_OK):
        return
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ai00-runtime-")  # mode 0700, as the spec wants
