"""Retention: the daily sweep of the terminal state trees and of the sync history.

``archive/`` and ``quarantine/`` grow forever, so they are split by day (``.gateway/<state>/<yyyymmdd>/``)
and a whole day folder goes once it is older than that state's retention; the history's daily
``history-YYYYMMDD.jsonl`` files go the same way after ``history.retention_days``.

What the sweep never does:

- touch the current day (nor a day after it: a clock set back must not cost data);
- touch anything that is not a day folder named ``yyyymmdd`` (a real calendar date) or a history file
  named ``history-YYYYMMDD.jsonl``: other names are an operator's and are left alone, symlinks are never
  followed (a symlink named like a day is left alone too);
- delete ledger rows. The ledger keeps every file's row and every report key's accepted batch forever,
  because the duplicate rule (same name and content again) and the batch rule (a batch lower than or
  equal to the accepted one is stale, spec 7) must hold however old the first file is; the archived
  copy of a file is evidence for operators, not what those rules read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import structlog

from gateway.store.history import daily_files
from spool.fsio import fsync_dir
from spool.layout import SpoolLayout, State, check_day
from spool.tree import remove_tree

log = structlog.get_logger("gateway.retention")

SWEEP_AT = time(0, 30)
"""When the daemon runs the sweep: after midnight, once the new day's folders are the current ones."""


@dataclass(slots=True)
class SweepReport:
    """What one sweep removed; ``errors`` are the day folders or files it could not remove (kept)."""

    archive_days: int = 0  # day folders removed
    archive_files: int = 0  # entries (files, and whatever else was quarantined) inside them
    quarantine_days: int = 0
    quarantine_files: int = 0
    history_files: int = 0
    bytes: int = 0  # st_size of the removed entries (apparent size)
    removed: list[Path] = field(default_factory=list)  # the day folders and history files removed
    errors: list[str] = field(default_factory=list)

    @property
    def nothing_done(self) -> bool:
        return not self.removed and not self.errors

    def as_log(self) -> dict[str, int]:
        return {
            "archive_days": self.archive_days,
            "archive_files": self.archive_files,
            "quarantine_days": self.quarantine_days,
            "quarantine_files": self.quarantine_files,
            "history_files": self.history_files,
            "bytes": self.bytes,
            "errors": len(self.errors),
        }


def sweep(
    layout: SpoolLayout,
    stations: Iterable[str],
    *,
    today: date,
    archive_days: int,
    quarantine_days: int,
    history_dir: Path,
    history_days: int,
) -> SweepReport:
    """Remove the day folders and history files older than their retention; blocking (run it in a thread).

    A day is removed when ``today - day > N days`` for a retention of N: with N = 90 a folder is kept for
    90 full days after its own, so ``today`` and the N days before it stay. ``today`` is the gateway's
    calendar day (its zone). Idempotent: a sweep killed half-way leaves a partly emptied day folder under
    its own name, and the next sweep finishes it. Each removal is made durable by fsyncing the directory
    that held it. Nothing here raises for one folder that cannot be removed: it is logged, listed in
    ``errors``, and the sweep goes on. The ledger is never touched (see the module docstring).
    """
    for what, days in (
        ("archive_days", archive_days),
        ("quarantine_days", quarantine_days),
        ("history_days", history_days),
    ):
        if days < 1:
            raise ValueError(f"{what} must be at least 1 (the current day is never removed), got {days}")
    report = SweepReport()
    for name in stations:
        station = layout.station(name)
        for state, days in ((State.ARCHIVE, archive_days), (State.QUARANTINE, quarantine_days)):
            _sweep_state(station.state_root(state), state, today - timedelta(days=days), report)
    _sweep_history(history_dir, today - timedelta(days=history_days), report)
    if not report.nothing_done:
        log.info("retention.swept", today=today.isoformat(), **report.as_log())
    return report


def next_sweep(now: datetime, at: time = SWEEP_AT) -> datetime:
    """The next moment to sweep after ``now`` (aware, the gateway's zone): today at ``at`` or tomorrow."""
    candidate = datetime.combine(now.date(), at, tzinfo=now.tzinfo)
    if candidate <= now:
        candidate = datetime.combine(now.date() + timedelta(days=1), at, tzinfo=now.tzinfo)
    return candidate


def _sweep_state(root: Path, state: State, cutoff: date, report: SweepReport) -> None:
    """Remove ``root/<yyyymmdd>`` folders dated before ``cutoff``; fsync ``root`` once if any went."""
    removed_any = False
    for entry in _scandir(root):
        day = _day_of(entry.name)
        if day is None or day >= cutoff or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        counted = _Count()
        try:
            _rmtree(path, counted)
        except OSError as exc:  # kept (maybe partly emptied) and reported; the next sweep tries again
            report.errors.append(f"{path}: {exc.strerror or exc}")
            log.warning("retention.failed", path=str(path), error=str(exc))
            continue
        removed_any = True
        report.removed.append(path)
        report.bytes += counted.bytes
        if state is State.ARCHIVE:
            report.archive_days += 1
            report.archive_files += counted.entries
        else:
            report.quarantine_days += 1
            report.quarantine_files += counted.entries
    if removed_any:
        _fsync_dir(root, report)


def _sweep_history(directory: Path, cutoff: date, report: SweepReport) -> None:
    removed_any = False
    for day, path in daily_files(directory):
        if day >= cutoff:
            break  # oldest first
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue  # named like ours but not a file: not ours to remove
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (another sweep): done
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror or exc}")
            log.warning("retention.failed", path=str(path), error=str(exc))
            continue
        removed_any = True
        report.history_files += 1
        report.bytes += info.st_size
        report.removed.append(path)
    if removed_any:
        _fsync_dir(directory, report)


@dataclass(slots=True)
class _Count:
    entries: int = 0  # entries below a day folder (not the <tc> folders themselves)
    bytes: int = 0


def _rmtree(day_dir: Path, counted: _Count) -> None:
    """Remove a day folder and everything in it without following a symlink.

    A quarantined entry can be anything an institution dropped (a directory tree, a FIFO, a read-only
    directory, a tree deeper than any recursion): entries are unlinked, never opened, and the walk is
    iterative (``spool/tree.py``); a read-only directory is made writable by its owner and retried once.
    """
    for tc_entry in _scandir(day_dir):
        if tc_entry.is_dir(follow_symlinks=False):
            for item in _scandir(Path(tc_entry.path)):
                _account(item, counted)
        else:
            _account(tc_entry, counted)
    remove_tree(day_dir)


def _account(entry: os.DirEntry[str], counted: _Count) -> None:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return
    counted.entries += 1
    counted.bytes += info.st_size


def _fsync_dir(path: Path, report: SweepReport) -> None:
    try:
        fsync_dir(path)
    except OSError as exc:
        report.errors.append(f"{path}: fsync failed: {exc.strerror or exc}")
        log.warning("retention.fsync_failed", path=str(path), error=str(exc))


def _day_of(name: str) -> date | None:
    try:
        check_day(name)
    except ValueError:
        return None
    return datetime.strptime(name, "%Y%m%d").date()


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []
