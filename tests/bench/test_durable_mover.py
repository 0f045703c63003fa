"""The burst's durable baseline takes every file through every step it claims to make (bench/burst.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import REPO


@pytest.mark.parametrize("hand_off", ["copy", "link"])
def test_every_file_reaches_core_receipt_and_archive(tmp_path: Path, hand_off: str) -> None:
    core = tmp_path / "core"
    core.mkdir()
    inboxes = [tmp_path / f"TC{n}" / "in" for n in range(3)]
    for inbox in inboxes:
        inbox.mkdir(parents=True)
    mover = subprocess.Popen(
        [sys.executable, "-m", "bench.durable_mover", str(core), hand_off, "4", *map(str, inboxes)], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{core}.ready").exists():
            assert mover.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        staged = tmp_path / "staged"
        staged.mkdir()
        for n in range(30):  # written, then renamed in: the mover never sees a file half written
            (staged / f"f{n}.TXT").write_bytes(b"row %d\n" % n)
            (staged / f"f{n}.TXT").rename(inboxes[n % 3] / f"f{n}.TXT")
        done = Path(f"{core}.done")  # counted once a batch's directories are fsynced: the last step
        while not done.exists() or int(done.read_text()) < 30:
            assert mover.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        mover.kill()
        mover.wait()
    for n in range(30):
        box = inboxes[n % 3].parent
        assert (core / f"f{n}.TXT").read_bytes() == b"row %d\n" % n
        assert (box / "out" / f"f{n}.TXT.OK").exists()
        assert (box / "archive" / f"f{n}.TXT").read_bytes() == b"row %d\n" % n
        assert not (box / "in" / f"f{n}.TXT").exists() and not (box / "work" / f"f{n}.TXT").exists()
    assert ((core / "f0.TXT").stat().st_nlink == 2) == (hand_off == "link")
