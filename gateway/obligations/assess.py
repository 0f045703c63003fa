"""One call from a loaded config to every obligation's standing: what ``due``, ``report`` and the gauges
share. The received facts come in through ``ReceivedFacts``, so the store behind them can change."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.obligations.facts import LedgerFacts, ReceivedFacts
from gateway.obligations.rules import Obligation, expected
from gateway.obligations.status import Standing, standings
from gateway.windows import Calendar

LEDGER_NAME = ".gateway-ledger.sqlite"
"""The daemon's ledger file below ``spool_root`` (``gateway.daemon.start.ledger_path``)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which obligations to show: all by default."""

    institution: str | None = None
    table: str | None = None
    station: str | None = None

    def wants(self, ob: Obligation) -> bool:
        return (
            (self.institution is None or ob.institution == self.institution)
            and (self.table is None or ob.table == self.table)
            and (self.station is None or ob.station == self.station)
        )


def calendar_of(config: GatewayConfig) -> Calendar:
    return Calendar(config.holidays, config.workdays)


def ledger_facts(config: GatewayConfig) -> LedgerFacts:
    """The embedded store's facts: the ledger beside the spool and the history directory."""
    return LedgerFacts(config.spool_root / LEDGER_NAME, config.history.dir, config.zone)


def reports_dir(config: GatewayConfig) -> Path:
    return config.obligations.reports_dir or config.history.dir.parent / "reports"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while 100,000s of tuples are built: each collection would walk them
    all again (half of ``assess``'s time on 5,000 x 20 obligations). They hold no cycles, so nothing is
    kept longer; reference counting frees as usual. Restored as it was (another thread may pause too:
    the worst case is a collection a moment early or late)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def assess(
    config: GatewayConfig,
    facts: ReceivedFacts,
    *,
    day: date,
    now: datetime,
    calendar: Calendar | None = None,
    selection: Selection = Selection(),
) -> list[Standing]:
    """The standing of every report owed for the data date ``day`` (daily) and its month (monthly)."""
    calendar = calendar or calendar_of(config)
    test = frozenset(name for name, s in config.stations.items() if s.environment == "test")
    with gc_paused():
        owed = list(expected(config.transfer_codes, config.tables, test, day, calendar))
        if selection != Selection():
            owed = [ob for ob in owed if selection.wants(ob)]
        if not owed:
            return []
        first = min(ob.period.first for ob in owed)
        last = max(ob.period.last for ob in owed)
        frequency = {code: table.frequency for code, table in config.tables.items()}
        at_risk = timedelta(hours=config.obligations.at_risk_hours)
        return standings(owed, facts.arrivals(first, last), frequency, now=now, at_risk=at_risk)


OPEN_TRADING_DAYS = 5
"""``due`` without ``--date`` and the gauges look at this many past trading days' daily reports (more
than any T+N deadline in the catalogue keeps open) and at the past and current month's monthly ones."""


def open_days(today: date, calendar: Calendar, trading_days: int = OPEN_TRADING_DAYS) -> list[date]:
    """The data dates whose reports may still be open on ``today``: the last trading days before it and
    the last day of the previous month (its monthly reports are due early this month)."""
    days: list[date] = []
    day = today
    while len(days) < trading_days:
        day -= timedelta(days=1)
        if calendar.is_trading_day(day):
            days.append(day)
    days.append(today.replace(day=1) - timedelta(days=1))
    return sorted(set(days))


def assess_days(
    config: GatewayConfig,
    facts: ReceivedFacts,
    *,
    days: Iterable[date],
    now: datetime,
    calendar: Calendar | None = None,
    selection: Selection = Selection(),
) -> list[Standing]:
    """``assess`` over several data dates, each obligation once (a month's reports appear once)."""
    calendar = calendar or calendar_of(config)
    days = list(days)
    if len(days) == 1:
        return assess(config, facts, day=days[0], now=now, calendar=calendar, selection=selection)
    seen: dict[tuple[str, str, str, str], Standing] = {}
    for day in days:
        for item in assess(config, facts, day=day, now=now, calendar=calendar, selection=selection):
            ob = item.obligation
            seen.setdefault((ob.station, ob.institution, ob.table, ob.period.label), item)
    return list(seen.values())


def count_by(items: Iterable[Standing]) -> dict[str, int]:
    """How many standings are in each state."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.state.value] = counts.get(item.state.value, 0) + 1
    return counts
