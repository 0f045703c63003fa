"""Where each obligation stands: expected obligations matched with the files that arrived. Pure.

States, in this order of precedence for one obligation:

* ``received`` - a file was accepted by its deadline (forwarded, or held / deferred on its way);
* ``late``     - the first accepted file came after the deadline (a late or supplementary report);
* ``missing``  - nothing accepted and the deadline has passed;
* ``at-risk``  - nothing accepted and the deadline is within the configured horizon;
* ``rejected`` - files came and were all rejected (the last one's finding says why), deadline further off;
* ``pending``  - nothing yet, deadline further off.

A re-report (a higher batch) and an incremental table's empty report are accepted files like any other:
they count as received. Whether the obligation is met is decided by the first accepted file; a later
re-report does not make it late (its own receipt says LATE if it is).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from codes.tables import Frequency
from gateway.obligations.rules import Obligation


class State(StrEnum):
    RECEIVED = "received"
    LATE = "late"
    MISSING = "missing"
    AT_RISK = "at-risk"
    REJECTED = "rejected"
    PENDING = "pending"


OPEN_STATES = frozenset({State.MISSING, State.AT_RISK})
"""States a timer should wake someone for (``due`` exits 1 when any is listed)."""


class Arrival(NamedTuple):
    """One file that arrived for a report, as the store knows it (accepted or rejected)."""

    file_id: str
    station: str
    institution: str
    table: str
    data_date: str  # YYYYMMDD
    batch: int
    at: datetime  # when the gateway took it (aware)
    accepted: bool  # accepted: forwarded, or held/deferred on its way
    forwarded: bool = False
    finding: str | None = None  # a rejected file's first error code
    why: str | None = None  # and its message, as the receipt said it


class Standing(NamedTuple):
    """An obligation and where it stands."""

    obligation: Obligation
    state: State
    accepted: Arrival | None  # the first accepted file
    latest: Arrival | None  # the latest accepted file (a re-report, when batches differ)
    rejected: int  # rejected files for the period
    last_rejected: Arrival | None

    def as_dict(self) -> dict[str, object]:
        ob = self.obligation
        first, latest, bad = self.accepted, self.latest, self.last_rejected
        return {
            "station": ob.station,
            "transfer_code": ob.transfer_code,
            "institution": ob.institution,
            "name": ob.name,
            "table": ob.table,
            "period": ob.period.label,
            "deadline": _iso(ob.deadline),
            "state": self.state.value,
            "file_id": first.file_id if first else None,
            "received_at": first.at.isoformat() if first else None,
            "batch": f"{latest.batch:02d}" if latest else None,
            "forwarded": bool(latest and latest.forwarded),
            "rejected_files": self.rejected,
            "last_finding": bad.finding if bad else None,
            "last_rejected_file": bad.file_id if bad else None,
            "why": (bad.why or "") if bad else "",
        }


def standings(
    obligations: Iterable[Obligation],
    arrivals: Iterable[Arrival],
    frequency_of: Mapping[str, Frequency],
    *,
    now: datetime,
    at_risk: timedelta,
) -> list[Standing]:
    """Each obligation's state at ``now``; arrivals for tables or periods nobody owes are ignored."""
    accepted: dict[tuple[str, str, str, str], list[Arrival]] = {}
    rejected: dict[tuple[str, str, str, str], list[Arrival]] = {}
    for arrival in arrivals:
        frequency = frequency_of.get(arrival.table)
        if frequency is None:
            continue
        label = arrival.data_date if frequency is Frequency.DAILY else arrival.data_date[:6]
        key = (arrival.station, arrival.institution, arrival.table, label)
        (accepted if arrival.accepted else rejected).setdefault(key, []).append(arrival)
    make = Standing._make
    late, received, pending, rejected_state = State.LATE, State.RECEIVED, State.PENDING, State.REJECTED
    unmet: dict[datetime, State] = {}  # a deadline's state when nothing was accepted; few deadlines
    result = []
    for ob in obligations:  # 100,000 in a second's budget: unpacked, no calls in the common case
        station, _, institution, _, table, period, deadline = ob
        key = (station, institution, table, period.label)
        good = accepted.get(key)
        bad = rejected.get(key, ())
        if good is None:
            first = latest = None
        elif len(good) == 1:
            first = latest = good[0]
        else:
            first = min(good, key=_arrival_order)
            latest = max(good, key=lambda a: (a.batch, a.at))
        last_bad = max(bad, key=_arrival_order) if bad else None
        if first is not None:
            state = late if first.at > deadline else received
        else:
            state = unmet.get(deadline) or unmet.setdefault(deadline, _unmet(deadline, now, at_risk))
            if state is pending and bad:
                state = rejected_state
        result.append(make((ob, state, first, latest, len(bad), last_bad)))
    return result


@functools.lru_cache(maxsize=256)
def _iso(deadline: datetime) -> str:
    """A deadline as ISO text; a period's obligations share a handful of deadlines."""
    return deadline.isoformat()


def _arrival_order(arrival: Arrival) -> tuple[datetime, str]:
    return (arrival.at, arrival.file_id)


def _unmet(deadline: datetime, now: datetime, at_risk: timedelta) -> State:
    """The state of an obligation nothing was accepted for (``rejected`` is told apart by the caller)."""
    if now > deadline:
        return State.MISSING
    if deadline - now <= at_risk:
        return State.AT_RISK
    return State.PENDING
