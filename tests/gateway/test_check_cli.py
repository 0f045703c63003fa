"""``fdep-gateway check`` as an institution runs it: real files, the real command, its exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from harness.daemon import ORG, d1001_body, d1001_name, yesterday
from tests.conftest import REPO


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / d1001_name()
    path.write_bytes(d1001_body(rows=2))
    result = check(str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "2 records" in result.stdout


def test_notepad_file_exits_1_with_bom_finding_and_hint(tmp_path: Path) -> None:
    path = tmp_path / d1001_name()
    path.write_bytes(b"\xef\xbb\xbf" + d1001_body().replace(b"\n", b"\r\n"))
    result = check(str(path))
    assert result.returncode == 1
    assert "BOM_PRESENT" in result.stdout and "记事本" in result.stdout and "Notepad" in result.stdout


def test_json_output_for_machines(tmp_path: Path) -> None:
    good = tmp_path / d1001_name(part=1)
    good.write_bytes(d1001_body())
    bad = tmp_path / d1001_name(part=2)
    bad.write_bytes(d1001_body().replace(b"|01|", b"|09|"))
    result = check("--json", str(tmp_path))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    verdicts = {f["name"]: f for f in document["files"]}
    assert verdicts[good.name]["ok"] and not verdicts[bad.name]["ok"]
    (finding,) = verdicts[bad.name]["findings"]
    assert finding["code"] == "FIELD_ENUM" and finding["line"] == 1 and finding["field"] == "JGLX"
    assert finding["value"] == "09"


def test_txt_and_zip_checked_together(tmp_path: Path) -> None:
    date = yesterday()
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    content = b"attachment body"
    with zipfile.ZipFile(tmp_path / f"{stem}.ZIP", "w") as zf:
        zf.writestr("a.pdf", content)
    digest = hashlib.sha256(content).hexdigest()
    rows = f"{ORG}|F1|A|01|a.pdf|{len(content)}|{digest}|{date}\n{ORG}|F2|A|01|b.pdf|3||{date}\n"
    (tmp_path / f"{stem}.TXT").write_text(rows, encoding="utf-8")
    result = check("--json", str(tmp_path))
    document = json.loads(result.stdout)
    txt = next(f for f in document["files"] if f["name"].endswith(".TXT"))
    assert result.returncode == 1
    assert [f["code"] for f in txt["findings"]] == ["ATTACHMENT_MISMATCH"]
    assert txt["findings"][0]["line"] == 2


def test_zip_without_its_txt(tmp_path: Path) -> None:
    name = f"CISP-{ORG}_D3006_V01_1_{yesterday()}_01_Q.ZIP"
    with zipfile.ZipFile(tmp_path / name, "w") as zf:
        zf.writestr("a.pdf", b"x")
    result = check("--json", str(tmp_path / name))
    assert result.returncode == 1
    assert json.loads(result.stdout)["files"][0]["findings"][-1]["code"] == "ATTACHMENT_MISSING"


def test_restricted_table_values_never_printed(tmp_path: Path) -> None:
    date = yesterday()
    name = f"CISP-{ORG}_D1005_V01_1_{date}_01_Q.TXT"
    planted = "张三丰绝密薪酬"
    (tmp_path / name).write_text(f"{ORG}|{planted * 10}|总经理|20200101||abc|{date}\n", encoding="utf-8")
    for args in (["--json"], []):
        result = check(*args, str(tmp_path / name))
        assert result.returncode == 1
        assert "FIELD_TOO_LONG" in result.stdout and "FIELD_FORMAT" in result.stdout
        assert planted not in result.stdout and "abc" not in result.stdout


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = check(str(tmp_path / "absent.TXT"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_config_check_prints_problems_and_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "spool_root: x\nstations: {}\nroutes: {}\ntransfer_codes: {}\nhistory: {dir: h}\nextra: 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config-check", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "extra: Extra inputs are not permitted" in result.stderr and "Traceback" not in result.stderr


def test_bundled_config_passes_config_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config-check", "-c", "config/gateway.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "OK" in result.stdout
