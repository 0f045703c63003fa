"""Obligations on a fixed clock across National Day 2024 (1-7 October off; Sunday 29 September and
Saturday 12 October are make-up working days, not trading days): due dates and states for daily and
monthly tables, re-reports, incremental empty reports and a test code that expired."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from codes.registry import TransferCode
from codes.tables import Deadline, Frequency, bundled_tables
from gateway.obligations.rules import Obligation, expected, previous_trading_day
from gateway.obligations.status import Arrival, State, standings
from gateway.windows import PLATFORM_ZONE, Calendar, deadline_of

CAL = Calendar()
TABLES = bundled_tables()
FREQUENCY = {code: t.frequency for code, t in TABLES.items()}
BJ = PLATFORM_ZONE
AT_RISK = timedelta(hours=24)
ORG = "41210000"


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=BJ)


def owed(day: date, **code: object) -> list[Obligation]:
    entry = TransferCode.model_validate({"institution": ORG, "stations": ["k6666"], **code})
    return list(expected({"TC1": entry}, TABLES, frozenset({"k1237"}), day, CAL))


def arrival(
    table: str, data_date: str, when: datetime, *, accepted: bool = True, batch: int = 1, **kw: object
) -> Arrival:
    return Arrival(
        file_id=f"{when:%Y%m%d-%H%M%S}-{table}-{batch:02d}-{accepted:d}",
        station="k6666",
        institution=ORG,
        table=table,
        data_date=data_date,
        batch=batch,
        at=when,
        accepted=accepted,
        forwarded=accepted,
        **kw,  # type: ignore[arg-type]
    )


def state_of(table: str, day: date, now: datetime, *arrivals: Arrival) -> State:
    (found,) = [
        s
        for s in standings(owed(day), arrivals, FREQUENCY, now=now, at_risk=AT_RISK)
        if s.obligation.table == table
    ]
    return found.state


def test_daily_deadline_skips_the_holiday_week_and_the_make_up_saturday() -> None:
    d2001 = TABLES["D2001"]
    # Friday 27 Sep: trading days after it are Mon 30 Sep and Tue 8 Oct (Sun 29 Sep works, does not trade)
    assert deadline_of(d2001, date(2024, 9, 27), CAL) == at(2024, 10, 9)
    # Monday 30 Sep: 8 and 9 October; due by the end of the 9th
    assert deadline_of(d2001, date(2024, 9, 30), CAL) == at(2024, 10, 10)
    # Friday 11 Oct: Saturday 12 Oct is a make-up working day but not a trading day: Mon 14, Tue 15
    assert deadline_of(d2001, date(2024, 10, 11), CAL) == at(2024, 10, 16)


def test_a_table_can_set_its_own_rule() -> None:
    t1 = TABLES["D2001"].model_copy(update={"deadline": Deadline(days=1)})
    assert deadline_of(t1, date(2024, 9, 30), CAL) == at(2024, 10, 9)  # plain T+1
    monthly = TABLES["D1001"].model_copy(
        update={"deadline": Deadline(days=5, at=datetime(2024, 1, 1, 17).time())}
    )
    assert deadline_of(monthly, date(2024, 9, 30), CAL) == at(2024, 10, 12, 17)  # the make-up Saturday


def test_monthly_deadline_counts_the_make_up_saturday() -> None:
    # October 2024 working days: 8, 9, 10, 11, 12 (Saturday, make-up), 14, 15 -> the 7th is the 15th
    assert deadline_of(TABLES["D1001"], date(2024, 9, 30), CAL) == at(2024, 10, 15, 11, 30)
    assert deadline_of(TABLES["D1001"], date(2024, 9, 1), CAL) == at(2024, 10, 15, 11, 30)


def test_what_is_owed_for_a_data_date() -> None:
    found = {(o.table, o.period.label, o.deadline) for o in owed(date(2024, 9, 30))}
    assert found == {
        ("D1001", "202409", at(2024, 10, 15, 11, 30)),
        ("D1005", "202409", at(2024, 10, 15, 11, 30)),
        ("D2001", "20240930", at(2024, 10, 10)),
        ("D3006", "202409", at(2024, 10, 15, 11, 30)),
    }
    # a holiday and a make-up Sunday are not trading days: no daily report is owed for them
    assert {o.table for o in owed(date(2024, 10, 3))} == {"D1001", "D1005", "D3006"}
    assert {o.table for o in owed(date(2024, 9, 29))} == {"D1001", "D1005", "D3006"}
    # owes narrows; tables narrows when owes is absent
    assert {o.table for o in owed(date(2024, 9, 30), owes=["D2001"])} == {"D2001"}
    assert {o.table for o in owed(date(2024, 9, 30), tables=["D1001"])} == {"D1001"}


def test_a_test_code_expires_after_30_days_and_validity_bounds_periods() -> None:
    test_code = {"stations": ["k1237", "k6666"], "valid_from": "2024-09-09", "owes": ["D2001"]}
    # day 22 of the test code: owed on both stations
    assert {o.station for o in owed(date(2024, 9, 30), **test_code)} == {"k1237", "k6666"}
    # 8 October is 29 days later, the 30th day: still owed; 9 October is past it on the test station only
    assert {o.station for o in owed(date(2024, 10, 8), **test_code)} == {"k1237", "k6666"}
    assert {o.station for o in owed(date(2024, 10, 9), **test_code)} == {"k6666"}
    # before valid_from and after valid_until nothing is owed anywhere
    assert owed(date(2024, 9, 6), **test_code) == []
    ended = {"valid_until": "2024-09-27", "owes": ["D2001", "D1001"]}
    assert {o.table for o in owed(date(2024, 9, 27), **ended)} == {"D2001"}  # September's last day is after
    assert owed(date(2024, 9, 30), **ended) == []


@pytest.mark.parametrize(
    ("now", "expected_state"),
    [
        (at(2024, 10, 8, 9), State.PENDING),  # deadline end of 9 Oct: more than 24 h away
        (at(2024, 10, 9, 0, 1), State.AT_RISK),  # within 24 h, nothing accepted
        (at(2024, 10, 10, 0, 1), State.MISSING),  # deadline passed
    ],
)
def test_nothing_arrived(now: datetime, expected_state: State) -> None:
    assert state_of("D2001", date(2024, 9, 30), now) is expected_state


def test_received_late_and_rejected() -> None:
    day, now = date(2024, 9, 30), at(2024, 10, 20)
    assert (
        state_of("D2001", day, now, arrival("D2001", "20240930", at(2024, 10, 9, 23, 59))) is State.RECEIVED
    )
    assert state_of("D2001", day, now, arrival("D2001", "20240930", at(2024, 10, 10, 8))) is State.LATE
    bad = arrival("D2001", "20240930", at(2024, 10, 8, 9), accepted=False, finding="BOM_PRESENT")
    assert state_of("D2001", day, at(2024, 10, 8, 10), bad) is State.REJECTED
    (found,) = standings(owed(day, owes=["D2001"]), [bad], FREQUENCY, now=now, at_risk=AT_RISK)
    assert (found.state, found.rejected, found.last_rejected) == (State.MISSING, 1, bad)
    assert found.as_dict()["last_finding"] == "BOM_PRESENT"
    # a file for another data date or another institution does not count
    other = arrival("D2001", "20240927", at(2024, 10, 8, 9))
    assert state_of("D2001", day, now, other) is State.MISSING


def test_a_monthly_report_by_11_30_on_the_seventh_working_day() -> None:
    day = date(2024, 9, 30)
    on_time = arrival("D1001", "20240930", at(2024, 10, 15, 11, 30))
    late = arrival("D1001", "20240930", at(2024, 10, 15, 11, 31))
    assert state_of("D1001", day, at(2024, 10, 20), on_time) is State.RECEIVED
    assert state_of("D1001", day, at(2024, 10, 20), late) is State.LATE
    assert state_of("D1001", day, at(2024, 10, 14, 12)) is State.AT_RISK  # the make-up Saturday counted
    assert state_of("D1001", day, at(2024, 10, 11, 12)) is State.PENDING


def test_a_re_report_counts_as_received() -> None:
    day, now = date(2024, 9, 30), at(2024, 10, 20)
    first_bad = arrival("D2001", "20240930", at(2024, 10, 8, 9), accepted=False, finding="FIELD_FORMAT")
    re_report = arrival("D2001", "20240930", at(2024, 10, 9, 9), batch=2)
    assert state_of("D2001", day, now, first_bad, re_report) is State.RECEIVED
    # met by batch 01 on time; a batch 02 after the deadline does not make the obligation late
    on_time = arrival("D2001", "20240930", at(2024, 10, 8, 9))
    later = arrival("D2001", "20240930", at(2024, 10, 11, 9), batch=2)
    (found,) = standings(owed(day, owes=["D2001"]), [later, on_time], FREQUENCY, now=now, at_risk=AT_RISK)
    assert (found.state, found.accepted, found.latest) == (State.RECEIVED, on_time, later)


def test_the_default_data_date_is_the_last_trading_day() -> None:
    assert previous_trading_day(date(2024, 10, 8), CAL) == date(2024, 9, 30)
    assert previous_trading_day(date(2024, 10, 14), CAL) == date(2024, 10, 11)
    assert FREQUENCY["D2001"] is Frequency.DAILY
