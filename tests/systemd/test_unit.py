"""The unit, tmpfiles.d and sysusers.d files as systemd's own tools read them.

``systemd-analyze verify`` checks the executables a unit names and the units it depends on. The unit
installs /opt/fdep-gateway/.venv/bin/fdep-gateway, which no test machine has, so the verify runs with
``--root=`` on a scratch root holding: the unit file itself, unchanged, in etc/systemd/system; a stub
executable at the ExecStart= path; copies of the other Exec*= binaries (/bin/kill); and the host's
/usr/lib/systemd/system (for After=/Wants=/WantedBy= targets). Nothing in the unit is rewritten.
verify exits 0 even on unknown keys or unparsable values (it warns and ignores them), so any output
at all fails the test.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "fdep-gateway.service"
TMPFILES = REPO / "systemd" / "fdep-gateway.tmpfiles.conf"
SYSUSERS = REPO / "systemd" / "fdep-gateway.sysusers.conf"
HOST_UNITS = Path("/usr/lib/systemd/system")

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    analyze is None, reason="systemd-analyze absent (Debian: apt-get install systemd)"
)


def settings(path: Path = UNIT) -> dict[str, list[str]]:
    """key -> every value it is given (a unit may repeat a key), sections merged."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(key: str) -> str:
    (value,) = settings()[key]
    return value


def exec_binary(command_line: str) -> str:
    """The program of an Exec*= line, without its special prefixes (-, @, :, +, !)."""
    return command_line.split()[0].lstrip("-@:+!")


def verify_root(tmp: Path, unit_text: str) -> Path:
    root = tmp / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / UNIT.name).write_text(unit_text, encoding="utf-8")
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    for key, values in settings().items():
        if not key.startswith("Exec"):
            continue
        for value in values:
            program = exec_binary(value)
            target = root / PurePosixPath(program).relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if key == "ExecStart":
                target.write_text("#!/bin/sh\nexit 0\n")  # the installed console script: not here
            else:
                shutil.copy(program, target)  # a system binary: the host has it
            target.chmod(0o755)
    return root


def run_verify(root: Path) -> subprocess.CompletedProcess[str]:
    assert analyze is not None
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_analyze
def test_systemd_analyze_verify_passes_without_a_word(tmp_path: Path) -> None:
    result = run_verify(verify_root(tmp_path, UNIT.read_text(encoding="utf-8")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_verify_as_run_here_does_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text(encoding="utf-8").replace("WatchdogSec=30", "WatchdogSec=soon\nTypo=1")
    result = run_verify(verify_root(tmp_path, broken))
    assert "Unknown key 'Typo'" in result.stderr
    assert "Failed to parse sec value, ignoring: soon" in result.stderr


@needs_analyze
def test_hardening_keeps_the_exposure_low(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the unit 1.3 of 10 ("OK"); fail above 2.0 (threshold is x10)."""
    root = verify_root(tmp_path, UNIT.read_text(encoding="utf-8"))
    assert analyze is not None
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", f"--root={root}", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_unit_runs_the_daemon_as_a_notify_service_with_a_watchdog() -> None:
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30"
    assert one("Restart") == "on-failure"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("ExecStart").split()[1:] == ["run", "-c", "/etc/fdep-gateway/gateway.yaml"]
    assert one("User") == one("Group") == "fdep-gateway"
    assert int(one("TimeoutStopSec")) > 30  # the config's default shutdown_timeout_seconds


def test_unit_is_hardened() -> None:
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert one(key) == value, key


def test_exit_codes_the_unit_refuses_to_restart_are_bad_config_and_unusable_ledger() -> None:
    from gateway.cli import EXIT_CONFIG
    from gateway.store.ledgercheck import EXIT_LEDGER

    assert settings()["RestartPreventExitStatus"] == [str(EXIT_CONFIG), str(EXIT_LEDGER)]


def tmpfiles_dirs() -> list[tuple[str, str, str, str]]:
    """(path, mode, user, group) of every ``d`` line."""
    found = []
    for line in TMPFILES.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == "d":
            found.append((fields[1], fields[2], fields[3], fields[4]))
    return found


def test_tmpfiles_creates_exactly_what_the_unit_may_write() -> None:
    writable = [PurePosixPath(p) for p in one("ReadWritePaths").split()]
    dirs = [PurePosixPath(path) for path, *_ in tmpfiles_dirs()]
    assert "/var/spool/fdep-gateway" in {str(d) for d in dirs}
    for directory in dirs:
        assert any(directory.is_relative_to(w) for w in writable), directory
    for path in writable:
        assert path in dirs, f"{path} is writable but nothing creates it"
    for _path, mode, user, group in tmpfiles_dirs():
        assert (mode, user, group) == ("0750", one("User"), one("Group"))


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="needs root (chown) and systemd-sysusers/systemd-tmpfiles (Debian: apt-get install systemd)",
)
def test_sysusers_then_tmpfiles_make_the_user_and_the_spool(tmp_path: Path) -> None:
    """What an install does (README), on a scratch root: user and group, then the owned directories."""
    root = tmp_path / "root"
    (root / "etc" / "sysusers.d").mkdir(parents=True)
    (root / "etc" / "tmpfiles.d").mkdir(parents=True)
    shutil.copy(SYSUSERS, root / "etc" / "sysusers.d" / "fdep-gateway.conf")
    shutil.copy(TMPFILES, root / "etc" / "tmpfiles.d" / "fdep-gateway.conf")
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        result = subprocess.run(
            [*tool, f"--root={root}", "fdep-gateway.conf"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    passwd = {
        line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
    }
    user = passwd[one("User")]
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert uid < 1000 and home == "/var/lib/fdep-gateway" and shell == "/usr/sbin/nologin"
    for path, _mode, _user, _group in tmpfiles_dirs():
        st = (root / PurePosixPath(path).relative_to("/")).stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750, path
        assert (st.st_uid, st.st_gid) == (uid, gid), path
