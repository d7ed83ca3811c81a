"""deploy/: what can be checked without a container runtime or an init system of our own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_only_what_the_repository_has():
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY") and "--from=" not in line]
    sources = [src for args in copies for src in args]
    assert "shaders" in sources and "backend" in sources and "assets/tokenizer" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"deploy/Dockerfile copies {src}, which is not in the repository"


def test_systemd_unit_verifies(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    unit = (ROOT / "deploy" / "ai00-server.service").read_text()
    server = Path(sys.executable).with_name("ai00-server")  # the unit's /opt/ai00 install, here: this venv's
    (tmp_path / "ai00-server.service").write_text(unit.replace("/opt/ai00/bin/ai00-server", str(server)))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "ai00-server.service")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
