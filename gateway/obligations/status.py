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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from codes.tables import Frequency
from gateway.obligations.rules import Obligation, period_label


class State(StrEnum):
    RECEIVED = "received"
    LATE = "late"
    MISSING = "missing"
    AT_RISK = "at-risk"
    REJECTED = "rejected"
    PENDING = "pending"


OPEN_STATES = frozenset({State.MISSING, State.AT_RISK})
"""States a timer should wake someone for (``due`` exits 1 when any is listed)."""


@dataclass(frozen=True, slots=True)
class Arrival:
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
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Standing:
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
            "deadline": ob.deadline.isoformat(),
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
        key = (
            arrival.station,
            arrival.institution,
            arrival.table,
            period_label(frequency, arrival.data_date),
        )
        (accepted if arrival.accepted else rejected).setdefault(key, []).append(arrival)
    result = []
    for ob in obligations:
        key = (ob.station, ob.institution, ob.table, ob.period.label)
        good = accepted.get(key, ())
        bad = rejected.get(key, ())
        first = min(good, key=_arrival_order, default=None)
        latest = max(good, key=lambda a: (a.batch, a.at), default=None)
        last_bad = max(bad, key=_arrival_order, default=None)
        result.append(
            Standing(ob, _state(ob, first, bool(bad), now, at_risk), first, latest, len(bad), last_bad)
        )
    return result


def _arrival_order(arrival: Arrival) -> tuple[datetime, str]:
    return (arrival.at, arrival.file_id)


def _state(
    ob: Obligation, first: Arrival | None, any_rejected: bool, now: datetime, at_risk: timedelta
) -> State:
    if first is not None:
        return State.LATE if first.at > ob.deadline else State.RECEIVED
    if now > ob.deadline:
        return State.MISSING
    if ob.deadline - now <= at_risk:
        return State.AT_RISK
    return State.REJECTED if any_rejected else State.PENDING
