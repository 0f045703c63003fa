"""SettleTracker with fake clock values: every rule of spec 2's writer contract, one at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.detect.settle import SettleTracker, Snapshot, is_candidate

K = ("k1237", "TC41210000", "CISP-41210000_D1001_V01_1_20241031_01_Q.TXT")
OTHER = ("k1237", "TC41210000", "CISP-41210000_D1001_V01_1_20241031_02_Q.TXT")
S = Snapshot(size=10, mtime_ns=1_000, ctime_ns=1_000, ino=42)
SETTLE = 2.0


def tracker() -> SettleTracker[tuple[str, str, str]]:
    return SettleTracker(SETTLE)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CISP-41210000_D1001_V01_1_20241031_01_Q.TXT", True),
        ("CISP-41210000_D3006_V01_1_20241031_01_Z.ZIP", True),
        ("tmp", True),
        ("x.tmpl", True),
        ("x.partial", True),
        (".CISP-41210000_D1001_V01_1_20241031_01_Q.TXT", False),
        (".hidden", False),
        ("CISP-41210000_D1001_V01_1_20241031_01_Q.TXT.tmp", False),
        ("CISP-41210000_D1001_V01_1_20241031_01_Q.TXT.part", False),
        ("x.tmp", False),
    ],
)
def test_temp_names_are_never_candidates(name: str, expected: bool) -> None:
    assert is_candidate(name) is expected


def test_renamed_in_is_ready_at_once_and_handed_out_once() -> None:
    t = tracker()
    t.renamed_in(K, 100.0)
    assert t.next_deadline() == 100.0
    assert t.ready() == [K]
    assert t.ready() == []
    assert len(t) == 0
    assert t.next_deadline() is None


def test_in_place_writer_is_not_ready_while_open_however_quiet() -> None:
    t = tracker()
    t.written(K, 0.0)
    assert t.due(1000.0) == []  # nothing to look at until the writer closes
    assert t.next_deadline() is None
    t.observed(K, S, 1.0)
    t.observed(K, S, 1000.0)
    assert t.ready() == []


def test_closed_then_quiet_for_settle_seconds_is_ready() -> None:
    t = tracker()
    t.written(K, 0.0)
    t.closed(K, 1.0)
    assert t.due(1.0) == [K]  # stat it now: the quiet period starts at the first stat seen
    t.observed(K, S, 1.0)
    assert t.due(2.99) == []
    assert t.next_deadline() == 3.0
    t.observed(K, S, 2.99)
    assert t.ready() == []
    assert t.due(3.0) == [K]
    t.observed(K, S, 3.0)
    assert t.ready() == [K]
    assert len(t) == 0


def test_quiet_period_counts_from_first_sight_not_from_the_files_mtime() -> None:
    t = tracker()
    ancient = Snapshot(size=10, mtime_ns=0, ctime_ns=0, ino=42)  # cp -p keeps a 1970 mtime
    t.closed(K, 500.0)
    t.observed(K, ancient, 500.0)
    t.observed(K, ancient, 501.0)
    assert t.ready() == []
    t.observed(K, ancient, 502.0)
    assert t.ready() == [K]


@pytest.mark.parametrize("field", ["size", "mtime_ns", "ctime_ns", "ino"])
def test_any_change_of_the_stat_restarts_the_quiet_period(field: str) -> None:
    t = tracker()
    t.closed(K, 0.0)
    t.observed(K, S, 0.0)
    changed = dataclasses.replace(S, **{field: getattr(S, field) + 1})
    t.observed(K, changed, 1.5)
    t.observed(K, changed, 3.0)  # 3.0 s after the first stat, only 1.5 s after the change
    assert t.ready() == []
    assert t.next_deadline() == 3.5
    t.observed(K, changed, 3.5)
    assert t.ready() == [K]


def test_a_write_after_close_needs_another_close_and_quiet_period() -> None:
    t = tracker()
    t.closed(K, 0.0)
    t.observed(K, S, 0.0)
    t.written(K, 1.0)
    t.observed(K, S, 2.5)
    t.observed(K, S, 10.0)
    assert t.ready() == []
    t.closed(K, 11.0)
    t.observed(K, S, 11.0)  # same stat as before: still counted from its first sight after the close
    t.observed(K, S, 12.0)
    assert t.ready() == []
    t.observed(K, S, 13.0)
    assert t.ready() == [K]


def test_scan_only_entry_takes_unchanged_as_evidence() -> None:
    t = tracker()
    t.observed(K, S, 10.0)
    assert t.due(10.0) == []
    assert t.next_deadline() == 12.0
    t.observed(K, S, 11.99)
    assert t.ready() == []
    assert t.due(12.0) == [K]
    t.observed(K, S, 12.0)
    assert t.ready() == [K]


def test_scan_only_entry_written_to_must_then_be_closed() -> None:
    t = tracker()
    t.observed(K, S, 0.0)
    t.written(K, 1.0)  # events flow for it after all: now a close is expected
    t.observed(K, S, 5.0)
    t.observed(K, S, 50.0)
    assert t.ready() == []
    t.closed(K, 51.0)
    t.observed(K, S, 51.0)
    t.observed(K, S, 53.0)
    assert t.ready() == [K]


def test_renamed_in_then_written_becomes_in_place() -> None:
    t = tracker()
    t.renamed_in(K, 0.0)
    t.written(K, 0.1)
    assert t.ready() == []
    t.closed(K, 1.0)
    t.observed(K, S, 1.0)
    assert t.ready() == []
    t.observed(K, S, 3.0)
    assert t.ready() == [K]


def test_renamed_in_then_closed_after_a_write_open_becomes_in_place() -> None:
    t = tracker()
    t.renamed_in(K, 0.0)
    t.closed(K, 0.5)  # opened for writing again, even if the MODIFY was coalesced away
    assert t.ready() == []
    assert t.due(0.5) == [K]


def test_renamed_in_whose_stat_changes_between_scans_becomes_in_place() -> None:
    t = tracker()
    t.renamed_in(K, 0.0)
    t.observed(K, S, 0.0)
    t.observed(K, dataclasses.replace(S, size=11), 1.0)
    assert t.ready() == []
    t.observed(K, dataclasses.replace(S, size=11), 3.0)
    assert t.ready() == [K]


def test_a_new_rename_replaces_an_in_place_writer() -> None:
    t = tracker()
    t.written(K, 0.0)
    t.renamed_in(K, 1.0)
    assert t.ready() == [K]


def test_gone_drops_the_entry() -> None:
    t = tracker()
    t.written(K, 0.0)
    t.closed(OTHER, 0.0)
    t.gone(K)
    t.gone(OTHER)
    t.gone(("never", "seen", "x"))
    assert len(t) == 0
    assert t.keys() == []
    assert t.due(100.0) == []
    assert t.ready() == []
    assert t.next_deadline() is None


def test_not_listed_by_a_scan_drops_only_what_the_scan_is_newer_than() -> None:
    t = tracker()
    t.observed(K, S, 1.0)  # scan-only, and the next scan (started at 4) no longer finds it
    t.written(("a", "b", "writer"), 2.0)
    t.renamed_in(OTHER, 5.0)  # arrived while that scan was listing: its listing is older
    tracked = t.keys()  # a copy: not_listed() drops entries
    for key in tracked:
        t.not_listed(key, 4.0)
    assert t.keys() == [OTHER]
    assert t.ready() == [OTHER]


def test_events_lost_falls_back_to_scan_evidence() -> None:
    t = tracker()
    t.written(K, 0.0)  # its close was in the overflow
    t.renamed_in(OTHER, 0.0)  # a write after the rename may have been lost too
    t.events_lost(5.0)
    assert sorted(t.due(5.0)) == sorted([K, OTHER])
    assert t.ready() == []
    t.observed(K, S, 5.0)
    t.observed(OTHER, S, 5.0)
    t.observed(K, S, 7.0)
    t.observed(OTHER, S, 7.0)
    assert sorted(t.ready()) == sorted([K, OTHER])


def test_next_deadline_is_the_earliest_over_entries() -> None:
    t = tracker()
    t.observed(K, S, 10.0)
    t.observed(OTHER, S, 9.0)
    t.written(("a", "b", "writer"), 0.0)
    assert t.next_deadline() == 11.0
    assert t.keys() == [K, OTHER, ("a", "b", "writer")]


def test_zero_settle_seconds_needs_one_stat_after_the_close() -> None:
    t: SettleTracker[str] = SettleTracker(0)
    t.written("x", 0.0)
    t.closed("x", 1.0)
    assert t.ready() == []
    t.observed("x", S, 1.0)
    assert t.ready() == ["x"]


def test_negative_settle_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="settle_seconds"):
        SettleTracker(-1)


def test_snapshot_from_stat(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    result = path.stat()
    assert Snapshot.from_stat(result) == Snapshot(5, result.st_mtime_ns, result.st_ctime_ns, result.st_ino)


# A model check: random event/scan sequences against the rules stated independently of the code.
_ops = st.lists(
    st.tuples(
        st.sampled_from(["renamed_in", "written", "closed", "observed", "gone", "lost", "ready"]),
        st.floats(min_value=0.0, max_value=3.0),  # time step
        st.integers(min_value=0, max_value=2),  # which stat a scan sees
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(_ops)
def test_never_ready_unless_the_rules_allow_it(ops: list[tuple[str, float, int]]) -> None:
    t: SettleTracker[str] = SettleTracker(SETTLE)
    now = 0.0
    # the reference model: what is known about the one key "x"
    present = False
    renamed = False
    open_writer = False
    last_change = 0.0  # last event or stat change
    stats: list[tuple[float, int]] = []  # stats seen since the last change
    for op, step, which in ops:
        now += step
        if op == "renamed_in":
            t.renamed_in("x", now)
            present, renamed, open_writer, last_change, stats = True, True, False, now, []
        elif op == "written":
            t.written("x", now)
            present, renamed, open_writer, last_change, stats = True, False, True, now, []
        elif op == "closed":
            t.closed("x", now)
            present, renamed, open_writer, last_change, stats = True, False, False, now, []
        elif op == "lost":
            t.events_lost(now)
            renamed, open_writer, last_change, stats = False, False, now, []
        elif op == "gone":
            t.gone("x")
            present = False
        elif op == "observed":
            snap = Snapshot(which, 0, 0, 1)
            t.observed("x", snap, now)
            if not present:
                present, renamed, open_writer, last_change, stats = True, False, False, now, []
            if stats and stats[-1][1] != which:
                renamed = False
                stats = []
            stats.append((now, which))
        else:
            handed = t.ready()
            quiet = bool(stats) and stats[-1][0] - stats[0][0] >= SETTLE
            allowed = present and (renamed or (not open_writer and quiet and stats[0][0] >= last_change))
            assert handed == (["x"] if allowed else [])
            if handed:
                present = False
