"""The package as a user gets it: build the sdist and, from it, the wheel; install the wheel into a fresh venv in
a temporary folder; start `ai00-server` there (demo model) and check models, a completion and the UI's page.

    .venv/bin/python scripts/wheel_smoke.py     (run by scripts/test.sh)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"wheel smoke: {' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def http(url: str, body: dict | None = None) -> tuple[int, str, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"wheel smoke: ai00-server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if http(f"{base}/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"wheel smoke: not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def main() -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ai00-wheel-") as tmp:
        tmp_path = Path(tmp)
        dist = tmp_path / "dist"
        # --no-isolation: the build tools already in .venv (setuptools, build), no download
        run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist)
        wheel = next(dist.glob("*.whl"))
        venv = tmp_path / "venv"
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
        where = run(venv / "bin" / "python", "-c", "import backend; print(backend.__file__)", cwd=tmp_path)
        assert where.startswith(str(venv)), f"backend imported from {where}, not the fresh venv"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base, log = f"http://127.0.0.1:{port}", tmp_path / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AI00_", "PYTHON"))}
        with log.open("wb") as out:
            proc = subprocess.Popen([venv / "bin" / "ai00-server", "--ip", "127.0.0.1", "--port", str(port),
                                     "--model.precision", "fp32"], cwd=tmp_path, stdout=out,
                                    stderr=subprocess.STDOUT, env=env)  # fmt: skip
            try:
                wait_healthy(base, proc, log)
                models = json.loads(http(f"{base}/v1/models")[2])
                assert [m["id"] for m in models["data"]] == ["demo-rwkv7-tiny"], models
                completion = json.loads(http(f"{base}/v1/completions", {"prompt": "Hi", "max_tokens": 4})[2])
                assert completion["usage"]["completion_tokens"] >= 1, completion
                status, kind, page = http(f"{base}/")
                assert status == 200 and kind.startswith("text/html") and "<script" in page, page[:300]
                asset = page.split('src="', 1)[1].split('"', 1)[0]
                assert http(f"{base}{asset}")[0] == 200, asset
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(60)
        assert code == 0, f"ai00-server exited with {code} on SIGTERM:\n{log.read_text()[-3000:]}"
        print(f"wheel smoke: {wheel.name} installed in a fresh venv serves models, completions and the UI "
              f"({time.monotonic() - t0:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
