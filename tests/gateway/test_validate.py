"""validate_bytes (a small TXT the daemon read while syncing it) gives validate_file's verdict exactly."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codes.tables import bundled_tables
from gateway.pipeline.validate import Rules, Verdict, validate_bytes, validate_file
from validators.archive import ZipLimits

TODAY = date(2024, 1, 20)
RULES = Rules(
    tables=bundled_tables(),
    systems=("CISP",),
    max_file_bytes=4096,
    zip_limits=ZipLimits(max_members=10, max_total_bytes=1 << 20, max_ratio=200),
    pair_timeout_minutes=10,
)
TXT = "CISP-41210000_D2001_V01_1_20240115_01_Q.TXT"
GOOD = "41210000|{n:024d}|0|4121902254243635|561913|024||1265514.50|20240115|092337|W01|20240115\n"
STEM = "CISP-41210000_D3006_V01_1_20240115_01_Q"


def zipped(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def facts(verdict: Verdict) -> dict[str, Any]:
    """Everything a verdict says, comparable."""
    return {
        "name": verdict.name,
        "parsed": verdict.parsed,
        "table": verdict.table.code if verdict.table else None,
        "size": verdict.size,
        "sha256": verdict.sha256,
        "mtime_ns": verdict.mtime_ns,
        "records": verdict.records,
        "findings": [f.to_dict() for f in verdict.findings.items],
        "findings_total": verdict.findings.total,
        "attachment_rows": verdict.attachment_rows,
        "members": verdict.members,
    }


def both(tmp_path: Path, name: str, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    path = tmp_path / "file"
    path.write_bytes(data)
    on_disk = validate_file(path, name, RULES, today=TODAY)
    in_memory = validate_bytes(data, name, RULES, today=TODAY, mtime_ns=path.stat().st_mtime_ns)
    return facts(on_disk), facts(in_memory)


PDF = b"%PDF-1.4 tiny"
CASES = {
    "valid TXT": (TXT, "".join(GOOD.format(n=n) for n in range(5)).encode()),
    "BOM and a bad field": (TXT, b"\xef\xbb\xbf" + GOOD.format(n=1).replace("|024|", "|02X|").encode()),
    "not UTF-8": (TXT, GOOD.format(n=1).encode().replace(b"W01", b"\xff\xfe1")),
    "empty": (TXT, b""),
    "too large": (TXT, GOOD.format(n=0).encode() * 40),
    "a name that does not parse": ("report.txt", b"anything"),
    "a near-miss name (lower case)": (TXT.lower(), GOOD.format(n=1).encode()),
    "an attachment TXT": (
        f"{STEM}.TXT",
        f"41210000|FJ001|A|01|r.pdf|{len(PDF)}|{hashlib.sha256(PDF).hexdigest()}|20240115\n".encode(),
    ),
    "a ZIP": (f"{STEM}.ZIP", zipped(**{"r.pdf": PDF})),
    "a ZIP that is not one": (f"{STEM}.ZIP", b"PK\x03\x04 and then nothing"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_same_verdict_from_bytes_as_from_the_file(tmp_path: Path, case: str) -> None:
    on_disk, in_memory = both(tmp_path, *CASES[case])
    assert in_memory == on_disk


def test_the_cases_cover_what_they_say() -> None:
    """The comparison above means something only if the verdicts differ from case to case."""
    codes = {
        case: {f.code for f in validate_bytes(data, name, RULES, today=TODAY).findings.items}
        for case, (name, data) in CASES.items()
    }
    assert not codes["valid TXT"] and not codes["a ZIP"] and not codes["an attachment TXT"]
    assert "BOM_PRESENT" in codes["BOM and a bad field"]
    assert "FILE_TOO_LARGE" in codes["too large"]
    assert codes["a ZIP that is not one"] and codes["a name that does not parse"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["", "x", "0", "20240115", "41210000", "中", "1.5", "|", "\t", "\r", "99999999999"]),
        min_size=12,
        max_size=14,
    ),
    st.integers(0, 4),
)
def test_any_small_content_gives_the_same_verdict(
    tmp_path_factory: pytest.TempPathFactory, fields: list[str], n: int
) -> None:
    data = ("".join(GOOD.format(n=i) for i in range(n)) + "|".join(fields) + "\n").encode()
    on_disk, in_memory = both(tmp_path_factory.mktemp("v"), TXT, data)
    assert in_memory == on_disk


def test_mtime_is_the_one_given(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(GOOD.format(n=1).encode())
    os.utime(path, ns=(1, 123_456_789))
    assert validate_file(path, TXT, RULES, today=TODAY).mtime_ns == 123_456_789
    assert (
        validate_bytes(path.read_bytes(), TXT, RULES, today=TODAY, mtime_ns=123_456_789).mtime_ns
        == 123_456_789
    )
