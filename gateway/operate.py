"""Operator commands that work beside a running daemon: ``history``, ``status`` and ``replay``.

They read the spool and the history directly (``status`` needs no running daemon to answer); ``replay``
hands a quarantined file back to its inbox, where the daemon takes it as a new arrival.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.config import FEEDBACK_DIR, GatewayConfig
from gateway.history import HistoryEvent, HistoryWriter
from gateway.historyview import follow, format_event, query
from gateway.text import visible
from spool.entries import list_inbox
from spool.fsio import move_durable
from spool.layout import SpoolLayout, State
from spool.recovery import scan_states

EXIT_OK = 0
EXIT_FAILED = 1


def _when(text: str | None, config: GatewayConfig) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"fdep-gateway history: {text!r} is not a date or time (2026-11-25T09:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=config.zone)
    return value


def show_history(config: GatewayConfig, args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "institution": args.institution,
        "table": args.table,
        "date": args.date,
        "status": args.status,
        "name": args.name,
        "since": _when(args.since, config),
    }
    directory = config.history.dir
    if args.follow:
        events = follow(directory, **filters)
    else:
        events = query(directory, **filters, until=_when(args.until, config))
    try:
        for event in events:
            print(json.dumps(event, ensure_ascii=False) if args.json else format_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()
    return EXIT_OK


@dataclass
class StationStatus:
    station: str
    waiting: int  # in in/, not claimed yet
    work: int
    deferred: int
    held: int
    quarantined_today: int
    oldest_waiting_seconds: float | None


def station_status(layout: SpoolLayout, station: str, today: str) -> StationStatus:
    st = layout.station(station)
    waiting = 0
    oldest: float | None = None
    now = time.time()
    for tc in st.mailboxes():
        try:
            entries = list_inbox(st.inbox(tc))
        except OSError:
            continue
        waiting += len(entries)
        for entry in entries:
            age = now - entry.mtime_ns / 1e9
            oldest = age if oldest is None else max(oldest, age)
    counts = {state: 0 for state in (State.WORK, State.DEFERRED, State.HELD)}
    for state_entry in scan_states(st, states=tuple(counts)):
        counts[state_entry.state] += 1
    quarantine_day = st.state_root(State.QUARANTINE) / today
    quarantined = 0
    if quarantine_day.is_dir():
        quarantined = sum(
            1 for tc in quarantine_day.iterdir() for p in tc.iterdir() if not p.name.endswith(".reason.json")
        )
    return StationStatus(
        station=station,
        waiting=waiting,
        work=counts[State.WORK],
        deferred=counts[State.DEFERRED],
        held=counts[State.HELD],
        quarantined_today=quarantined,
        oldest_waiting_seconds=round(oldest, 1) if oldest is not None else None,
    )


@dataclass
class MailboxStatus:
    station: str
    transfer_code: str
    waiting: int
    work: int
    deferred: int
    held: int
    quarantined_today: int
    oldest_waiting_seconds: float | None


def mailbox_status(layout: SpoolLayout, station: str, today: str) -> list[MailboxStatus]:
    """``station_status`` per mailbox (the console's operator view), mailboxes in name order."""
    st = layout.station(station)
    now = time.time()
    rows: dict[str, MailboxStatus] = {}
    for tc in st.mailboxes():
        row = rows[tc] = MailboxStatus(station, tc, 0, 0, 0, 0, 0, None)
        try:
            entries = list_inbox(st.inbox(tc))
        except OSError:
            continue
        row.waiting = len(entries)
        ages = [now - entry.mtime_ns / 1e9 for entry in entries]
        row.oldest_waiting_seconds = round(max(ages), 1) if ages else None
    for entry in scan_states(st, states=(State.WORK, State.DEFERRED, State.HELD)):
        row = rows.setdefault(entry.tc, MailboxStatus(station, entry.tc, 0, 0, 0, 0, 0, None))
        if entry.state is State.WORK:
            row.work += 1
        elif entry.state is State.DEFERRED:
            row.deferred += 1
        else:
            row.held += 1
    quarantine_day = st.state_root(State.QUARANTINE) / today
    if quarantine_day.is_dir():
        for tc_dir in quarantine_day.iterdir():
            row = rows.setdefault(tc_dir.name, MailboxStatus(station, tc_dir.name, 0, 0, 0, 0, 0, None))
            row.quarantined_today = sum(1 for p in tc_dir.iterdir() if not p.name.endswith(".reason.json"))
    return [rows[tc] for tc in sorted(rows)]


def show_status(config: GatewayConfig, *, as_json: bool) -> int:
    layout = SpoolLayout(config.spool_root)
    today = datetime.now(config.zone).strftime("%Y%m%d")
    rows = [station_status(layout, station, today) for station in config.stations]
    if as_json:
        print(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2))
        return EXIT_OK
    print(
        f"{'station':<8} {'waiting':>8} {'in work':>8} {'deferred':>9} {'held':>6} "
        f"{'quarantined':>12}  oldest"
    )
    for r in rows:
        oldest = f"{r.oldest_waiting_seconds:.0f}s" if r.oldest_waiting_seconds is not None else "-"
        print(
            f"{r.station:<8} {r.waiting:>8} {r.work:>8} {r.deferred:>9} {r.held:>6} "
            f"{r.quarantined_today:>12}  {oldest}"
        )
    return EXIT_OK


