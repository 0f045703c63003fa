"""A claimed file, and the value the steps hand on about it: what validation, routing and later steps
found."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codes.tables import TableSpec
from gateway.pipeline.route import Routed
from gateway.pipeline.validate import Verdict
from spool.entries import EntryKind
from validators.findings import MAX_REPORTED, Finding, Severity
from validators.names import ReportName, parse_name


@dataclass(slots=True)
class Item:
    """A claimed file: who sent it, its id and name. ``path`` is the one field that changes: where the
    file is now (work/, deferred/, held/, ...), as the recorder moves it."""

    station: str
    transfer_code: str
    file_id: str
    name: str  # as dropped in in/
    path: Path
    kind: EntryKind = EntryKind.REGULAR
    institution: str | None = None  # of the mailbox's transfer code, known before validation
    resumed: bool = False  # taken up again (recovery, a retry): the ledger may know it already

    def fresh(self) -> Item:
        """The same claimed file where it is now, to try it again."""
        return replace(self, resumed=True)


@dataclass(frozen=True, slots=True)
class Sound:
    """A file that passed validation and routing: everything deciding and forwarding need, typed."""

    verdict: Verdict
    name: ReportName
    table: TableSpec
    routed: Routed


@dataclass(frozen=True, slots=True, eq=False)
class Checked:
    """One file as the steps hand it on: the claimed item, the verdict and route those steps returned,
    and the findings of later steps (route, pairing, decision, window, core). Never changed: a step
    that finds something returns a new one (``adding``). Compared as the one file it is."""

    item: Item
    verdict: Verdict | None = None
    routed: Routed | None = None
    found: tuple[Finding, ...] = ()  # kept in detail, at most MAX_REPORTED
    uncounted: int = 0  # found beyond those kept (a rejection logged before a crash)

    def adding(self, *found: Finding) -> Checked:
        kept = (self.found + found)[:MAX_REPORTED]
        return replace(self, found=kept, uncounted=self.uncounted + len(self.found) + len(found) - len(kept))

    def absorbing(self, found: list[Finding], total: int) -> Checked:
        """With another report's kept findings and its count of all of them."""
        more = self.adding(*found)
        return replace(more, uncounted=more.uncounted + total - len(found))

    @property
    def sound(self) -> Sound:
        """The validated facts of a file that is not rejected; reading them earlier is a bug."""
        verdict, routed = self.verdict, self.routed
        if verdict is None or verdict.parsed is None or verdict.table is None or routed is None:
            raise RuntimeError(f"{self.item.file_id} has not been validated and routed")
        return Sound(verdict, verdict.parsed, verdict.table, routed)

    @property
    def is_zip(self) -> bool:
        return bool(self.verdict and self.verdict.parsed and self.verdict.parsed.is_zip)

    @property
    def findings(self) -> list[Finding]:
        """Everything found, restricted tables' values dropped: what receipts and history may show."""
        found = (self.verdict.findings.items if self.verdict else []) + list(self.found)
        if self.restricted:
            return [f.without_value() for f in found]
        return found

    @property
    def findings_total(self) -> int:
        return (self.verdict.findings.total if self.verdict else 0) + len(self.found) + self.uncounted

    @property
    def rejected(self) -> bool:
        return (
            self.item.kind is not EntryKind.REGULAR
            or any(f.severity is Severity.ERROR for f in self.found)
            or bool(self.verdict and self.verdict.rejected)
        )

    @property
    def restricted(self) -> bool:
        return bool(self.verdict and self.verdict.restricted)

    @property
    def records(self) -> int:
        return self.verdict.records if self.verdict else 0

    @property
    def facts(self) -> dict[str, Any]:
        """The history fields that describe the file (spec 12), whatever happened to it."""
        item = self.item
        parsed = self.verdict.parsed if self.verdict else parse_name(item.name)
        return {
            "file_id": item.file_id,
            "station": item.station,
            "transfer_code": item.transfer_code,
            "institution": self.routed.institution if self.routed else item.institution,
            "table": parsed.table if parsed else None,
            "date": parsed.date if parsed else None,
            "batch": f"{parsed.batch:02d}" if parsed else None,
            "mode": parsed.mode if parsed else None,
            "name": item.name,
            "size": self.verdict.size if self.verdict else None,
            "sha256": (self.verdict.sha256 or None) if self.verdict else None,
            "records": self.verdict.records if self.verdict and self.verdict.table else None,
        }
