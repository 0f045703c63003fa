"""A ~300 MB file streams through the validator in bounded memory (spec 4: files can be GB large)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

BLOCKS = 295
LINES_PER_BLOCK = 10_000
MAX_RSS_MB = 150

CHILD = textwrap.dedent(
    """
    import sys
    from codes.tables import bundled_tables
    from validators.text import TextValidator

    validator = TextValidator(bundled_tables()["D2001"], org="41210000", date="20240115")
    with open(sys.argv[1], "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            validator.feed(chunk)
    report = validator.finish()
    print(report.records, report.total, len(report.findings))
    """
)

LAUNCHER = textwrap.dedent(
    """
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True)
    print(done.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)


def block() -> bytes:
    rows = []
    for i in range(LINES_PER_BLOCK):
        ywlx = ("020", "022", "024", "036", "039")[i % 5]
        amount = f"{(i * 7919) % 5_000_000}.{i % 100:02d}"
        sqje, sqfe = (amount, "") if ywlx in ("020", "022") else ("", amount)
        rows.append(
            f"41210000|20240115{i:016d}|{i % 2}|4121{i * 104729 % 10**12:012d}|{i % 999_999:06d}|{ywlx}|"
            f"{sqje}|{sqfe}|20240115|{9 + i % 6:02d}{i % 60:02d}{i * 7 % 60:02d}|"
            f"{'' if i % 3 else 'W01'}|20240115"
        )
    rows[1234] = rows[1234].replace("|20240115|", "|20240230|", 1)  # one bad SQRQ a block
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.slow
def test_300_mb_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "CISP-41210000_D2001_V01_1_20240115_01_Z.TXT"
    data = block()
    with path.open("wb") as out:
        for _ in range(BLOCKS):
            out.write(data)
    assert path.stat().st_size > 300_000_000
    child = [sys.executable, "-c", CHILD, str(path)]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *child],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    records, total, kept, max_rss_kb = (int(x) for x in done.stdout.split())
    assert (records, total, kept) == (BLOCKS * LINES_PER_BLOCK, BLOCKS, 100)
    assert max_rss_kb / 1024 < MAX_RSS_MB
