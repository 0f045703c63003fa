"""Expected obligations: periods, deadlines and who owes what, from catalogue, registry and calendar.

Pure: no I/O and no clock. Deadlines reuse ``gateway.windows`` (its calendar and its monthly rule).
"""

from __future__ import annotations

import calendar as months
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

from codes.registry import TransferCode
from codes.tables import Frequency, TableSpec
from gateway.windows import Calendar, deadline_of


@dataclass(frozen=True, slots=True)
class Period:
    """What one report covers: a data date (daily) or a month (monthly)."""

    frequency: Frequency
    first: date
    last: date
    label: str  # ``YYYYMMDD`` for a day, ``YYYYMM`` for a month: how files, CSVs and the CLI name it


def period_of(frequency: Frequency, data_date: date) -> Period:
    """The period a file's data date reports for."""
    if frequency is Frequency.DAILY:
        return Period(frequency, data_date, data_date, f"{data_date:%Y%m%d}")
    last = months.monthrange(data_date.year, data_date.month)[1]
    return Period(frequency, data_date.replace(day=1), data_date.replace(day=last), f"{data_date:%Y%m}")


def period_label(frequency: Frequency, data_date: str) -> str:
    """``period_of(...).label`` straight from a ``YYYYMMDD`` data date, without building dates."""
    return data_date if frequency is Frequency.DAILY else data_date[:6]


class Obligation(NamedTuple):
    """One report owed: by an institution, on a station, of a table, for a period, by a deadline."""

    station: str
    transfer_code: str
    institution: str
    name: str
    table: str
    period: Period
    deadline: datetime


def period_asked(frequency: Frequency, day: date, calendar: Calendar) -> Period | None:
    """The period of ``frequency`` that the data date ``day`` asks about: a daily table is owed for
    trading days only; a monthly one for the month of ``day``."""
    if frequency is Frequency.DAILY and not calendar.is_trading_day(day):
        return None
    return period_of(frequency, day)


def expected(
    registry: Mapping[str, TransferCode],
    tables: Mapping[str, TableSpec],
    test_stations: frozenset[str],
    day: date,
    calendar: Calendar,
) -> Iterator[Obligation]:
    """Every report owed for the data date ``day``: daily tables for that day, monthly ones for its month.

    One obligation per (station, institution, table, period), whatever number of codes an institution
    has there; a code owes only for periods its validity covers (a month: its last day). In the order
    operators read them: by institution, station, table.
    """
    periods = {f: period_asked(f, day, calendar) for f in Frequency}
    # per table, once: its period for ``day`` and that period's deadline (None: not owed for ``day``)
    due: dict[str, tuple[Period, datetime] | None] = {}
    for code, table in tables.items():
        period = periods[table.frequency]
        due[code] = None if period is None else (period, deadline_of(table, period.last, calendar))
    catalogue = tuple(sorted(tables))
    make = Obligation._make  # tuple.__new__: a third of the keyword constructor's time, 100,000 times
    seen: set[tuple[str, str, str]] = set()
    for code, entry in sorted(registry.items(), key=lambda item: (item[1].institution, item[0])):
        institution, name = entry.institution, entry.name
        owed = sorted(entry.owed_tables(catalogue))
        for station in sorted(entry.stations):
            test = station in test_stations
            valid = {p.last: entry.valid_on(p.last, test_station=test) for p in periods.values() if p}
            for table_code in owed:
                found = due.get(table_code)
                if found is None or not valid[found[0].last]:
                    continue
                key = (station, institution, table_code)
                if key in seen:
                    continue
                seen.add(key)
                yield make((station, code, institution, name, table_code, found[0], found[1]))


def previous_trading_day(today: date, calendar: Calendar) -> date:
    """The most recent trading day before ``today``: the data date ``due`` asks about by default."""
    day = today - timedelta(days=1)
    while not calendar.is_trading_day(day):
        day -= timedelta(days=1)
    return day
