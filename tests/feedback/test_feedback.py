"""The feedback path on real directories: the core's OK/BAD files into the right out/, or quarantine."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from codes.registry import TransferCode
from gateway.config import load_config
from gateway.pipeline import feedback
from gateway.pipeline.feedback import (
    FEEDBACK_DIR,
    FeedbackResult,
    deliver_all,
    deliver_feedback,
    feedback_sources,
    parse_feedback_name,
    scan_feedback_dir,
)
from gateway.pipeline.receipts import Receipt, receipt_lock, write_receipt
from gateway.store import history
from gateway.store.history import HistoryEvent, HistoryWriter
from spool import fsio
from spool.layout import SpoolLayout, State

REPO = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 16, 5, 0, tzinfo=ZONE)
DAY = "20260310"
STEM = "CISP-41210000_D1001_V01_1_20260309_01_Q"
OK_NAME = f"{STEM}_OK.TXT"
BAD_NAME = f"{STEM}_BAD.TXT"
BODY = b"CISP-41210000_D1001_V01_1_20260309_01_Q.TXT|OK|12|0|20260310160000\n"

REGISTRY = {
    "TC41210000": TransferCode(institution="41210000", stations=("k1237", "k6666")),
    "TC41220000": TransferCode(institution="41220000", stations=("k1237",)),
    "TC41230000A": TransferCode(institution="41230000", stations=("k1237",)),
    "TC41230000B": TransferCode(institution="41230000", stations=("k1237",)),
}


@pytest.fixture
def layout(tmp_path: Path) -> SpoolLayout:
    layout = SpoolLayout(tmp_path / "spool")
    for station in ("k1237", "k6666"):
        layout.station(station).ensure([tc for tc, c in REGISTRY.items() if station in c.stations])
    return layout


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "core-feedback"
    path.mkdir()
    return path


def drop(folder: Path, name: str, data: bytes = BODY) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def deliver(
    path: Path, layout: SpoolLayout, stations: Sequence[str] = ("k1237",), **kw: Any
) -> FeedbackResult:
    return deliver_feedback(path, stations=stations, registry=REGISTRY, layout=layout, now=NOW, **kw)


def outbox_files(layout: SpoolLayout) -> dict[str, bytes]:
    found = {}
    for station in ("k1237", "k6666"):
        st = layout.station(station)
        for tc in st.mailboxes():
            for p in st.outbox(tc).iterdir():
                found[f"{station}/{tc}/{p.name}"] = p.read_bytes()
    return found


def quarantined(layout: SpoolLayout, station: str = "k1237") -> list[Path]:
    folder = layout.station(station).state_root(State.QUARANTINE) / DAY / FEEDBACK_DIR
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --- names -------------------------------------------------------------------------------------------


def test_feedback_names_parse_to_their_report() -> None:
    ok = parse_feedback_name(OK_NAME)
    assert ok is not None and ok.ok and ok.stem == STEM
    assert ok.report.org == "41210000" and ok.report.table == "D1001" and ok.report.batch == 1
    bad = parse_feedback_name(BAD_NAME)
    assert bad is not None and not bad.ok
    for name in (
        f"{STEM}.TXT",
        f"{STEM}_OK.txt",
        f"{STEM}_ok.TXT",
        f"{STEM}_OK.ZIP",
        f"{STEM}_FAIL.TXT",
        "CISP-4121_D1001_OK.TXT",
        "_OK.TXT",
        "readme.txt",
    ):
        assert parse_feedback_name(name) is None, name


# --- delivery ----------------------------------------------------------------------------------------


def test_ok_feedback_goes_to_the_out_of_the_institutions_code_and_leaves_the_core(
    layout: SpoolLayout, inbox: Path
) -> None:
    src = drop(inbox, OK_NAME)
    seen: list[HistoryEvent] = []

    def record(events: Sequence[HistoryEvent]) -> None:
        # Durable copy first, history next, the source removed last.
        assert (layout.station("k1237").outbox("TC41210000") / OK_NAME).read_bytes() == BODY
        assert src.exists()
        seen.extend(events)

    result = deliver(src, layout, record=record)
    assert result.outcome == "delivered"
    assert not src.exists()
    assert outbox_files(layout) == {f"k1237/TC41210000/{OK_NAME}": BODY}
    target = layout.station("k1237").outbox("TC41210000") / OK_NAME
    assert stat.S_IMODE(target.stat().st_mode) & 0o644 == 0o644
    [delivery] = result.deliveries
    assert (delivery.station, delivery.transfer_code, delivery.action) == ("k1237", "TC41210000", "written")
    [ev] = seen
    assert ev.event == "feedback"
    assert (ev.station, ev.transfer_code, ev.institution, ev.table, ev.date, ev.batch, ev.mode) == (
        "k1237",
        "TC41210000",
        "41210000",
        "D1001",
        "20260309",
        "01",
        "Q",
    )
    assert ev.name == OK_NAME and ev.size == len(BODY) and ev.file_id == result.file_id
    assert ev.detail is not None and ev.detail["verdict"] == "OK" and ev.detail["action"] == "written"
    assert "TC41210000" in ev.message and " / " in ev.message
    assert list(inbox.iterdir()) == []


def test_bad_feedback_is_delivered_the_same_way_and_says_what_to_do(layout: SpoolLayout, inbox: Path) -> None:
    result = deliver(drop(inbox, BAD_NAME, b"bad\n"), layout, stations=["k6666"])
    assert result.outcome == "delivered"
    assert outbox_files(layout) == {f"k6666/TC41210000/{BAD_NAME}": b"bad\n"}
    [ev] = result.events()
    assert ev.detail is not None and ev.detail["verdict"] == "BAD"
    assert "next batch number" in ev.message


def test_an_unknown_institution_is_quarantined_with_a_reason(layout: SpoolLayout, inbox: Path) -> None:
    name = "CISP-41299999_D1001_V01_1_20260309_01_Q_OK.TXT"
    src = drop(inbox, name)
    recorded: list[HistoryEvent] = []
    result = deliver(src, layout, record=recorded.extend)
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_NO_MAILBOX"
    assert not src.exists()
    assert outbox_files(layout) == {}
    data, reason = quarantined(layout)
    assert data.name == f"{result.file_id}.{name}" and data.read_bytes() == BODY
    assert result.quarantined == data
    info = json.loads(reason.read_text(encoding="utf-8"))
    assert info["reason"] == "FEEDBACK_NO_MAILBOX" and info["institution"] == "41299999"
    assert info["name"] == name and info["stations"] == ["k1237"]
    [ev] = recorded
    assert ev.event == "feedback" and ev.station == "k1237" and ev.transfer_code is None
    assert ev.institution == "41299999"
    assert ev.detail is not None and ev.detail["reason"] == "FEEDBACK_NO_MAILBOX"
    assert "41299999" in ev.message


@pytest.mark.parametrize(
    "name",
    [
        "readme.txt",
        f"{STEM}.TXT",  # a report, not a feedback
        f"{STEM}_OK.txt",
        "CISP-41210000_D1001_V01_1_20260309_1_Q_OK.TXT",  # batch without its leading zero
    ],
)
def test_a_name_that_is_not_a_feedback_is_quarantined(layout: SpoolLayout, inbox: Path, name: str) -> None:
    result = deliver(drop(inbox, name), layout)
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_NAME_INVALID"
    assert outbox_files(layout) == {}
    assert [p.name for p in quarantined(layout)] == sorted(
        [f"{result.file_id}.{name}", f"{result.file_id}.reason.json"]
    )
    [ev] = result.events()
    assert ev.institution is None and ev.detail is not None and ev.detail["verdict"] is None


def test_an_undecodable_name_is_quarantined_with_a_readable_reason(layout: SpoolLayout, inbox: Path) -> None:
    raw = os.fsencode(inbox) + b"/caf\xe9_OK.TXT"
    with open(raw, "wb") as f:  # noqa: PTH123 - a bytes path
        f.write(BODY)
    [src] = scan_feedback_dir(inbox)
    result = deliver(src, layout)
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_NAME_INVALID"
    reason = next(p for p in quarantined(layout) if p.name.endswith(".reason.json"))
    assert json.loads(reason.read_bytes())["name"] == src.name
    [ev] = result.events()
    assert "caf\\udce9" in ev.message and "\udce9" not in ev.message  # shown escaped
    line = replace(ev, ts=NOW).to_json_line()  # the history line can hold it
    assert json.loads(line)["name"] == src.name


def test_a_code_of_the_institution_on_another_station_does_not_count(
    layout: SpoolLayout, inbox: Path
) -> None:
    """TC41220000 serves k1237 only: feedback from k6666's route has nowhere to go."""
    name = "CISP-41220000_D1001_V01_1_20260309_01_Q_OK.TXT"
    result = deliver(drop(inbox, name), layout, stations=["k6666"])
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_NO_MAILBOX"
    assert result.quarantine_station == "k6666"
    assert len(quarantined(layout, "k6666")) == 2


