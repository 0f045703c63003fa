from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.receipts import Receipt, lock_stripe, receipt_lock, receipt_name, render, write_receipt
from tests.conftest import REPO
from validators import findings

AT = datetime(2026, 11, 25, 9, 30, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
NAME = "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT"


def test_bad_receipt_layout_follows_spec_11(tmp_path: Path) -> None:
    bom = findings.make("BOM_PRESENT")
    count = findings.make("FIELD_COUNT", line=3, found=8, expected=9, table="D1001")
    receipt = Receipt(NAME, False, 3, [bom, count], 2, AT, "20261125-093005-000001-0001", "rejected")
    path = write_receipt(tmp_path, receipt)
    assert path.name == "CISP-41210000_D1001_V01_1_20220401_01_Q_BAD.TXT"
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8").splitlines()
    assert lines[0] == f"{NAME}|BAD|3|2|20261125093005|20261125-093005-000001-0001|rejected"
    assert lines[1].split("|")[:4] == ["0", "0", "", "BOM_PRESENT"]
    cells = lines[2].split("|")
    assert cells[:4] == ["3", "0", "", "FIELD_COUNT"] and len(cells) == 6
    assert "｜" in cells[5]  # the hint mentions the separator; it must not split the cell
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


ID_A, ID_B, ID_C = "20261125-093005-000001-0001", "20261125-093006-000001-0002", "20261125-093007-000001-0003"


def test_newer_receipt_replaces_older_of_either_kind(tmp_path: Path) -> None:
    write_receipt(tmp_path, Receipt(NAME, False, 1, [], 1, AT, ID_A, "rejected"))
    write_receipt(tmp_path, Receipt(NAME, True, 1, [], 0, AT, ID_B, "forwarded"))
    write_receipt(tmp_path, Receipt(NAME, True, 1, [], 0, AT, ID_C, "duplicate"))
    (only,) = tmp_path.iterdir()
    assert only.name.endswith("_Q_OK.TXT")
    assert only.read_text().split("|")[5:] == [ID_C, "duplicate\n"]


def test_core_feedback_of_the_same_name_is_never_replaced(tmp_path: Path) -> None:
    feedback = tmp_path / NAME.replace(".TXT", "_OK.TXT")
    feedback.write_text("平台反馈\n", encoding="utf-8")
    assert write_receipt(tmp_path, Receipt(NAME, True, 1, [], 0, AT, ID_A, "forwarded")) is None
    assert feedback.read_text(encoding="utf-8") == "平台反馈\n"


def test_receipt_name_of_odd_names_fits_a_file_system() -> None:
    assert receipt_name("noext", ok=False) == "noext_BAD.TXT"
    assert receipt_name(".hidden.TXT", ok=True) == "hidden_OK.TXT"
    long = "名" * 200 + ".TXT"
    assert len(receipt_name(long, ok=False).encode()) <= 255


def test_control_characters_in_names_are_escaped() -> None:
    receipt = Receipt("A\nB.TXT", False, 0, [], 0, AT, "x", "rejected")
    assert render(receipt).decode().count("\n") == 1


HOLD_IN_ANOTHER_PROCESS = """
import sys, time
from pathlib import Path
from gateway.receipts import receipt_lock
with receipt_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(1.0)
"""


def test_the_stems_lock_holds_across_processes(tmp_path: Path) -> None:
    """With several gateway processes, the one delivering the core's feedback and the one writing the
    receipt of the same stem are different processes: the lock must keep them apart too."""
    outbox = tmp_path / "k1237" / "TC41210000" / "out"
    outbox.mkdir(parents=True)
    name = "CISP-41210000_D1001_V01_1_20261130_01_Q"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(outbox), f"{name}_BAD.TXT"],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        asked = time.monotonic()
        with receipt_lock(outbox, f"{name}_OK.TXT"):  # the same stem: waits for the other process
            waited = time.monotonic() - asked
    finally:
        holder.communicate(timeout=10)
    assert waited > 0.5


CROSSING_IN_ANOTHER_PROCESS = """
import sys, threading, time
from pathlib import Path
from gateway.receipts import receipt_lock
outbox, first, second = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def hold_first():
    with receipt_lock(outbox, first):
        print("held", flush=True)
        time.sleep(1.5)
holder = threading.Thread(target=hold_first)
holder.start()
time.sleep(0.7)
with receipt_lock(outbox, second):  # held by the other process until it gets ``first``
    pass
holder.join()
"""


def test_threads_of_two_processes_waiting_crosswise_are_not_a_deadlock(tmp_path: Path) -> None:
    """Process 1 holds stem A and (another thread) waits for stem B; process 2 holds B and waits for A.
    No thread waits while holding, so both go through once the holders let go. POSIX byte-range locks
    called this a deadlock (EDEADLK: the kernel sees only the processes)."""
    outbox = tmp_path / "k1237" / "TC41210000" / "out"
    outbox.mkdir(parents=True)
    stems = (f"CISP-41210000_D1001_V01_{part}_20261130_01_Q_OK.TXT" for part in range(1, 10))
    first = next(stems)
    second = next(s for s in stems if lock_stripe(outbox, s) != lock_stripe(outbox, first))
    child = subprocess.Popen(
        [sys.executable, "-c", CROSSING_IN_ANOTHER_PROCESS, str(outbox), first, second],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    errors: list[BaseException] = []

    def hold_second() -> None:
        with receipt_lock(outbox, second):
            time.sleep(1.5)

    try:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        holder = threading.Thread(target=hold_second)
        holder.start()
        time.sleep(0.5)
        try:
            with receipt_lock(outbox, first):
                pass
        except OSError as exc:
            errors.append(exc)
        holder.join()
    finally:
        _out, err = child.communicate(timeout=20)
    assert errors == [] and child.returncode == 0, err.decode()[-2000:]