def _find_quarantined(layout: SpoolLayout, config: GatewayConfig, file_id: str) -> tuple[str, Any] | None:
    for station in config.stations:
        for entry in scan_states(layout.station(station), states=(State.QUARANTINE,)):
            if entry.file_id == file_id and not entry.name.endswith("reason.json"):
                return station, entry
    return None


class ReplayError(Exception):
    """The file cannot be replayed; the message says why, for the operator."""


def replay(config: GatewayConfig, file_id: str) -> int:
    """Put a quarantined file (as it is now: fixed in place, or untouched) back into its inbox."""
    try:
        message = replay_file(config, file_id)
    except ReplayError as exc:
        print(f"fdep-gateway replay: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(message)
    return EXIT_OK


def replay_file(config: GatewayConfig, file_id: str, *, by: str | None = None) -> str:
    """Move a quarantined file back into its inbox and record it; ``by`` names who asked (the console).

    Returns what happened, in one line; raises ``ReplayError`` when the file cannot be replayed.
    """
    layout = SpoolLayout(config.spool_root)
    found = _find_quarantined(layout, config, file_id)
    if found is None:
        raise ReplayError(f"no quarantined file with id {file_id}")
    station, entry = found
    if entry.tc == FEEDBACK_DIR:
        raise ReplayError(
            f"{file_id} is a core feedback file, not an institution's file: move it "
            "back into the route's feedback directory to deliver it again"
        )
    st = layout.station(station)
    reason_path = st.reason_path(entry.tc, file_id, entry.day)
    name = entry.name
    if reason_path.is_file():
        name = json.loads(reason_path.read_text(encoding="utf-8")).get("name") or name
    target = st.inbox(entry.tc) / name
    try:
        move_durable(Path(entry.path), target)
    except FileExistsError:
        raise ReplayError(f"{visible(name)} is already waiting in {target.parent}") from None
    except OSError as exc:
        raise ReplayError(f"cannot move {visible(name)} back: {exc.strerror}") from None
    detail: dict[str, Any] = {"inbox": str(target.parent)}
    if by is not None:
        detail["by"] = by
    writer = HistoryWriter(config.history.dir, config.zone)
    try:
        writer.append(
            [
                HistoryEvent(
                    event="replayed",
                    file_id=file_id,
                    station=station,
                    transfer_code=entry.tc,
                    name=name,
                    message="运维人员已将该文件重新送入校验流程 / "
                    "Sent through the pipeline again by an operator",
                    detail=detail,
                )
            ]
        )
    finally:
        writer.close()
    return f"{visible(name)} is back in {target.parent}; it is processed as a new arrival"
