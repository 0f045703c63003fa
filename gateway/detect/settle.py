"""When an inbox entry may be claimed (spec 2, the writer contract), decided without any I/O.

A file renamed into ``in/`` is complete, so it is ready at once. A file written in place is ready only
when it has been closed and its stat (size, mtime, ctime, inode) was seen unchanged for
``settle_seconds``, counted from when the gateway first saw that stat, never from the file's own mtime:
clocks of writers and copies (``cp -p``, SFTP ``setstat``) cannot be trusted.

"Unchanged for settle_seconds" is proven by two observations of the same stat at least
``settle_seconds`` apart, not by the absence of events in between: events are hints that can be lost
(inotify overflow), the stat is the truth. The caller therefore stats the keys :meth:`SettleTracker.due`
names and reports them with :meth:`SettleTracker.observed` (or :meth:`SettleTracker.gone`).

Evidence of closing: an ``IN_CLOSE_WRITE`` (:meth:`SettleTracker.closed`). An entry known only from
scans (it was there before the watch, or its events were lost) has no close to wait for; for it the quiet
period alone is the evidence - a writer that holds such a file open without writing for longer than
``settle_seconds`` cannot be told apart from a finished one without events.

Entries that never get a close although events were seen (symlinks, FIFOs, sub-directories, hard links
made with link(2)) stay waiting: the caller routes non-regular entries by lstat on its reconcile scan.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from spool.entries import is_temp_name

K = TypeVar("K", bound=Hashable)


def is_candidate(name: str) -> bool:
    """Whether an inbox name may ever be picked up; temporary names (spec 2) are never tracked."""
    return not is_temp_name(name)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The part of a stat that changes whenever a writer touches the file, or the file is replaced."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Snapshot:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(slots=True)
class _Entry:
    since: float
    """When the current ``stat`` was first seen, or when the last change was reported."""
    renamed: bool = False
    """Arrived complete by rename(2) and not written since: ready at once."""
    needs_close: bool = False
    """An in-place writer was seen and its close was not (yet)."""
    stat: Snapshot | None = None
    """The last stat seen; None when a change was reported after it."""
    quiet: bool = False
    """``stat`` was seen again, unchanged, at least settle_seconds after ``since``."""

    def restart(self, now: float) -> None:
        self.since = now
        self.stat = None
        self.quiet = False


class SettleTracker(Generic[K]):
    """Readiness of inbox entries, keyed by whatever the caller uses (e.g. ``(station, tc, name)``).

    Entries are forgotten once handed out by :meth:`ready` or reported :meth:`gone`, so memory is bounded
    by the files present in the inboxes. The caller drives it::

        tracker.renamed_in / written / closed (watch events)  |  observed / gone (stats, scans)
        at next_deadline(): stat every key of due(now), then claim every key of ready()
    """

    def __init__(self, settle_seconds: float) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must not be negative: {settle_seconds}")
        self._settle = settle_seconds
        self._entries: dict[K, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """The tracked keys, so a reconcile scan can report the ones it did not find as gone."""
        return list(self._entries)

    def renamed_in(self, key: K, now: float) -> None:
        """IN_MOVED_TO: a complete file took the name (replacing whatever had it)."""
        self._entries[key] = _Entry(since=now, renamed=True)

    def written(self, key: K, now: float) -> None:
        """IN_CREATE / IN_MODIFY: a writer has the file open; wait for its close, then a quiet period."""
        entry = self._entry(key, now)
        entry.renamed = False
        entry.needs_close = True
        entry.restart(now)

    def closed(self, key: K, now: float) -> None:
        """IN_CLOSE_WRITE: the writer is done; its stat must now stay unchanged for settle_seconds.

        A renamed-in file opened for writing again is treated as written in place from here on.
        """
        entry = self._entry(key, now)
        entry.renamed = False
        entry.needs_close = False
        entry.restart(now)

    def observed(self, key: K, stat: Snapshot, now: float) -> None:
        """A stat taken at ``now`` (for due(), or by a scan). A new entry has only scans as evidence."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(since=now)
        if entry.stat != stat:
            if entry.stat is not None:
                entry.renamed = False  # changed after its rename without an event: written in place
            entry.stat = stat
            entry.since = now
        entry.quiet = now - entry.since >= self._settle

    def gone(self, key: K) -> None:
        """The name left the inbox (deleted, renamed away, claimed); nothing to remember."""
        self._entries.pop(key, None)

    def not_listed(self, key: K, scan_started: float) -> None:
        """A reconcile scan that began at ``scan_started`` did not find the key: gone, unless an event
        after that moment (a rename-in while the scan listed) is newer than the scan's listing."""
        entry = self._entries.get(key)
        if entry is not None and entry.since < scan_started:
            del self._entries[key]

    def events_lost(self, now: float) -> None:
        """After an inotify overflow: closes and writes may have been missed, so every tracked entry
        falls back to scan evidence (quiet for settle_seconds from the next stat) - nothing waits forever
        for a lost close, and nothing is taken on the strength of an event stream with holes in it.
        """
        for entry in self._entries.values():
            entry.renamed = False
            entry.needs_close = False
            entry.restart(now)

    def due(self, now: float) -> list[K]:
        """Keys to stat now and report with observed() or gone(); repeated until they are answered."""
        return [
            key
            for key, entry in self._entries.items()
            if (at := self._due_at(entry)) is not None and at <= now
        ]

    def ready(self) -> list[K]:
        """Keys that may be claimed now, handed out once and then forgotten."""
        keys = [key for key, entry in self._entries.items() if self._is_ready(entry)]
        for key in keys:
            del self._entries[key]
        return keys

    def next_deadline(self) -> float | None:
        """When due() or ready() next has something without further input; None: wait for events."""
        times = [at for entry in self._entries.values() if (at := self._due_at(entry)) is not None]
        times += [entry.since for entry in self._entries.values() if self._is_ready(entry)]
        return min(times, default=None)

    def _entry(self, key: K, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(since=now)
        return entry

    def _is_ready(self, entry: _Entry) -> bool:
        return entry.renamed or (entry.quiet and not entry.needs_close)

    def _due_at(self, entry: _Entry) -> float | None:
        if entry.renamed or entry.needs_close or entry.quiet:
            return None  # ready, or waiting for an event rather than for time
        if entry.stat is None:
            return entry.since
        return entry.since + self._settle
