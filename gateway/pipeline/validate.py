"""The validate step: one received file (and its TXT/ZIP partner) checked with the pure validators.

Shared by the daemon and ``fdep-gateway check`` so that an institution checking a file before sending
gets exactly the verdict the gateway will give.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from codes.tables import TableSpec
from gateway.config import GatewayConfig
from gateway.pipeline.scan import Progress, scan_text_file
from validators import findings
from validators.archive import ArchiveReport, ZipLimits, inspect_zip
from validators.attachments import AttachmentRow, Member
from validators.findings import Finding, FindingLog
from validators.names import ReportName, check_name, diagnose_name, parse_name
from validators.pair import check_pair, missing_partner
from validators.text import TextReport, TextValidator

_HASH_CHUNK = 1024 * 1024

INLINE_BYTES = 64 * 1024
"""A TXT this small is made durable and read in a thread step shared with other files' short steps (in
a burst, read there and made durable with the other files in flight: one syncfs for hundreds), and
validated on the event loop (well under a millisecond): under load, handing it to a thread and back
costs more than the work, because each hand-off waits for the GIL (bench/burst.py: +9% files/s). A
larger file's sync may take seconds: it gets a thread of its own, and so does its validation. A ZIP
always goes to a thread: 64 KiB of ZIP may expand to many MB."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What validation needs from the config; small and picklable for worker processes."""

    tables: Mapping[str, TableSpec]
    systems: tuple[str, ...]
    max_file_bytes: int
    zip_limits: ZipLimits
    pair_timeout_minutes: int

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Rules:
        limits = config.limits
        return cls(
            tables=dict(config.tables),
            systems=config.systems,
            max_file_bytes=limits.max_file_bytes,
            zip_limits=ZipLimits(
                max_members=limits.zip_max_members,
                max_total_bytes=limits.zip_max_total_bytes,
                max_ratio=limits.zip_max_ratio,
            ),
            pair_timeout_minutes=max(1, round(config.pair_timeout_seconds / 60)),
        )


@dataclass(slots=True)
class Verdict:
    """Everything validation learnt about one file; findings decide whether it is rejected."""

    name: str
    parsed: ReportName | None
    table: TableSpec | None
    size: int = 0
    sha256: str = ""
    mtime_ns: int = 0  # the file's mtime before it was read: a later write shows as a new one
    records: int = 0
    findings: FindingLog = field(default_factory=FindingLog)
    attachment_rows: list[AttachmentRow] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.findings.has_errors

    @property
    def restricted(self) -> bool:
        return self.table is not None and self.table.restricted

    @property
    def needs_partner(self) -> bool:
        """A ZIP always needs its TXT; an attachment TXT needs its ZIP when a row adds or updates one."""
        if self.parsed is None or self.table is None or not self.table.attachments:
            return False
        if self.parsed.is_zip:
            return True
        return any(row.kind in ("A", "U") for row in self.attachment_rows)


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def validate_file(
    path: Path,
    name: str,
    rules: Rules,
    *,
    today: date,
    pool: Executor | None = None,
    progress: Progress | None = None,
) -> Verdict:
    """Check one file's name and content; blocking, run it off the event loop. ``progress`` is told
    the bytes of a TXT as they are read."""
    verdict, content_name = _named(name, rules, today)
    table = verdict.table
    before = path.stat()
    size, verdict.mtime_ns = before.st_size, before.st_mtime_ns
    if size > rules.max_file_bytes:
        verdict.size = size
        verdict.findings.add(findings.make("FILE_TOO_LARGE", size=size, max=rules.max_file_bytes))
        return verdict
    if content_name is not None and table is not None and not content_name.is_zip:
        scanned = scan_text_file(
            path, table, org=content_name.org, date=content_name.date, pool=pool, progress=progress
        )
        verdict.sha256, verdict.size = scanned.sha256, scanned.size
        _take_report(verdict, scanned.report)
        return verdict
    verdict.sha256, verdict.size = _sha256_of(path)
    if content_name is not None and table is not None and content_name.is_zip:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as stream:
            _take_archive(verdict, inspect_zip(stream, limits=rules.zip_limits))
    return verdict


def validate_bytes(data: bytes, name: str, rules: Rules, *, today: date, mtime_ns: int = 0) -> Verdict:
    """``validate_file`` for a file already read (the daemon reads a small TXT while making it durable):
    the same verdict, without I/O, so the event loop can run it without waiting for the GIL at a
    system call."""
    verdict, content_name = _named(name, rules, today)
    table = verdict.table
    verdict.mtime_ns, verdict.size = mtime_ns, len(data)
    if len(data) > rules.max_file_bytes:
        verdict.findings.add(findings.make("FILE_TOO_LARGE", size=len(data), max=rules.max_file_bytes))
        return verdict
    verdict.sha256 = hashlib.sha256(data).hexdigest()
    if content_name is not None and table is not None and not content_name.is_zip:
        validator = TextValidator(table, org=content_name.org, date=content_name.date)
        validator.feed(data)
        _take_report(verdict, validator.finish())
    elif content_name is not None and table is not None:
        _take_archive(verdict, inspect_zip(io.BytesIO(data), limits=rules.zip_limits))
    return verdict


def _named(name: str, rules: Rules, today: date) -> tuple[Verdict, ReportName | None]:
    """The name's findings, and the name the content is checked as."""
    checked = check_name(name, tables=rules.tables, systems=rules.systems, today=today)
    # A near-miss name with a derivable correction still gets its content checked (as the corrected
    # name): the sender learns every problem in one round instead of one per attempt.
    content_name = checked.name or _corrected(name)
    table = rules.tables.get(content_name.table) if content_name else None
    verdict = Verdict(name=name, parsed=checked.name, table=table)
    verdict.findings.extend(checked.findings)
    return verdict, content_name


def _take_report(verdict: Verdict, report: TextReport) -> None:
    verdict.records = report.records
    verdict.attachment_rows = report.attachment_rows
    verdict.findings.absorb(report.findings, report.total)


def _take_archive(verdict: Verdict, archive: ArchiveReport) -> None:
    verdict.members = archive.members
    verdict.findings.extend(archive.findings)


def _corrected(name: str) -> ReportName | None:
    suggestion = diagnose_name(name).suggestion
    return parse_name(suggestion) if suggestion else None


def check_partners(txt: Verdict, zipped: Verdict) -> list[Finding]:
    """The TXT <-> ZIP cross-check, once both halves are sound enough to compare."""
    if txt.rejected or zipped.rejected or txt.table is None:
        return []
    field_nos = {spec.name: i + 1 for i, spec in enumerate(txt.table.fields)}
    return check_pair(txt.attachment_rows, zipped.members, field_nos=field_nos)


def partner_missing(verdict: Verdict, rules: Rules) -> Finding:
    return missing_partner(verdict.name, rules.pair_timeout_minutes)
