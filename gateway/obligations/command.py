"""``fdep-gateway due`` and ``fdep-gateway report``: obligations for operators and for timers.

``due`` exits 1 when anything it lists is missing or at risk, so a systemd timer or cron job can alert
on it; 0 otherwise; 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from gateway.config import GatewayConfig
from gateway.obligations import report
from gateway.obligations.assess import (
    Selection,
    assess,
    assess_days,
    calendar_of,
    count_by,
    gc_paused,
    ledger_facts,
    open_days,
    reports_dir,
)
from gateway.obligations.rules import previous_trading_day
from gateway.obligations.status import OPEN_STATES, Standing, State
from gateway.windows import PLATFORM_ZONE

EXIT_OK, EXIT_OPEN, EXIT_USAGE = 0, 1, 2


def add_arguments(due: argparse.ArgumentParser, reporting: argparse.ArgumentParser) -> None:
    for command in (due, reporting):
        command.add_argument(
            "--date",
            help="data date YYYYMMDD or YYYY-MM-DD (default: due: open periods; report: last trading day)",
        )
        command.add_argument("--now", help="evaluate as of this ISO time (default: now)")
    due.add_argument("--institution")
    due.add_argument("--table")
    due.add_argument("--station")
    due.add_argument("--state", action="append", help=f"one of {', '.join(State)} (repeatable)")
    due.add_argument("--json", action="store_true", help="one JSON object per obligation")
    reporting.add_argument("--out", help="directory (default: obligations.reports_dir)")


def show_due(config: GatewayConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        now, day = _when(config, args)
        states = {State(s) for s in args.state or ()}
    except ValueError as exc:
        print(f"fdep-gateway due: {exc}", file=sys.stderr)
        return EXIT_USAGE
    selection = Selection(args.institution, args.table, args.station)
    calendar = calendar_of(config)
    days = [day] if args.date else open_days(now.astimezone(PLATFORM_ZONE).date(), calendar)
    found = assess_days(
        config, ledger_facts(config), days=days, now=now, calendar=calendar, selection=selection
    )
    with gc_paused():
        if len(days) > 1:  # one day's come in display order already
            found.sort(key=_display_order)
        shown = [s for s in found if not states or s.state in states]
        if args.json:
            encode = json.JSONEncoder(ensure_ascii=False).encode
            lines = [encode(item.as_dict()) for item in shown]
        else:
            lines = [_line(item) for item in shown]
            counts = count_by(shown)
            summary = ", ".join(f"{counts[s]} {s}" for s in State if s in counts) or "nothing due"
            period = f"data date {day:%Y-%m-%d}" if args.date else "the open periods"
            lines.append(f"{len(shown)} obligations for {period}: {summary}")
    if lines:
        out.write("\n".join(lines) + "\n")
    return EXIT_OPEN if any(s.state in OPEN_STATES for s in shown) else EXIT_OK


def write_report(config: GatewayConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        now, day = _when(config, args)
    except ValueError as exc:
        print(f"fdep-gateway report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    directory = reports_dir(config) if args.out is None else Path(args.out)
    found = assess(config, ledger_facts(config), day=day, now=now)
    for path in report.write(directory, found, day=day, now=now):
        print(path, file=out)
    return EXIT_OK


def _when(config: GatewayConfig, args: argparse.Namespace) -> tuple[datetime, date]:
    now = datetime.now(config.zone) if args.now is None else _moment(args.now, config)
    if args.date is None:
        return now, previous_trading_day(now.astimezone(PLATFORM_ZONE).date(), calendar_of(config))
    text = args.date.replace("-", "")
    try:
        return now, datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"--date {args.date!r}: expected YYYYMMDD or YYYY-MM-DD") from None


def _moment(text: str, config: GatewayConfig) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--now {text!r}: expected an ISO time, e.g. 2024-10-09T12:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=config.zone)


def _display_order(item: Standing) -> tuple[str, str, str, date]:
    ob = item.obligation
    return (ob.institution, ob.station, ob.table, ob.period.first)


def _line(item: Standing) -> str:
    ob = item.obligation
    why = ""
    if item.last_rejected is not None and item.accepted is None:
        why = f"  last rejected: {item.last_rejected.finding or '?'} ({item.last_rejected.file_id})"
    elif item.accepted is not None:
        why = f"  {item.accepted.file_id}"
    return (
        f"{ob.station}  {ob.institution}  {ob.table}  {ob.period.label:<8}  due {_stamp(ob.deadline)}  "
        f"{item.state:<8}{why}"
    )


@functools.lru_cache(maxsize=256)
def _stamp(deadline: datetime) -> str:
    """A deadline at midnight reads as 24:00 of the day before: "by the end of the 9th", not "the 10th"."""
    local = deadline.astimezone(PLATFORM_ZONE)
    if local.time() == time(0):
        return f"{local.date() - timedelta(days=1):%Y-%m-%d} 24:00"
    return local.strftime("%Y-%m-%d %H:%M")
