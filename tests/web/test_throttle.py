"""Login throttling and lock-out on a console of its own (small limits), and the cookie behind TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.daemon import Gateway
from tests.conftest import REPO
from tests.web.conftest import Web, add_user, login, post_login, start_web, web_config

PASSWORD = "a-good-long-password"  # noqa: S105 (a test account)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Gateway, Web]]:
    """A console that locks an account after 3 failures and lets an address try 6 times in 5 minutes."""
    gateway = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    gateway.write_config(**web_config(tmp_path, max_failed_logins=3, logins_per_address=6))
    add_user(gateway, "alice", PASSWORD, "41210000")
    add_user(gateway, "bob", PASSWORD, None)
    web = start_web(gateway)
    yield gateway, web
    web.stop()


def audit(gateway: Gateway) -> list[dict[str, str]]:
    lines = (gateway.root / "web" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_account_locks_after_failures_even_for_the_right_password(small: tuple[Gateway, Web]) -> None:
    gateway, web = small
    with httpx.Client(base_url=web.url) as client:
        codes = [post_login(client, "alice", "wrong-password-x").status_code for _ in range(3)]
        assert codes == [401, 401, 403]  # the third failure locks
        locked = post_login(client, "alice", PASSWORD)
        assert locked.status_code == 403 and "锁定" in locked.text
    outcomes = [a["outcome"] for a in audit(gateway) if a["user"] == "alice"]
    assert outcomes == ["bad", "bad", "locked", "locked"]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "web-user", "unlock", "alice", "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with login(web.url, "alice", PASSWORD) as client:
        assert client.get("/files").status_code == 200


def test_one_address_is_throttled_across_accounts(small: tuple[Gateway, Web]) -> None:
    gateway, web = small
    with httpx.Client(base_url=web.url) as client:
        codes = [post_login(client, user, "wrong-password-x").status_code for user in ("x1", "x2", "x3")]
        codes += [post_login(client, "bob", "wrong-password-x").status_code for _ in range(2)]
        assert codes == [401] * 5
        assert post_login(client, "bob", PASSWORD).status_code == 303  # the sixth attempt is allowed
        throttled = post_login(client, "bob", PASSWORD)
        assert throttled.status_code == 429
    assert audit(gateway)[-1]["outcome"] == "throttled"


def test_cookie_is_secure_behind_a_tls_proxy(tmp_path: Path) -> None:
    """``secure_cookies``: the browser sends the cookie back over HTTPS only (here: plain HTTP, so not)."""
    gateway = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    gateway.write_config(**web_config(tmp_path, secure_cookies=True))
    add_user(gateway, "alice", PASSWORD, "41210000")
    web = start_web(gateway)
    try:
        with httpx.Client(base_url=web.url) as client:
            cookie = client.get("/login").headers["set-cookie"].lower()
            assert "; secure" in cookie and "httponly" in cookie
            assert post_login(client, "alice", PASSWORD).status_code == 403  # no cookie came back
    finally:
        web.stop()