def test_codes_another_route_carries_are_not_candidates(layout: SpoolLayout, inbox: Path) -> None:
    registry = dict(REGISTRY, TC41210000=REGISTRY["TC41210000"].model_copy(update={"route": "other"}))

    def route_of(station: str, code: TransferCode) -> str:
        return code.route or "core-test"

    src = drop(inbox, OK_NAME)
    result = deliver_feedback(
        src,
        stations=["k1237"],
        registry=registry,
        layout=layout,
        now=NOW,
        route="core-test",
        route_of=route_of,
    )
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_NO_MAILBOX"
    src = drop(inbox, OK_NAME)
    result = deliver_feedback(
        src, stations=["k1237"], registry=registry, layout=layout, now=NOW, route="other", route_of=route_of
    )
    assert result.outcome == "delivered"
    with pytest.raises(ValueError, match="together"):
        deliver_feedback(src, stations=["k1237"], registry=registry, layout=layout, now=NOW, route="x")


def test_several_codes_of_one_institution_each_get_a_copy(layout: SpoolLayout, inbox: Path) -> None:
    name = "CISP-41230000_D1001_V01_1_20260309_01_Q_OK.TXT"
    result = deliver(drop(inbox, name), layout)
    assert result.outcome == "delivered"
    assert outbox_files(layout) == {f"k1237/TC41230000A/{name}": BODY, f"k1237/TC41230000B/{name}": BODY}
    events = result.events()
    assert [e.transfer_code for e in events] == ["TC41230000A", "TC41230000B"]
    assert events[0].detail is not None and events[0].detail["also_delivered_to"] == ["k1237/TC41230000B"]
    assert "2" in events[0].message


