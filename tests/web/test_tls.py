"""The console serving HTTPS itself (``web.tls_cert`` / ``web.tls_key``): Secure cookies, no plain HTTP."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.daemon import Gateway, wait_for
from tests.conftest import REPO
from tests.web.conftest import SECRET, web_config

OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command to make a self-signed certificate")
def test_console_serves_https_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = tmp_path / "console.crt", tmp_path / "console.key"
    subprocess.run(
        [
            str(OPENSSL),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    gateway = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    settings = web_config(tmp_path, tls_cert=str(cert), tls_key=str(key))
    gateway.write_config(**settings)
    port = settings["web"]["listen"].rsplit(":", 1)[1]
    with (tmp_path / "web.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "web", "-c", str(gateway.config_path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "FDEP_WEB_SECRET": SECRET},
        )
    try:

        def up() -> bool:
            assert process.poll() is None, (tmp_path / "web.log").read_text()
            try:
                return httpx.get(f"https://127.0.0.1:{port}/login", verify=trust, timeout=2).is_success
            except httpx.TransportError:
                return False

        wait_for(up, timeout=30, what="the console to listen on HTTPS")
        response = httpx.get(f"https://127.0.0.1:{port}/login", verify=trust)
        cookie = response.headers["set-cookie"].lower()
        assert "; secure" in cookie and "httponly" in cookie
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)
