from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spool.errors import SpoolError
from spool.layout import SpoolLayout, State, StationLayout, state_name

FID = "20240401-093005-000007-00a1"


def test_paths_follow_the_layout(spool: SpoolLayout) -> None:
    st = spool.station("k1237")
    s = spool.root / "k1237"
    g = s / ".gateway"
    assert st.inbox("TC1") == s / "TC1" / "in"
    assert st.outbox("TC1") == s / "TC1" / "out"
    assert st.state_dir(State.WORK, "TC1") == g / "work" / "TC1"
    assert st.state_dir(State.DEFERRED, "TC1") == g / "deferred" / "TC1"
    assert st.state_dir(State.HELD, "TC1") == g / "held" / "TC1"
    assert st.state_dir(State.QUARANTINE, "TC1", "20240401") == g / "quarantine" / "20240401" / "TC1"
    assert st.state_dir(State.ARCHIVE, "TC1", "20240401") == g / "archive" / "20240401" / "TC1"
    assert st.state_path(State.WORK, "TC1", FID, "A.TXT") == g / "work" / "TC1" / f"{FID}.A.TXT"
    reason = g / "quarantine" / "20240401" / "TC1" / f"{FID}.reason.json"
    assert st.reason_path("TC1", FID, "20240401") == reason


@pytest.mark.parametrize("state", [State.QUARANTINE, State.ARCHIVE])
def test_dated_states_need_a_real_day(station: StationLayout, state: State) -> None:
    with pytest.raises(ValueError, match="needs a day"):
        station.state_dir(state, "TC1")
    for bad in ("2024041", "20240431", "2024-04-1", "../../x"):
        with pytest.raises(ValueError, match="not a day"):
            station.state_dir(state, "TC1", bad)


@pytest.mark.parametrize("state", [State.WORK, State.DEFERRED, State.HELD])
def test_undated_states_refuse_a_day(station: StationLayout, state: State) -> None:
    with pytest.raises(ValueError, match="not split by day"):
        station.state_dir(state, "TC1", "20240401")


@pytest.mark.parametrize("tc", ["", "..", ".gateway", "a/b", "x" * 33, "TC1\n", "TC 1", "ТС1"])
def test_bad_transfer_codes_never_become_paths(station: StationLayout, tc: str) -> None:
    with pytest.raises(ValueError, match="transfer code"):
        station.inbox(tc)
    with pytest.raises(ValueError, match="transfer code"):
        station.state_dir(State.WORK, tc)


@pytest.mark.parametrize("name", ["k123", "k12345", "K1237", "..", "k1237\n", "k١٢٣٧"])
def test_bad_stations_are_refused(spool: SpoolLayout, name: str) -> None:
    with pytest.raises(ValueError, match="station"):
        spool.station(name)


def test_state_name_keeps_a_name_that_fits() -> None:
    name = "x" * (255 - 28)
    assert state_name(FID, name) == (f"{FID}.{name}", False)


def test_state_name_truncates_multibyte_names_at_a_character_boundary(tmp_path: Path) -> None:
    name = "报送" * 40 + ".TXT"  # 244 bytes: with the id, 272
    for pad in range(3):  # every position of the cut inside a 3-byte character
        stored, truncated = state_name(FID, "a" * pad + name)
        raw = stored.encode()
        assert truncated
        assert 253 <= len(raw) <= 255
        assert stored.startswith(f"{FID}.{'a' * pad}报送")
        assert ("a" * pad + name).startswith(stored[28:])
        (tmp_path / stored).write_bytes(b"")  # the filesystem takes it


def test_state_name_truncates_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"\x80" * 250)  # bytes an old client may send, undecodable
    stored, truncated = state_name(FID, name)
    assert truncated
    assert 252 <= len(os.fsencode(stored)) <= 255
    assert os.fsencode(stored).startswith(f"{FID}.".encode() + b"\x80")
    (tmp_path / stored).write_bytes(b"")


def test_state_name_escapes_the_quarantine_reason_name() -> None:
    stored, truncated = state_name(FID, "reason.json")
    assert stored != f"{FID}.reason.json"
    assert truncated


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_state_name_refuses_what_is_not_a_file_name(name: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        state_name(FID, name)


def test_state_name_refuses_a_bad_id() -> None:
    with pytest.raises(ValueError, match="file id"):
        state_name("2024", "A.TXT")


def test_ensure_creates_everything_and_can_run_again(spool: SpoolLayout) -> None:
    st = spool.station("k6666")
    for _ in range(2):
        st.ensure(["TC1", "TC2"])
    for tc in ("TC1", "TC2"):
        assert st.inbox(tc).is_dir()
        assert st.outbox(tc).is_dir()
        for state in (State.WORK, State.DEFERRED, State.HELD):
            assert st.state_dir(state, tc).is_dir()
    for state in (State.QUARANTINE, State.ARCHIVE):
        assert st.state_root(state).is_dir()
    assert spool.stations() == ["k6666"]
    assert st.mailboxes() == ["TC1", "TC2"]


def test_mailboxes_and_stations_are_what_is_on_disk(spool: SpoolLayout, tmp_path: Path) -> None:
    st = spool.station("k1237")
    st.ensure(["TC2", "TC1"])
    (st.root / "not a code").mkdir()
    (st.root / "FILE").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (st.root / "LINKED").symlink_to(tmp_path / "elsewhere")
    (spool.root / "k99").mkdir()
    (spool.root / "k6666").write_text("")
    assert st.mailboxes() == ["LINKED", "TC1", "TC2"]
    assert spool.stations() == ["k1237"]
    assert SpoolLayout(tmp_path / "missing").stations() == []


def test_same_filesystem_passes_on_one_filesystem(station: StationLayout) -> None:
    station.state_dir(State.ARCHIVE, "TC41210000", "20240401").mkdir(parents=True)
    station.check_same_filesystem()


def _other_filesystem(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem: /dev/shm is missing or on the same one as tmp_path")
    other = shm / f"spool-test-{os.getpid()}-{tmp_path.name}"
    other.mkdir()
    return other


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    other = _other_filesystem(tmp_path)
    yield other
    shutil.rmtree(other)


@pytest.mark.parametrize(
    "where",
    [
        lambda st: st.state_root(State.DEFERRED),
        lambda st: st.state_dir(State.WORK, "TC41210000"),
        lambda st: st.state_root(State.ARCHIVE) / "20240401",
        lambda st: st.inbox("TC41220000"),
        lambda st: st.gateway,
    ],
    ids=["state root", "work/tc", "archive day", "inbox", ".gateway"],
)
def test_same_filesystem_names_the_directory_elsewhere(
    station: StationLayout, other_fs: Path, where: Callable[[StationLayout], Path]
) -> None:
    path = where(station)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(other_fs, target_is_directory=True)
    with pytest.raises(SpoolError, match="another filesystem") as caught:
        station.check_same_filesystem()
    assert str(path) in str(caught.value).split(" is on another")[0]