def test_the_sender_picks_one_of_several_codes(layout: SpoolLayout, inbox: Path) -> None:
    name = "CISP-41230000_D1001_V01_1_20260309_01_Q_OK.TXT"
    asked: list[str] = []

    def sender(stem: str) -> tuple[str, str] | None:
        asked.append(stem)
        return ("k1237", "TC41230000B")

    result = deliver(drop(inbox, name), layout, sender=sender)
    assert asked == ["CISP-41230000_D1001_V01_1_20260309_01_Q"]
    assert [(d.transfer_code, d.action) for d in result.deliveries] == [("TC41230000B", "written")]
    assert outbox_files(layout) == {f"k1237/TC41230000B/{name}": BODY}
    # A sender answer that is no candidate (or none) changes nothing.
    result = deliver(drop(inbox, name), layout, sender=lambda stem: ("k1237", "TC41210000"))
    assert len(result.deliveries) == 2


# --- idempotence and crashes -------------------------------------------------------------------------


def test_killed_after_the_copy_the_next_run_finds_it_there(layout: SpoolLayout, inbox: Path) -> None:
    src = drop(inbox, OK_NAME)

    def crash(events: Sequence[HistoryEvent]) -> None:
        raise KeyboardInterrupt  # the process dies between the copy and the source removal

    with pytest.raises(KeyboardInterrupt):
        deliver(src, layout, record=crash)
    target = layout.station("k1237").outbox("TC41210000") / OK_NAME
    assert src.exists() and target.read_bytes() == BODY
    inode = target.stat().st_ino
    result = deliver(src, layout)
    assert result.outcome == "delivered"
    assert [d.action for d in result.deliveries] == ["present"]
    assert target.stat().st_ino == inode  # not written again
    assert not src.exists()
    assert outbox_files(layout) == {f"k1237/TC41210000/{OK_NAME}": BODY}
    assert [p.name for p in target.parent.iterdir()] == [OK_NAME]  # no temp left behind


