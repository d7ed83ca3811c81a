"""TLS from [listen.tls]: a self-signed certificate, verified by the client."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from backend.config import Config
from tests.server.conftest import TEST_CONFIG, start_server, stop_server


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_self_signed_certificate(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    config = Config.from_dict({**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "max_batch": 1, "prefix_cache": 0},
                               "listen": {**TEST_CONFIG["listen"], "tls": {"cert": str(cert), "key": str(key)}}})
    live, runner, thread = start_server(config)
    try:
        assert live.base.startswith("https://")
        r = httpx.get(f"{live.base}/health", verify=ssl.create_default_context(cafile=str(cert)))
        assert r.status_code == 200 and r.json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):  # an unknown issuer is refused by a verifying client
            httpx.get(f"{live.base}/health")
    finally:
        stop_server(live, runner, thread)
