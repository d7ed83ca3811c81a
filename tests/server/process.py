"""A server in its own process (`python -m backend`), for what only a process shows: readiness while the model
loads, signals, the exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()  # a given port: a replica restarted where its load balancer expects it
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", *args, "--ip", "127.0.0.1", "--port",
                                      str(self.port)], cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})  # fmt: skip

    def wait_listening(self, timeout: float = 60.0) -> float:
        """Seconds until the port accepts a connection."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc.poll() is None, f"the server exited: {self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"not listening after {timeout} s: {self.output()}")

    def wait_healthy(self, timeout: float = 120.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc.poll() is None, f"the server exited: {self.output()}"
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"not healthy after {timeout} s: {self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            self._out.close()
