"""One site for the console's tests: a real daemon, two institutions' files, accounts, and ``web``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.daemon import ORG, Gateway, d1001_body, d1001_name, drop, launch, wait_for
from tests.conftest import REPO
from tests.forward.helpers import free_port

OTHER_ORG, OTHER_TC = "41220000", "TC41220000"
SECRET = "test-session-secret-0123456789abcdef0123456789"  # noqa: S105 (a test key)
PASSWORDS = {
    "ops": "operator-password-1",
    "inst-a": "institution-a-password",
    "inst-b": "institution-b-password",
}
ROLES = {"ops": None, "inst-a": ORG, "inst-b": OTHER_ORG}
BOM = b"\xef\xbb\xbf"


@dataclass
class Web:
    """A running ``fdep-gateway web`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class Site:
    gateway: Gateway
    web: Web
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> its outcome event

    @property
    def url(self) -> str:
        return self.web.url

    def audit(self) -> list[str]:
        path = self.gateway.root / "web" / "audit.jsonl"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def add_user(gateway: Gateway, username: str, password: str, institution: str | None) -> None:
    scope = ["--institution", institution] if institution else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "web-user",
            "add",
            username,
            *scope,
            "--password-stdin",
            "-c",
            str(gateway.config_path),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def start_web(gateway: Gateway, name: str = "web") -> Web:
    log = gateway.root / f"{name}.log"
    url = f"http://127.0.0.1:{gateway_port(gateway)}"
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "web", "-c", str(gateway.config_path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "FDEP_WEB_SECRET": SECRET},
        )
    web = Web(url, process, log)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"web exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/login", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, what="the console to listen")
    return web


def gateway_port(gateway: Gateway) -> str:
    import yaml

    return str(yaml.safe_load(gateway.config_path.read_text())["web"]["listen"]).rsplit(":", 1)[1]


def web_config(root: Path, **web: Any) -> dict[str, Any]:
    return {"web": {"listen": f"127.0.0.1:{free_port()}", "dir": str(root / "web"), **web}}


@contextmanager
def login(url: str, username: str, password: str | None = None) -> Iterator[httpx.Client]:
    """A client holding ``username``'s session (asserts the login worked)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        response = post_login(client, username, password or PASSWORDS[username])
        assert response.status_code == 303, response.text[-2000:]
        yield client


def post_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post(
        "/login", data={"csrf_token": csrf_of(client, "/login"), "username": username, "password": password}
    )


def csrf_of(client: httpx.Client, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def outcome(gateway: Gateway, name: str) -> dict[str, Any]:
    wait_for(lambda: gateway.outcome_events(name), timeout=60, what=f"the outcome of {name}")
    return gateway.outcome_events(name)[-1]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    gateway = Gateway(root=root, config_path=root / "gateway.yaml")
    gateway.write_config(**web_config(root, logins_per_address=1000))  # throttling: test_throttle.py
    launch(gateway)
    web: Web | None = None
    try:
        names = {
            "a_good": (gateway.inbox(), d1001_name(part=1), d1001_body()),
            "a_bad": (gateway.inbox(), d1001_name(part=2), BOM + d1001_body()),
            "b_good": (
                gateway.inbox(tc=OTHER_TC),
                d1001_name(org=OTHER_ORG, part=1),
                d1001_body(org=OTHER_ORG),
            ),
        }
        for inbox, name, data in names.values():
            drop(inbox, name, data)
        files = {label: outcome(gateway, name) for label, (_, name, _) in names.items()}
        for username, password in PASSWORDS.items():
            add_user(gateway, username, password, ROLES[username])
        web = start_web(gateway)
        yield Site(gateway, web, files)
    finally:
        if web is not None:
            web.stop()
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.stop()
