"""The command line as a new user meets it: exit codes, defaults, summaries and output any locale can take."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.daemon import ORG, Gateway, d1001_body, d1001_name, drop, yesterday
from tests.conftest import REPO

HOSTILE = b"CISP-\xff\xfe\x85\xe2\x80\xa8_D1001.TXT"  # not UTF-8, a C1 control, a line separator


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def drained(gateway: Gateway) -> subprocess.CompletedProcess[bytes]:
    result = run("drain", "-c", str(gateway.config_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize(
    "env",
    [
        {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii:strict"},
        {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"},
    ],
    ids=["ascii-locale", "strict-utf8"],
)
def test_history_json_is_valid_utf8_json_with_hostile_names(gateway: Gateway, env: dict[str, str]) -> None:
    inbox = gateway.inbox()
    staged = inbox / ".staged"
    staged.write_bytes(d1001_body())
    staged.rename(inbox / os.fsdecode(HOSTILE))
    drained(gateway)
    result = run("history", "-c", str(gateway.config_path), "--json", env=env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    text = result.stdout.decode("utf-8")  # raises if any byte sequence is not UTF-8
    names = [json.loads(line)["name"] for line in text.splitlines()]
    assert names and all(name == os.fsdecode(HOSTILE) for name in names)  # the escapes round-trip
    plain = run("history", "-c", str(gateway.config_path), env=env)
    assert plain.returncode == 0 and b"Traceback" not in plain.stderr
    assert b"CISP-\\udcff\\udcfe\\udc85\\u2028_D1001.TXT" in plain.stdout  # shown, escaped


def test_history_usage_errors_exit_2_and_list_the_valid_values(gateway: Gateway) -> None:
    bogus = run("history", "-c", str(gateway.config_path), "--status", "bogus")
    assert bogus.returncode == 2
    assert b"forwarded" in bogus.stderr and b"rejected" in bogus.stderr
    since = run("history", "-c", str(gateway.config_path), "--since", "yesterday")
    assert since.returncode == 2 and b"not a date or time" in since.stderr


def test_show_tells_a_files_whole_story(gateway: Gateway) -> None:
    name = d1001_name()
    bad_rows = f"{ORG}|示例基金|91110000100000000X|09|北京市||||{yesterday()}\n"
    drop(gateway.inbox(), name, b"\xef\xbb\xbf" + bad_rows.encode())
    drained(gateway)
    (event,) = [e for e in gateway.events() if e["event"] == "rejected"]
    assert event["findings_total"] >= 2
    result = run("show", "-c", str(gateway.config_path), event["file_id"])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode("utf-8")
    for finding in event["findings"]:
        for key in ("code", "message_zh", "message_en", "hint_zh", "hint_en"):
            assert finding[key] in text
    assert "received" in text and "rejected" in text
    assert "/quarantine/" in text and name in text
    assert f"receipt: {gateway.outbox() / name.replace('.TXT', '_BAD.TXT')}" in text
    document = json.loads(run("show", "-c", str(gateway.config_path), "--json", event["file_id"]).stdout)
    assert [e["event"] for e in document["events"]] == ["received", "rejected"]
    assert document["location"].endswith(f"{event['file_id']}.{name}")
    unknown = run("show", "-c", str(gateway.config_path), "20200101-000000-000000-0000")
    assert unknown.returncode == 1 and b"no history" in unknown.stderr


def test_drain_prints_what_became_of_the_files(gateway: Gateway) -> None:
    drop(gateway.inbox(), d1001_name(part=1), d1001_body())
    drop(gateway.inbox(), d1001_name(part=2), b"\xef\xbb\xbf" + d1001_body())
    result = drained(gateway)
    assert b"drained: 1 forwarded, 1 rejected, 0 duplicate" in result.stdout


def test_config_from_the_environment_and_a_usage_error_without_one(gateway: Gateway) -> None:
    env = {"FDEP_GATEWAY_CONFIG": str(gateway.config_path)}
    assert run("status", env=env).returncode == 0
    assert b"quarantined today" in run("status", env=env).stdout
    missing = run("status", env={"FDEP_GATEWAY_CONFIG": ""})
    if Path("/etc/fdep-gateway/gateway.yaml").exists():
        pytest.skip("this machine has a gateway installed at the default path")
    assert missing.returncode == 2 and b"FDEP_GATEWAY_CONFIG" in missing.stderr


def test_version_and_help_without_the_internal_worker() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith(b"fdep-gateway ")
    helped = run("--help").stdout.decode()
    assert "history" in helped and "show" in helped and "worker" not in helped


def test_config_check_says_how_far_the_calendar_reaches(gateway: Gateway) -> None:
    result = run("config-check", "-c", str(gateway.config_path))
    assert result.returncode == 0
    assert b"calendar: the State Council schedule" in result.stdout


def test_check_on_an_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run("check", str(tmp_path))
    assert result.returncode == 2 and b"no files to check" in result.stderr


def test_check_counts_one_finding_in_the_singular(tmp_path: Path) -> None:
    (tmp_path / d1001_name()).write_bytes(b"\xef\xbb\xbf" + d1001_body())
    assert b"1 finding]" in run("check", str(tmp_path)).stdout


def test_check_rejects_the_txt_of_a_pair_whose_zip_is_bad(tmp_path: Path) -> None:
    """As the daemon does: a TXT and its ZIP are one unit; the TXT says why it is rejected."""
    stem = f"CISP-{ORG}_D3006_V01_1_{yesterday()}_01_Q"
    content = b"attachment body"
    with zipfile.ZipFile(tmp_path / f"{stem}.ZIP", "w") as zf:
        zf.writestr("a.pdf", content)
    digest = hashlib.sha256(content).hexdigest()
    rows = f"{ORG}|F1|A|01|a.pdf|{len(content)}|{digest}|{yesterday()}\n"
    (tmp_path / f"{stem}.TXT").write_text(rows, encoding="utf-8")
    zip_path = tmp_path / f"{stem}.ZIP"
    zip_path.write_bytes(zip_path.read_bytes()[:-10])  # truncated: ZIP_CORRUPT
    result = run("check", "--json", str(tmp_path))
    assert result.returncode == 1
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    txt = files[f"{stem}.TXT"]
    assert not txt["ok"] and [f["code"] for f in txt["findings"]] == ["ATTACHMENT_REJECTED"]
    lines = run("check", str(tmp_path)).stdout.decode().splitlines()
    assert any(line.startswith("拒收 BAD") and f"{stem}.TXT" in line for line in lines)


def test_the_daemon_does_not_warn_of_the_calendar_at_every_start(gateway: Gateway) -> None:
    drop(gateway.inbox(), d1001_name(), d1001_body())
    result = drained(gateway)
    assert b"calendar.year_unknown" not in result.stderr
