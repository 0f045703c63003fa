"""Console accounts: argon2id hashes, lock-out and its expiry, sessions ended, the web-user command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.web.accounts import AccountError, Accounts, LoginResult, Role
from tests.conftest import REPO

GOOD = "correct-horse-battery"


def test_passwords_are_stored_as_argon2id_hashes(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "accounts.sqlite")
    accounts.add("alice", GOOD, Role.INSTITUTION, "41210000")
    (stored,) = (
        sqlite3.connect(tmp_path / "accounts.sqlite").execute("SELECT password_hash FROM accounts").fetchone()
    )
    assert stored.startswith("$argon2id$") and GOOD not in stored
    assert (tmp_path / "accounts.sqlite").stat().st_mode & 0o077 == 0
    result, account = accounts.login("alice", GOOD)
    assert result is LoginResult.OK and account is not None and account.institution == "41210000"
    assert accounts.login("alice", "wrong-password")[0] is LoginResult.BAD
    assert accounts.login("nobody", GOOD)[0] is LoginResult.BAD  # the same answer as a wrong password


def test_lock_out_after_failures_then_it_expires(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "a.sqlite", max_failed=2, lockout=timedelta(seconds=0.5))
    accounts.add("bob", GOOD, Role.OPERATOR)
    assert [accounts.login("bob", "wrong-password")[0] for _ in range(2)] == [
        LoginResult.BAD,
        LoginResult.LOCKED,
    ]
    assert accounts.login("bob", GOOD)[0] is LoginResult.LOCKED
    time.sleep(0.6)
    assert accounts.login("bob", GOOD)[0] is LoginResult.OK


def test_a_success_resets_the_failure_count(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "a.sqlite", max_failed=2)
    accounts.add("bob", GOOD, Role.OPERATOR)
    for _ in range(3):
        assert accounts.login("bob", "wrong-password")[0] is LoginResult.BAD
        assert accounts.login("bob", GOOD)[0] is LoginResult.OK


def test_ending_sessions_and_changing_passwords_move_the_generation(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "a.sqlite")
    accounts.add("bob", GOOD, Role.OPERATOR)
    first = accounts.get("bob")
    accounts.end_sessions("bob")
    accounts.set_password("bob", "another-long-password")
    later = accounts.get("bob")
    assert first is not None and later is not None and later.generation == first.generation + 2


@pytest.mark.parametrize(
    ("username", "password", "role", "institution"),
    [
        ("bad name", GOOD, Role.OPERATOR, None),
        ("alice", "short", Role.OPERATOR, None),
        ("alice", GOOD, Role.INSTITUTION, None),
        ("alice", GOOD, Role.OPERATOR, "41210000"),
    ],
)
def test_bad_accounts_are_refused(
    tmp_path: Path, username: str, password: str, role: Role, institution: str | None
) -> None:
    with pytest.raises(AccountError):
        Accounts(tmp_path / "a.sqlite").add(username, password, role, institution)


def cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "web-user", *args, "-c", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def test_web_user_command(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config()
    unknown = cli(config, "add", "carol", "--institution", "99999999", "--password-stdin", stdin=GOOD + "\n")
    assert unknown.returncode == 1 and "no transfer code of institution 99999999" in unknown.stderr
    assert (
        cli(config, "add", "carol", "--institution", "41220000", "--password-stdin", stdin=GOOD).returncode
        == 0
    )
    demo = cli(config, "demo")
    assert demo.returncode == 0, demo.stderr
    made = [line.split("\t") for line in demo.stdout.splitlines()]
    assert [m[0] for m in made] == ["demo-operator", "demo-41210000"]
    listed = cli(config, "list").stdout
    assert "carol\tinstitution 41220000" in listed and "demo-operator\toperator" in listed
    accounts = Accounts(tmp_path / "web" / "accounts.sqlite")
    for username, password, *_ in made:
        assert accounts.login(username, password)[0] is LoginResult.OK
    assert cli(config, "remove", "carol").returncode == 0
    assert accounts.get("carol") is None


def test_web_config_paths_are_relative_to_the_config_and_tls_goes_in_pairs(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from gateway.config import ConfigError, load_config
    from gateway.web.settings import web_dir

    config = load_config(write_config(web={"dir": "console", "tls_cert": "c.pem", "tls_key": "k.pem"}))
    assert web_dir(config) == tmp_path / "console"
    assert config.web.tls_key == tmp_path / "k.pem"
    assert web_dir(load_config(write_config())) == tmp_path / "web"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(web={"tls_cert": "c.pem"}))
    assert caught.value.problems == ["web: tls_cert and tls_key go together"]