def test_sigkill_after_the_copy_then_a_rerun(layout: SpoolLayout, inbox: Path, tmp_path: Path) -> None:
    """A real SIGKILL of a real process, at the moment the history would be written."""
    src = drop(inbox, OK_NAME)
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import datetime
        from zoneinfo import ZoneInfo
        from codes.registry import TransferCode
        from gateway.pipeline.feedback import deliver_feedback
        from spool.layout import SpoolLayout
        deliver_feedback(
            __import__("pathlib").Path({str(src)!r}),
            stations=["k1237"],
            registry={{"TC41210000": TransferCode(institution="41210000", stations=("k1237",))}},
            layout=SpoolLayout(__import__("pathlib").Path({str(layout.root)!r})),
            now=datetime.now(ZoneInfo("Asia/Shanghai")),
            record=lambda events: os.kill(os.getpid(), signal.SIGKILL),
        )
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False
    )
    assert proc.returncode == -9
    target = layout.station("k1237").outbox("TC41210000") / OK_NAME
    assert src.exists() and target.read_bytes() == BODY
    result = deliver(src, layout)
    assert [d.action for d in result.deliveries] == ["present"]
    assert not src.exists()


def test_killed_after_the_quarantine_reason_the_rerun_quarantines_once_more(
    layout: SpoolLayout, inbox: Path
) -> None:
    src = drop(inbox, "readme.txt")

    def crash(events: Sequence[HistoryEvent]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deliver(src, layout, record=crash)
    assert src.exists()
    result = deliver(src, layout)
    assert result.outcome == "quarantined" and not src.exists()
    assert (result.quarantined or Path()).read_bytes() == BODY


def test_a_source_that_changes_during_the_copy_is_left_for_the_next_scan(
    layout: SpoolLayout, inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = drop(inbox, OK_NAME)
    real = feedback._copy_fd

    def copy_then_grow(fd_in: int, fd_out: int) -> tuple[int, str]:
        with src.open("ab") as f:
            f.write(b"more\n")
        return real(fd_in, fd_out)

    monkeypatch.setattr(feedback, "_copy_fd", copy_then_grow)
    result = deliver(src, layout)
    assert result.outcome == "skipped" and result.events() == [] and result.file_id is None
    assert src.exists()
    assert list((layout.station("k1237").outbox("TC41210000")).iterdir()) == []
    monkeypatch.setattr(feedback, "_copy_fd", real)
    assert deliver(src, layout).outcome == "delivered"
    assert outbox_files(layout) == {f"k1237/TC41210000/{OK_NAME}": BODY + b"more\n"}


def test_a_vanished_or_special_source_is_skipped(layout: SpoolLayout, inbox: Path) -> None:
    assert deliver(inbox / OK_NAME, layout).outcome == "skipped"
    os.mkfifo(inbox / BAD_NAME)
    result = deliver(inbox / BAD_NAME, layout)
    assert result.outcome == "skipped" and (inbox / BAD_NAME).exists()


# --- what is already in out/ -------------------------------------------------------------------------


def test_the_gateways_own_receipt_is_replaced_and_the_event_says_so(layout: SpoolLayout, inbox: Path) -> None:
    outbox = layout.station("k1237").outbox("TC41210000")
    receipt = Receipt(f"{STEM}.TXT", True, 12, [], 0, NOW, "20260310-160000-000000-8000", "forwarded")
    own = write_receipt(outbox, receipt)
    assert own.name == OK_NAME
    before = own.read_bytes()
    result = deliver(drop(inbox, OK_NAME), layout)
    [d] = result.deliveries
    assert d.action == "replaced" and d.replaced_own_receipt is True
    assert own.read_bytes() == BODY
    [ev] = result.events()
    assert ev.detail is not None and ev.detail["replaced"] == "gateway_receipt"
    assert ev.detail["replaced_sha256"] == __import__("hashlib").sha256(before).hexdigest()
    assert "replacing the gateway's own receipt" in ev.message


def test_feedback_waits_while_a_receipt_of_its_stem_is_being_written(
    layout: SpoolLayout, inbox: Path
) -> None:
    """The receipt writer checks "not the core's feedback" and then replaces: feedback landing in
    between would be overwritten. Both take the stem's lock, for the OK and the BAD name alike."""
    outbox = layout.station("k1237").outbox("TC41210000")
    done: list[FeedbackResult] = []
    with receipt_lock(outbox, BAD_NAME):  # as write_receipt holds it for a BAD receipt of the stem
        worker = threading.Thread(target=lambda: done.append(deliver(drop(inbox, OK_NAME), layout)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not (outbox / OK_NAME).exists()
    worker.join(10)
    assert [d.action for d in done[0].deliveries] == ["written"]
    assert (outbox / OK_NAME).read_bytes() == BODY


def test_an_earlier_other_file_is_replaced_not_silently(layout: SpoolLayout, inbox: Path) -> None:
    outbox = layout.station("k1237").outbox("TC41210000")
    (outbox / OK_NAME).write_bytes(b"an earlier feedback\n")
    result = deliver(drop(inbox, OK_NAME), layout)
    [d] = result.deliveries
    assert d.action == "replaced" and d.replaced_own_receipt is False
    assert (outbox / OK_NAME).read_bytes() == BODY
    [ev] = result.events()
    assert ev.detail is not None and ev.detail["replaced"] == "other"


def test_a_bad_receipt_stays_beside_an_ok_feedback(layout: SpoolLayout, inbox: Path) -> None:
    outbox = layout.station("k1237").outbox("TC41210000")
    (outbox / BAD_NAME).write_bytes(b"earlier BAD\n")
    deliver(drop(inbox, OK_NAME), layout)
    assert (outbox / BAD_NAME).read_bytes() == b"earlier BAD\n"
    assert (outbox / OK_NAME).read_bytes() == BODY


def test_a_symlink_in_out_is_replaced_never_followed(
    layout: SpoolLayout, inbox: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me\n")
    outbox = layout.station("k1237").outbox("TC41210000")
    (outbox / OK_NAME).symlink_to(victim)
    result = deliver(drop(inbox, OK_NAME), layout)
    assert result.deliveries[0].action == "replaced"
    assert not (outbox / OK_NAME).is_symlink() and (outbox / OK_NAME).read_bytes() == BODY
    assert victim.read_bytes() == b"keep me\n"


def test_a_directory_in_the_way_quarantines_the_feedback(layout: SpoolLayout, inbox: Path) -> None:
    outbox = layout.station("k1237").outbox("TC41210000")
    (outbox / OK_NAME).mkdir()
    result = deliver(drop(inbox, OK_NAME), layout)
    assert result.outcome == "quarantined" and result.reason == "FEEDBACK_OUTBOX_BLOCKED"
    assert (outbox / OK_NAME).is_dir()
    assert result.events()[0].detail is not None


def test_a_missing_out_dir_is_created(layout: SpoolLayout, inbox: Path) -> None:
    outbox = layout.station("k1237").outbox("TC41210000")
    outbox.rmdir()
    assert deliver(drop(inbox, OK_NAME), layout).outcome == "delivered"
    assert (outbox / OK_NAME).read_bytes() == BODY


# --- across filesystems ------------------------------------------------------------------------------


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A feedback directory on another filesystem (tmpfs), as a core's mount would be."""
    if not Path("/dev/shm").is_dir() or Path("/dev/shm").stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="fdep-feedback-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_feedback_from_another_filesystem_is_delivered_and_quarantined(
    layout: SpoolLayout, other_fs: Path
) -> None:
    ok = deliver(drop(other_fs, OK_NAME), layout)
    assert ok.outcome == "delivered" and not (other_fs / OK_NAME).exists()
    bad = deliver(drop(other_fs, "stray.txt", b"stray\n"), layout)
    assert bad.outcome == "quarantined" and not (other_fs / "stray.txt").exists()
    assert (bad.quarantined or Path()).read_bytes() == b"stray\n"
    assert [p.name for p in (bad.quarantined or Path()).parent.iterdir() if p.name.startswith(".")] == []


def test_the_quarantine_copy_path_on_exdev(
    layout: SpoolLayout, inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fsio.rename_noreplace

    def exdev_from_inbox(src: Path, dst: Path) -> None:
        if src.parent == inbox:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(feedback, "rename_noreplace", exdev_from_inbox)
    result = deliver(drop(inbox, "stray.txt", b"stray\n"), layout)
    assert result.outcome == "quarantined" and not (inbox / "stray.txt").exists()
    assert (result.quarantined or Path()).read_bytes() == b"stray\n"


# --- scanning ----------------------------------------------------------------------------------------


def test_scan_takes_regular_files_only_and_skips_temp_names(inbox: Path) -> None:
    for name in (OK_NAME, BAD_NAME, "b.txt", ".hidden", "x.tmp", "y.part", f".{OK_NAME}.1a2b3c4d.tmp"):
        drop(inbox, name)
    (inbox / "sub").mkdir()
    (inbox / "link_OK.TXT").symlink_to(inbox / OK_NAME)
    os.mkfifo(inbox / "fifo_OK.TXT")
    assert [p.name for p in scan_feedback_dir(inbox)] == sorted([OK_NAME, BAD_NAME, "b.txt"])
    assert scan_feedback_dir(inbox / "missing") == []


def test_scan_waits_for_files_still_being_written(inbox: Path) -> None:
    path = drop(inbox, OK_NAME)
    now = time.time()
    assert scan_feedback_dir(inbox, quiet_seconds=5, now=now) == []
    assert scan_feedback_dir(inbox, quiet_seconds=5, now=now + 10) == [path]
    old = now - 100
    os.utime(path, (old, old))  # an old mtime does not help: the ctime just changed
    assert scan_feedback_dir(inbox, quiet_seconds=5, now=now) == []


# --- with a real config and history ------------------------------------------------------------------


def test_config_routes_and_a_whole_directory_end_to_end(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    fb_test, fb_prod = tmp_path / "fb" / "k1237", tmp_path / "fb" / "k6666"
    config = load_config(
        write_config(
            routes={
                "core-test": {"type": "directory", "path": str(tmp_path / "core1"), "feedback": str(fb_test)},
                "core-prod": {"type": "directory", "path": str(tmp_path / "core2"), "feedback": str(fb_prod)},
            }
        )
    )
    sources = feedback_sources(config)
    assert [(s.route, s.path, s.stations) for s in sources] == [
        ("core-prod", fb_prod, ("k6666",)),
        ("core-test", fb_test, ("k1237",)),
    ]
    layout = SpoolLayout(config.spool_root)
    for station in config.stations:
        layout.station(station).ensure(
            [tc for tc, c in config.transfer_codes.items() if station in c.stations]
        )
    fb_test.mkdir(parents=True)
    drop(fb_test, OK_NAME)
    drop(fb_test, "CISP-41220000_D1001_V01_1_20260309_01_Q_BAD.TXT", b"bad\n")
    drop(fb_test, "CISP-41299999_D1001_V01_1_20260309_01_Q_OK.TXT")
    drop(fb_test, ".partial_OK.TXT.tmp")
    writer = HistoryWriter(config.history.dir, ZONE, now=lambda: NOW)
    try:
        results = deliver_all(
            sources[1], config=config, layout=layout, now=lambda: NOW, record=writer.append, quiet_seconds=0
        )
    finally:
        writer.close()
    assert [r.outcome for r in results] == ["delivered", "delivered", "quarantined"]
    assert [p.name for p in fb_test.iterdir()] == [".partial_OK.TXT.tmp"]
    st = layout.station("k1237")
    assert (st.outbox("TC41210000") / OK_NAME).read_bytes() == BODY
    assert (
        st.outbox("TC41220000") / "CISP-41220000_D1001_V01_1_20260309_01_Q_BAD.TXT"
    ).read_bytes() == b"bad\n"
    lines = [
        json.loads(line)
        for line in history.daily_path(config.history.dir, NOW.date()).read_text().splitlines()
    ]
    assert [(e["event"], e["transfer_code"], e["institution"]) for e in lines] == [
        ("feedback", "TC41210000", "41210000"),
        ("feedback", "TC41220000", "41220000"),
        ("feedback", None, "41299999"),
    ]
    assert all(e["ts"].startswith("2026-03-10T16:05:00") for e in lines)
    # Nothing left: a second pass has nothing to do.
    assert deliver_all(sources[1], config=config, layout=layout, now=lambda: NOW, quiet_seconds=0) == []


def test_one_failing_file_does_not_stop_the_others(
    tmp_path: Path, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fb = tmp_path / "fb"
    config = load_config(
        write_config(
            routes={
                "core-test": {"type": "directory", "path": str(tmp_path / "c1"), "feedback": str(fb)},
                "core-prod": {"type": "directory", "path": str(tmp_path / "c2")},
            }
        )
    )
    layout = SpoolLayout(config.spool_root)
    layout.station("k1237").ensure(["TC41210000", "TC41220000"])
    fb.mkdir()
    first = drop(fb, OK_NAME)
    second = drop(fb, "CISP-41220000_D1001_V01_1_20260309_01_Q_OK.TXT")
    real = feedback._deliver_one

    def failing(fd: int, before: os.stat_result, size: int, sha: str, st: str, tc: str, final: Path) -> Any:
        if tc == "TC41210000":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, before, size, sha, st, tc, final)

    monkeypatch.setattr(feedback, "_deliver_one", failing)
    [source] = feedback_sources(config)
    results = deliver_all(source, config=config, layout=layout, now=lambda: NOW, quiet_seconds=0)
    assert [r.name for r in results] == [second.name]
    assert first.exists() and not second.exists()
