"""The route step: who sent a file (the mailbox's transfer code), for whom, and where it may go.

Pure: the mailbox path names station and transfer code, the parsed name says which institution and
table; the registry decides. Spec 14: a transfer code can never deliver another institution's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from codes.registry import TransferCode
from gateway.config import GatewayConfig
from validators import findings
from validators.findings import Finding
from validators.names import ReportName


@dataclass(frozen=True, slots=True)
class Routed:
    station: str
    transfer_code: str
    entry: TransferCode
    route: str
    environment: str

    @property
    def institution(self) -> str:
        return self.entry.institution


class Route(NamedTuple):
    """The route step's answer: where the file may go (None: nowhere), and what forbids or questions it."""

    routed: Routed | None
    findings: list[Finding]


def route(config: GatewayConfig, station: str, transfer_code: str, name: ReportName | None) -> Route:
    """The route for a file from ``station``/``transfer_code``, or the findings that forbid one."""
    entry = config.transfer_codes.get(transfer_code)
    if entry is None:
        unknown = findings.make("UNKNOWN_TRANSFER_CODE", transfer_code=transfer_code, station=station)
        return Route(None, [unknown])
    if station not in entry.stations:
        elsewhere = findings.make("STATION_NOT_ALLOWED", transfer_code=transfer_code, station=station)
        return Route(None, [elsewhere])
    problems: list[Finding] = []
    if name is not None:
        if name.org != entry.institution:
            problems.append(findings.make("ORG_MISMATCH", org=name.org, expected=entry.institution))
        if not entry.allows_table(name.table):
            problems.append(findings.make("TABLE_NOT_ALLOWED", transfer_code=transfer_code, table=name.table))
    routed = Routed(
        station=station,
        transfer_code=transfer_code,
        entry=entry,
        route=config.route_for(station, entry),
        environment=config.stations[station].environment,
    )
    return Route(routed, problems)
