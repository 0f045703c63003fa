"""A claimed file on its way through the pipeline, and the facts every record of it repeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codes.tables import TableSpec
from gateway.pipeline.route import Routed
from gateway.pipeline.validate import Verdict
from spool.entries import EntryKind
from validators.findings import Finding, FindingLog
from validators.names import ReportName, parse_name


@dataclass(frozen=True, slots=True)
class Sound:
    """A file that passed validation and routing: everything deciding and forwarding need, typed."""

    verdict: Verdict
    name: ReportName
    table: TableSpec
    routed: Routed


@dataclass(slots=True)
class Item:
    station: str
    transfer_code: str
    file_id: str
    name: str  # as dropped in in/
    path: Path  # where it is now (work/, deferred/, ...)
    kind: EntryKind = EntryKind.REGULAR
    institution: str | None = None  # of the mailbox's transfer code, known before validation
    verdict: Verdict | None = None
    routed: Routed | None = None
    extra: FindingLog = field(default_factory=FindingLog)  # route, decision and core findings
    resumed: bool = False  # taken up again (recovery, a retry): the ledger may know it already

    def fresh(self) -> Item:
        """The same claimed file where it is now, with nothing learnt about it yet (to try it again)."""
        return Item(
            self.station,
            self.transfer_code,
            self.file_id,
            self.name,
            self.path,
            self.kind,
            self.institution,
            resumed=True,
        )

    def sound(self) -> Sound:
        """The validated facts of a file that is not rejected; calling it earlier is a bug."""
        verdict, routed = self.verdict, self.routed
        if verdict is None or verdict.parsed is None or verdict.table is None or routed is None:
            raise RuntimeError(f"{self.file_id} has not been validated and routed")
        return Sound(verdict, verdict.parsed, verdict.table, routed)

    @property
    def is_zip(self) -> bool:
        return bool(self.verdict and self.verdict.parsed and self.verdict.parsed.is_zip)

    @property
    def findings(self) -> list[Finding]:
        """Everything found, restricted tables' values dropped: what receipts and history may show."""
        found = (self.verdict.findings.items if self.verdict else []) + self.extra.items
        if self.restricted:
            return [f.without_value() for f in found]
        return found

    @property
    def findings_total(self) -> int:
        return (self.verdict.findings.total if self.verdict else 0) + self.extra.total

    @property
    def rejected(self) -> bool:
        return (
            self.kind is not EntryKind.REGULAR
            or self.extra.has_errors
            or bool(self.verdict and self.verdict.rejected)
        )

    @property
    def restricted(self) -> bool:
        return bool(self.verdict and self.verdict.restricted)

    @property
    def records(self) -> int:
        return self.verdict.records if self.verdict else 0

    def facts(self) -> dict[str, Any]:
        """The history fields that describe the file (spec 12), whatever happened to it."""
        parsed = self.verdict.parsed if self.verdict else parse_name(self.name)
        return {
            "file_id": self.file_id,
            "station": self.station,
            "transfer_code": self.transfer_code,
            "institution": self.routed.institution if self.routed else self.institution,
            "table": parsed.table if parsed else None,
            "date": parsed.date if parsed else None,
            "batch": f"{parsed.batch:02d}" if parsed else None,
            "mode": parsed.mode if parsed else None,
            "name": self.name,
            "size": self.verdict.size if self.verdict else None,
            "sha256": (self.verdict.sha256 or None) if self.verdict else None,
            "records": self.verdict.records if self.verdict and self.verdict.table else None,
        }
