"""Operator commands that work beside a running daemon: ``history``, ``show``, ``status``, ``replay``,
and the summary ``drain`` prints.

They read the spool and the history directly (``status`` needs no running daemon to answer); ``replay``
hands a quarantined file back to its inbox, where the daemon takes it as a new arrival.

JSON goes out as UTF-8 whatever the locale (RFC 8259), with the history's escapes; text goes out in the
locale's encoding, anything it cannot show as a backslash escape, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from gateway.config import FEEDBACK_DIR, GatewayConfig, PostgresStore
from gateway.ops.check import render_findings
from gateway.pipeline.receipts import find_receipt
from gateway.store.history import HistoryEvent, HistoryWriter, finding_from_dict, json_text
from gateway.store.historyview import follow, format_event, query, select
from gateway.store.postgres_history import follow_lines, read_lines
from gateway.text import visible
from spool.entries import list_inbox
from spool.fsio import move_durable
from spool.ids import file_id_time, is_file_id
from spool.layout import SpoolLayout, State
from spool.recovery import scan_states

EXIT_OK = 0
EXIT_FAILED = 1
OUTCOMES = ("forwarded", "rejected", "duplicate")


def _aware(value: datetime | None, config: GatewayConfig) -> datetime | None:
    """A time given without a zone is in the gateway's zone."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=config.zone)


def _print_json(values: Iterable[object]) -> None:
    out = sys.stdout.buffer
    for value in values:
        out.write(json_text(value).encode("utf-8") + b"\n")
        out.flush()


def _print_text(lines: Iterable[str]) -> None:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    for line in lines:
        print(line, flush=True)


def show_history(config: GatewayConfig, args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "institution": args.institution,
        "table": args.table,
        "date": args.date,
        "status": args.status,
        "name": args.name,
        "since": _aware(args.since, config),
    }
    directory = config.history.dir
    if isinstance(config.store, PostgresStore):
        events = _database_history(config.store, filters, args, _aware(args.until, config))
    elif args.follow:
        events = follow(directory, **filters, last=max(0, args.lines))
    else:
        events = query(directory, **filters, until=_aware(args.until, config))
    try:
        if args.json:
            _print_json(events)
        else:
            _print_text(format_event(event) for event in events)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()
    return EXIT_OK


def _database_history(
    store: PostgresStore, filters: dict[str, Any], args: argparse.Namespace, until: datetime | None
) -> Iterator[dict[str, Any]]:
    """The history of several nodes, from PostgreSQL: the same filters, ``--follow`` by LISTEN/NOTIFY."""
    with psycopg.connect(store.dsn, password=store.password(), autocommit=True) as conn:
        if args.follow:
            lines: Iterable[str] = follow_lines(conn, since=filters["since"], last=max(0, args.lines))
            yield from select(lines, **filters)  # those matching among the last lines
        else:
            lines = (line for _, line in read_lines(conn, since=filters["since"], until=until))
            yield from select(lines, **filters, until=until)


def events_since(config: GatewayConfig, since: datetime) -> list[dict[str, Any]]:
    """The history from ``since`` on, wherever the store keeps it (daily files, or PostgreSQL)."""
    store = config.store
    if not isinstance(store, PostgresStore):
        return list(query(config.history.dir, since=since))
    with psycopg.connect(store.dsn, password=store.password(), autocommit=True) as conn:
        return list(select((line for _, line in read_lines(conn, since=since)), since=since))


def drain_summary(config: GatewayConfig, since: datetime) -> str:
    """What a drain did: outcomes since it started, and what still waits by rule (window, core)."""
    counts = Counter(e["event"] for e in events_since(config, since) if e["event"] in OUTCOMES)
    layout = SpoolLayout(config.spool_root)
    today = datetime.now(config.zone).strftime("%Y%m%d")
    left = [station_status(layout, station, today) for station in config.stations]
    done = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)
    deferred, held = sum(s.deferred for s in left), sum(s.held for s in left)
    return f"drained: {done}; still waiting: {deferred} deferred (core), {held} held (reporting window)"


