from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.pipeline.receipts import Receipt, lock_stripe, receipt_lock, receipt_name, render, write_receipt
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
from gateway.pipeline.receipts import receipt_lock
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
from gateway.pipeline.receipts import receipt_lock
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


# --- issue 19: a receipt that lies, special files at a receipt's name ----------------------------------

STEM = NAME.removesuffix(".TXT")
ID_D = "20261125-093008-000001-0004"


def _forwarded(outbox: Path) -> Path:
    path = write_receipt(outbox, Receipt(NAME, True, 1, [], 0, AT, ID_A, "forwarded"))
    assert path is not None and path.name == f"{STEM}_OK.TXT"
    return path


def _names(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if not p.name.startswith("."))


def test_another_name_of_the_same_stem_never_replaces_a_receipt(tmp_path: Path) -> None:
    """The sender drops the name of a forwarded file with a trailing space, a lower-case extension, or a
    stray ZIP of the same stem: each is rejected, and each BAD receipt goes under its own name."""
    ok = _forwarded(tmp_path)
    bad = Receipt(f"{NAME} ", False, 0, [], 1, AT, ID_B, "rejected")
    assert write_receipt(tmp_path, bad) == tmp_path / f"{STEM}_{ID_B}_BAD.TXT"
    lower = Receipt(f"{STEM}.txt", False, 0, [], 1, AT, ID_C, "rejected")
    assert write_receipt(tmp_path, lower) == tmp_path / f"{STEM}_{ID_C}_BAD.TXT"
    stray = Receipt(f"{STEM}.ZIP", False, 0, [], 1, AT, ID_D, "rejected")
    assert write_receipt(tmp_path, stray) == tmp_path / f"{STEM}_{ID_D}_BAD.TXT"
    assert ok.read_text().split("|")[:2] == [NAME, "OK"]
    assert _names(tmp_path) == sorted(
        [ok.name, f"{STEM}_{ID_B}_BAD.TXT", f"{STEM}_{ID_C}_BAD.TXT", f"{STEM}_{ID_D}_BAD.TXT"]
    )


def test_no_receipt_sits_beside_another_in_another_case(tmp_path: Path) -> None:
    ok = _forwarded(tmp_path)
    lower = NAME.lower()
    path = write_receipt(tmp_path, Receipt(lower, False, 0, [], 1, AT, ID_B, "rejected"))
    assert path is not None and path.name.lower() != f"{STEM}_BAD.TXT".lower()
    assert [p.name for p in tmp_path.iterdir() if p.name.lower() == f"{STEM}_bad.txt".lower()] == []
    assert ok.exists()
    other = "report.TXT"  # not a valid name at all: upper and lower case still never side by side
    write_receipt(tmp_path, Receipt(other, False, 0, [], 1, AT, ID_C, "rejected"))
    again = write_receipt(tmp_path, Receipt("REPORT.txt", False, 0, [], 1, AT, ID_D, "rejected"))
    assert again == tmp_path / f"REPORT_{ID_D}_BAD.TXT"


def test_the_same_name_again_and_the_units_partner_still_replace(tmp_path: Path) -> None:
    """A resend of the same name answers for it (newest file stands); a TXT+ZIP unit speaks for both."""
    write_receipt(tmp_path, Receipt(NAME, False, 1, [], 1, AT, ID_A, "rejected"))
    zipped = f"{STEM}.ZIP"
    both = Receipt(zipped, True, 1, [], 0, AT, ID_B, "forwarded", names=(NAME,))
    assert write_receipt(tmp_path, both) == tmp_path / f"{STEM}_OK.TXT"
    assert _names(tmp_path) == [f"{STEM}_OK.TXT"]
    assert write_receipt(tmp_path, Receipt(zipped, False, 1, [], 1, AT, ID_C, "rejected")) == (
        tmp_path / f"{STEM}_BAD.TXT"
    )


def test_a_fifo_at_the_receipts_name_never_blocks_and_is_never_replaced(tmp_path: Path) -> None:
    """The receipt step opened a FIFO a sender made at the receipt's name, and blocked for good."""
    os.mkfifo(tmp_path / f"{STEM}_OK.TXT")
    done: list[Path | None] = []
    writer = threading.Thread(
        target=lambda: done.append(
            write_receipt(tmp_path, Receipt(NAME, True, 1, [], 0, AT, ID_A, "forwarded"))
        ),
        daemon=True,
    )
    writer.start()
    writer.join(timeout=5)
    if writer.is_alive():  # unblock the thread (open the FIFO's other end) before failing
        os.close(os.open(tmp_path / f"{STEM}_OK.TXT", os.O_WRONLY | os.O_NONBLOCK))
        writer.join(timeout=5)
        raise AssertionError("the receipt step blocked on a FIFO")
    assert done == [tmp_path / f"{STEM}_{ID_A}_OK.TXT"]
    assert stat.S_ISFIFO((tmp_path / f"{STEM}_OK.TXT").lstat().st_mode)


def test_a_symlink_directory_or_socket_at_the_receipts_name_gets_a_receipt_beside_it(tmp_path: Path) -> None:
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.write_text("sender's own file\n")
    for n, make in enumerate(
        (
            lambda p: p.symlink_to(target),
            lambda p: p.symlink_to(tmp_path / "nowhere"),
            lambda p: p.mkdir(),
        )
    ):
        outbox = tmp_path / str(n)
        outbox.mkdir()
        make(outbox / f"{STEM}_BAD.TXT")
        path = write_receipt(outbox, Receipt(NAME, False, 1, [], 1, AT, ID_A, "rejected"))
        assert path == outbox / f"{STEM}_{ID_A}_BAD.TXT"
        assert path.read_text().startswith(f"{NAME}|BAD|")
    assert target.read_text() == "sender's own file\n"
