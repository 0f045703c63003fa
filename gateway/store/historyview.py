"""Reading the sync history for operators: ``fdep-gateway history`` queries, ``--follow`` and one-line text.

Readers never lock and never trust a line: garbage or torn lines are skipped and counted, so one bad
byte cannot hide the rest of the day.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from gateway.store.history import daily_files, whole_length

_GLOB = frozenset("*?[")
# A file is named by its day in the gateway's zone, which the reader does not know; the dates of one
# instant in any two zones differ by at most a day, so files are only skipped beyond that margin.
_MARGIN = timedelta(days=1)


@dataclass
class Skipped:
    """How many lines could not be read (garbage, or torn by a crash); the CLI reports it at the end."""

    lines: int = 0


@dataclass(frozen=True, slots=True)
class _Filter:
    institution: str | None
    table: str | None
    date: str | None
    status: str | None
    name: str | None
    since: datetime | None
    until: datetime | None

    def wants_day(self, day: dt.date) -> bool:
        """False when no event of the file of ``day`` can be in the time range."""
        if self.since is not None and day < self.since.date() - _MARGIN:
            return False
        return not (self.until is not None and day > self.until.date() + _MARGIN)

    def matches(self, event: dict[str, Any], ts: datetime) -> bool:
        return (
            (self.since is None or ts >= self.since)
            and (self.until is None or ts < self.until)
            and (self.institution is None or event.get("institution") == self.institution)
            and (self.table is None or _table_matches(self.table, event))
            and (self.date is None or event.get("date") == self.date)
            and (self.status is None or event.get("event") == self.status)
            and (self.name is None or _name_matches(self.name, event.get("name")))
        )


def query(
    dir: Path,
    *,
    institution: str | None = None,
    table: str | None = None,
    date: str | None = None,
    status: str | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    skipped: Skipped | None = None,
) -> Iterator[dict[str, Any]]:
    """Events matching every given filter, oldest first.

    ``date`` is the data date (YYYYMMDD or YYYY-MM-DD), ``status`` the event, ``name`` a case-insensitive
    substring or, when it holds ``*?[``, a glob over the whole name. ``since`` is inclusive, ``until``
    exclusive; both must be aware. A torn last line of the newest file is a write in progress, not counted.
    """
    flt = _make_filter(institution, table, date, status, name, since, until)
    count = skipped if skipped is not None else Skipped()
    files = daily_files(dir)
    for i, (day, path) in enumerate(files):
        if not flt.wants_day(day):
            continue
        cursor = _Cursor(day, path)
        yield from cursor.read(flt, count)
        if i < len(files) - 1 and cursor.torn():
            count.lines += 1


def follow(
    dir: Path,
    *,
    institution: str | None = None,
    table: str | None = None,
    date: str | None = None,
    status: str | None = None,
    name: str | None = None,
    since: datetime | None = None,
    last: int = 0,
    poll_seconds: float = 0.5,
    skipped: Skipped | None = None,
) -> Iterator[dict[str, Any]]:
    """Like ``tail -f`` over the daily files, across midnight: matching events, forever.

    Without ``since`` it first gives the ``last`` matching events (from the newest daily files, as
    ``tail -n``), then what comes after the end of the history as it is when ``follow`` is called (not
    when the iterator is first advanced); with ``since`` it first gives the events from then on.
    """
    flt = _make_filter(institution, table, date, status, name, since, None)
    count = skipped if skipped is not None else Skipped()
    files = [(d, p) for d, p in daily_files(dir) if flt.wants_day(d)]
    recent: list[dict[str, Any]] = []
    if since is not None:
        start = _Cursor(*files[0]) if files else None
    elif files:
        start = _Cursor(*files[-1])
        recent = _recent(files, start, flt, last)
    else:
        start = None
    return _follow(dir, start, flt, count, poll_seconds, recent)


_RECENT_DAYS = 7
"""How many daily files ``follow`` looks back through for its first ``last`` events."""


def _recent(
    files: list[tuple[dt.date, Path]], newest: _Cursor, flt: _Filter, last: int
) -> list[dict[str, Any]]:
    """The last ``last`` matching events, oldest first; leaves ``newest`` at the end of its file."""
    found: deque[dict[str, Any]] = deque(newest.read(flt, Skipped()), maxlen=last or 1)
    for day, path in reversed(files[-_RECENT_DAYS:-1]):
        if len(found) >= last:
            break
        earlier = list(_Cursor(day, path).read(flt, Skipped()))
        found.extendleft(reversed(earlier[-(last - len(found)) :]))
    return list(found)[-last:] if last else []


def read_after(
    day: dt.date, path: Path, offset: int, skipped: Skipped | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The whole events of one daily file after byte ``offset``, and the offset after the last of them.

    For readers that keep their own index of the history (the web console): they resume where they
    stopped, and a file cut back under them is read again from the last whole line before the cut.
    """
    cursor = _Cursor(day, path)
    cursor.offset = offset
    everything = _make_filter(None, None, None, None, None, None, None)
    events = list(cursor.read(everything, skipped if skipped is not None else Skipped()))
    return events, cursor.offset


def _follow(
    dir: Path,
    cursor: _Cursor | None,
    flt: _Filter,
    count: Skipped,
    poll_seconds: float,
    recent: list[dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    yield from recent
    while True:
        # Listed before reading: the writer finishes a file before it creates a later one, so when a later
        # file is listed, reading this one to its end now gets all of it.
        later = [(d, p) for d, p in daily_files(dir) if cursor is None or d > cursor.day]
        if cursor is not None:
            yield from cursor.read(flt, count)
        if not later:
            time.sleep(poll_seconds)
            continue
        if cursor is not None and cursor.torn():
            count.lines += 1
        cursor = _Cursor(*later[0])


class _Cursor:
    """A read position in one daily file that only ever moves past whole lines."""

    def __init__(self, day: dt.date, path: Path) -> None:
        self.day = day
        self.path = path
        self.offset = 0

    def read(self, flt: _Filter, count: Skipped) -> Iterator[dict[str, Any]]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:  # removed by retention while we were looking
            return
        with f:
            self._resync(f.fileno())
            f.seek(self.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                self.offset += len(raw)
                parsed = _parse(raw)
                if parsed is None:
                    count.lines += 1
                elif flt.matches(*parsed):
                    yield parsed[0]

    def _resync(self, fd: int) -> None:
        """Back to a line start if the file was cut back under us (the writer undoing a failed append).

        Lines read after the cut may be new lines of other lengths: an offset that no longer follows a
        newline shows it, and reading goes on from the line start before it.
        """
        size = os.fstat(fd).st_size
        if self.offset > size or (self.offset and os.pread(fd, 1, self.offset - 1) != b"\n"):
            self.offset = whole_length(fd, min(self.offset, size))

    def torn(self) -> bool:
        """True when bytes without a final newline follow the last whole line read."""
        try:
            return self.path.stat().st_size > self.offset
        except FileNotFoundError:
            return False


def select(
    lines: Iterable[str | bytes],
    *,
    institution: str | None = None,
    table: str | None = None,
    date: str | None = None,
    status: str | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of ``lines`` (history lines from anywhere: the PostgreSQL store's rows) that match
    every given filter, as ``query`` matches them."""
    flt = _make_filter(institution, table, date, status, name, since, until)
    for line in lines:
        parsed = _parse(line)
        if parsed is not None and flt.matches(*parsed):
            yield parsed[0]


def _parse(raw: str | bytes) -> tuple[dict[str, Any], datetime] | None:
    try:
        event = json.loads(raw)
    except ValueError:  # includes bytes that are not UTF-8
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    stamp = event.get("ts")
    if not isinstance(stamp, str):
        return None
    try:
        ts = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (event, ts) if ts.tzinfo is not None else None


def _make_filter(
    institution: str | None,
    table: str | None,
    date: str | None,
    status: str | None,
    name: str | None,
    since: datetime | None,
    until: datetime | None,
) -> _Filter:
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise ValueError("since/until must carry a timezone (the history's times do)")
    return _Filter(
        institution=institution,
        table=table.upper() if table else None,
        date=date.replace("-", "") if date else None,
        status=status.lower() if status else None,
        name=name.casefold() if name else None,
        since=since,
        until=until,
    )


def _table_matches(table: str, event: dict[str, Any]) -> bool:
    """The event's table; for a name that did not parse (no table recorded), a part of the name."""
    recorded = event.get("table")
    if recorded is not None:
        return bool(recorded == table)
    name = event.get("name")
    return isinstance(name, str) and table in name.upper().replace(".", "_").split("_")


def _name_matches(pattern: str, value: object) -> bool:
    if not isinstance(value, str):
        return False
    value = value.casefold()
    if _GLOB & set(pattern):
        return fnmatchcase(value, pattern)
    return pattern in value


def format_event(event: dict[str, Any]) -> str:
    """One line for operators: time with its zone, event, station/transfer code, name, records, the first
    finding (``fdep-gateway show FILE_ID`` has them all)."""
    try:
        when = datetime.fromisoformat(str(event.get("ts"))).isoformat(sep=" ", timespec="seconds")
    except ValueError:
        when = _text(event.get("ts"))
    line = (
        f"{when} {_text(event.get('event')):<9} "
        f"{_text(event.get('station'))}/{_text(event.get('transfer_code'))} {_text(event.get('name'))}"
    )
    records = event.get("records")
    if isinstance(records, int):
        line += f"  {records:,} records"
    findings = event.get("findings")
    if isinstance(findings, list) and findings and isinstance(findings[0], dict):
        first = findings[0]
        total = event.get("findings_total")
        more = (total if isinstance(total, int) else len(findings)) - 1
        line += f"  {_text(first.get('code'))} {_text(first.get('message_zh'))}"
        if more > 0:
            line += f" (+{more} more"
            line += f": fdep-gateway show {_text(event['file_id'])})" if event.get("file_id") else ")"
    elif event.get("message"):
        line += f"  {_text(event.get('message'))}"
    return line


def _text(value: object) -> str:
    """``value`` as printable text: control, format and separator characters become escapes."""
    if value is None:
        return "-"
    out = []
    for ch in str(value):
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(_escape(ord(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