def show_file(config: GatewayConfig, file_id: str, *, as_json: bool) -> int:
    """Every event of one file, every finding in full, where the file is now and its receipt."""
    if not is_file_id(file_id):
        print(f"fdep-gateway show: {file_id!r} is not a file id", file=sys.stderr)
        return EXIT_FAILED
    claimed = file_id_time(file_id, config.zone)
    since = claimed - timedelta(days=1)  # the id's clock and the history's may differ a little
    events = [e for e in events_since(config, since) if e.get("file_id") == file_id]
    if not events:
        print(f"fdep-gateway show: no history for {file_id}", file=sys.stderr)
        return EXIT_FAILED
    where = _location(config, file_id, events)
    receipt = _receipt(config, file_id, events)
    if as_json:
        _print_json([{"file_id": file_id, "events": events, "location": where, "receipt": receipt}])
        return EXIT_OK
    out = io.StringIO()
    first = events[0]
    out.write(f"{file_id}  {visible(str(first.get('name')))}\n")
    keys = ("station", "transfer_code", "institution", "table", "date", "batch")
    facts = [(key, first.get(key)) for key in keys]
    out.write("  " + ", ".join(f"{key} {visible(str(value))}" for key, value in facts if value) + "\n")
    for event in events:
        out.write(f"  {format_event(event)}\n")
        kept = [finding_from_dict(data) for data in event.get("findings") or []]
        render_findings(kept, event.get("findings_total") or len(kept), out, indent="      ")
    out.write(f"  now: {where or 'no longer in the spool (removed by retention, or never kept)'}\n")
    out.write(f"  receipt: {receipt or 'none in out/'}\n")
    _print_text([out.getvalue().rstrip("\n")])
    return EXIT_OK


def _location(config: GatewayConfig, file_id: str, events: list[dict[str, Any]]) -> str | None:
    """The file's path in the spool now: the state dirs it can be in, on the days it can be there."""
    first, last = events[0], events[-1]
    station, tc, name = first.get("station"), first.get("transfer_code"), first.get("name")
    if not (isinstance(station, str) and isinstance(tc, str) and isinstance(name, str)):
        return None
    try:
        st = SpoolLayout(config.spool_root).station(station)
    except ValueError:
        return None
    days = {datetime.fromisoformat(e["ts"]).astimezone(config.zone).strftime("%Y%m%d") for e in (first, last)}
    for state in State:
        for day in sorted(days) if state.dated else [None]:
            try:
                path = st.state_path(state, tc, file_id, name, day)
            except ValueError:
                continue
            if path.exists() or path.is_symlink():
                return str(path)
    return None


def _receipt(config: GatewayConfig, file_id: str, events: list[dict[str, Any]]) -> str | None:
    """The receipt in out/ that still answers this file, if there is one."""
    first = events[0]
    station, tc, name = first.get("station"), first.get("transfer_code"), first.get("name")
    if not (isinstance(station, str) and isinstance(tc, str) and isinstance(name, str)):
        return None
    try:
        outbox = SpoolLayout(config.spool_root).station(station).outbox(tc)
    except ValueError:
        return None
    found = find_receipt(outbox, name, file_id)
    return None if found is None else str(found[0])


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
    """A station's mailboxes added up (``status``)."""
    return summed(station, mailbox_status(layout, station, today))


def summed(station: str, rows: list[MailboxStatus]) -> StationStatus:
    ages = [r.oldest_waiting_seconds for r in rows if r.oldest_waiting_seconds is not None]
    return StationStatus(
        station=station,
        waiting=sum(r.waiting for r in rows),
        work=sum(r.work for r in rows),
        deferred=sum(r.deferred for r in rows),
        held=sum(r.held for r in rows),
        quarantined_today=sum(r.quarantined_today for r in rows),
        oldest_waiting_seconds=max(ages, default=None),
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
        f"{'quarantined today':>18}  oldest waiting"
    )
    for r in rows:
        oldest = f"{r.oldest_waiting_seconds:.0f}s" if r.oldest_waiting_seconds is not None else "-"
        print(
            f"{r.station:<8} {r.waiting:>8} {r.work:>8} {r.deferred:>9} {r.held:>6} "
            f"{r.quarantined_today:>18}  {oldest}"
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
