"""The sync history (spec 12): a JSON line per file event, in daily files, durable before acknowledged.

Operators open these files first (``tail -f``, ``fdep-gateway history``), so a reader must only ever see
whole lines. Torn tails left by a crash are truncated away: a torn line belongs to an ``append`` that never
returned, so nothing acknowledged is lost; a ``.torn`` sidecar would only keep bytes nobody was told about.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from spool.fsio import fsync_dir
from validators.findings import Finding, Severity

EventKind = Literal[
    "received",
    "held",
    "deferred",
    "forwarded",
    "rejected",
    "duplicate",
    "vanished",
    "recovered",
    "replayed",
    "feedback",
]
EVENTS: tuple[str, ...] = get_args(EventKind)

_PREFIX = "history-"
_SUFFIX = ".jsonl"
_NAME = re.compile(r"history-(\d{8})\.jsonl")
# Valid JSON, but raw they would break `tail -f` terminals (C1 controls), line splitters (U+2028/9) or the
# UTF-8 encoder (lone surrogates from undecodable file names): write them as \u escapes.
_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TAIL_CHUNK = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Logged:
    """What the history already holds for files in flight: recovery neither repeats nor contradicts it."""

    events: set[tuple[str, str]]  # (file_id, event)
    rejections: dict[str, tuple[list[Finding], int]]  # file_id -> its rejected event's findings, total

    def add(self, obj: dict[str, Any]) -> None:
        file_id, event = obj["file_id"], str(obj.get("event"))
        self.events.add((file_id, event))
        if event == "rejected":
            kept = [finding_from_dict(f) for f in obj.get("findings") or []]
            self.rejections[file_id] = (kept, int(obj.get("findings_total") or len(kept)))


def finding_from_dict(data: dict[str, Any]) -> Finding:
    """A finding as the history holds it (``Finding.to_dict()``), back as a Finding."""
    return Finding(**{**data, "severity": Severity(data["severity"])})


def json_text(value: object) -> str:
    """JSON as the history writes it: UTF-8 text kept readable, with what would break a terminal, a line
    splitter or the UTF-8 encoder (C1 controls, U+2028/9, lone surrogates of undecodable names) escaped."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """One event of one file. Field order is the key order of the JSON line; missing facts are None."""

    ts: datetime | None = None  # stamped by HistoryWriter.append: the moment the event became durable
    event: EventKind
    file_id: str | None = None
    station: str | None = None
    transfer_code: str | None = None
    institution: str | None = None
    table: str | None = None
    date: str | None = None  # data date, YYYYMMDD
    batch: str | None = None
    mode: str | None = None
    name: str | None = None
    size: int | None = None
    sha256: str | None = None
    records: int | None = None
    findings: list[dict[str, Any]] | None = None  # Finding.to_dict(), values already dropped if restricted
    findings_total: int | None = None
    message: str  # one sentence, zh then en: what happened and what to do
    detail: dict[str, Any] | None = None  # omitted from the line when None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown history event {self.event!r}")
        if self.ts is not None and self.ts.tzinfo is None:
            raise ValueError("history timestamps carry their zone offset")

    def to_json_line(self, ts: datetime | None = None) -> str:
        """The event as one JSON line, without the newline; ``ts`` stamps it as it is written."""
        ts = ts or self.ts
        if ts is None:
            raise ValueError("an event is stamped (ts) before it is written")
        data = {name: getattr(self, name) for name in _EVENT_FIELDS}
        data["ts"] = ts.isoformat(timespec="milliseconds")
        if self.detail is None:
            del data["detail"]
        return json_text(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEvent:
        """Rebuild an event from a parsed line; unknown keys (a newer writer's) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("ts"), str):
            values["ts"] = datetime.fromisoformat(values["ts"])
        return cls(**values)


_EVENT_FIELDS = tuple(f.name for f in fields(HistoryEvent))


def daily_path(dir: Path, day: date) -> Path:
    return dir / f"{_PREFIX}{day:%Y%m%d}{_SUFFIX}"


def daily_files(dir: Path) -> list[tuple[date, Path]]:
    """The daily history files in ``dir``, oldest first; other names are not ours and are ignored."""
    found = []
    try:
        paths = list(dir.iterdir())
    except FileNotFoundError:
        return []
    for path in paths:
        match = _NAME.fullmatch(path.name)
        if match:
            try:
                day = datetime.strptime(match.group(1), "%Y%m%d").date()
            except ValueError:
                continue
            found.append((day, path))
    return sorted(found)


def whole_length(fd: int, end: int | None = None) -> int:
    """Length of the whole lines (up to and including the last newline) in the first ``end`` bytes."""
    pos = os.fstat(fd).st_size if end is None else end
    if pos == 0 or os.pread(fd, 1, pos - 1) == b"\n":
        return pos
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        cut = os.pread(fd, pos - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def read_lines(path: Path) -> Iterator[bytes]:
    """Whole lines (newline included) of one daily file; a torn tail is left out."""
    with path.open("rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                yield raw


class HistoryWriter:
    """Appends events to ``history-YYYYMMDD.jsonl`` (day in the gateway's zone), group-committed.

    Thread-safe (one lock); also safe beside another writing process (``replay``), because every append
    holds an flock on the file while it checks the tail, writes and fsyncs.
    """

    def __init__(self, dir: Path, zone: ZoneInfo, *, now: Callable[[], datetime] | None = None) -> None:
        self._dir = dir
        self._zone = zone
        self._now = now or (lambda: datetime.now(zone))
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day: date | None = None
        if not dir.is_dir():
            dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(dir.parent)
        existing = daily_files(dir)
        if existing:  # a crash can only have torn the newest file: the older ones were finished first
            fd = os.open(existing[-1][1], os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _repair(fd, existing[-1][1])
            finally:
                os.close(fd)

    def append(self, events: Sequence[HistoryEvent]) -> None:
        """Write ``events`` with one write and one fsync; they are durable when this returns.

        On failure the file is cut back to where it was and the error raised: nothing half-written
        stays behind to be mistaken for an acknowledged event.
        """
        if not events:
            return
        with self._lock:
            stamp = self._now()
            if stamp.tzinfo is None:
                raise ValueError("the history clock must return aware datetimes")
            stamp = stamp.astimezone(self._zone)
            data = "".join(e.to_json_line(stamp) + "\n" for e in events).encode()
            fd = self._open(stamp.date())
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                start = _repair(fd, daily_path(self._dir, stamp.date()))
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except BaseException:
                    self._abandon(fd, start)
                    raise
            finally:
                if self._fd == fd:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def logged(self, file_ids: Collection[str]) -> Logged:
        """What the history already says of these files (crash recovery).

        Scans from the day before the oldest file_id's date (YYYYMMDD prefix), a margin for a file_id
        dated in another zone than the history; a file_id without a date scans everything.
        """
        found = Logged(set(), {})
        if not file_ids:
            return found
        wanted = set(file_ids)
        days = [_day_of(f) for f in wanted]
        first = date.min if None in days else min(d for d in days if d) - timedelta(days=1)
        for day, path in daily_files(self._dir):  # no lock: reading touches no writer state
            if day < first:
                continue
            for raw in read_lines(path):
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("file_id") in wanted:
                    found.add(obj)
        return found

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._day = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, day: date) -> int:
        """The fd of ``day``'s file, rolling over at midnight.

        The directory is fsynced on every open, not only when the file is new: after a failed dir fsync
        the file exists but its entry may not be durable, and an open happens about once a day.
        """
        if self._fd is not None and self._day == day:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        fd = os.open(daily_path(self._dir, day), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._day = fd, day
        return fd

    def _abandon(self, fd: int, start: int) -> None:
        """After a failed write or fsync: cut the file back and drop the fd (its error state is spent)."""
        try:
            os.ftruncate(fd, start)
            os.fsync(fd)
        except OSError:
            log.exception("history: could not cut the file of %s back after a failed append", self._day)
        finally:
            os.close(fd)
            self._fd = None
            self._day = None


def _repair(fd: int, path: Path) -> int:
    """Truncate a torn last line (no trailing newline); return the length of the whole lines."""
    size = os.fstat(fd).st_size
    whole = whole_length(fd)
    if whole != size:
        os.ftruncate(fd, whole)
        os.fsync(fd)
        log.warning("history: cut a torn last line of %d bytes from %s", size - whole, path)
    return whole


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _day_of(file_id: str) -> date | None:
    try:
        return datetime.strptime(file_id[:8], "%Y%m%d").date()
    except ValueError:
        return None
