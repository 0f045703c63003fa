"""File names (spec 3): the exact grammar, the checks against config and catalogue, and near-miss help.

The grammar itself lives in ``validators.name_grammar`` and the near-miss diagnosis and repair in
``validators.name_repair``; this module checks a name against the configuration and the table
catalogue and re-exports both, so ``validators.names`` stays the one import for callers. Names are
echoed with control characters escaped.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from codes.tables import TableSpec
from validators.display import visible
from validators.findings import Finding, make
from validators.name_grammar import ReportName, parse_name
from validators.name_repair import NameDiagnosis, Problem, diagnose_name

__all__ = [
    "NameCheck",
    "NameDiagnosis",
    "Problem",
    "ReportName",
    "check_name",
    "diagnose_name",
    "parse_name",
]


@dataclass(slots=True)
class NameCheck:
    """The parsed name (whenever the grammar matched) and everything wrong with it."""

    name: ReportName | None
    findings: list[Finding]


def check_name(
    name: str, *, tables: Mapping[str, TableSpec], systems: Collection[str], today: datetime.date
) -> NameCheck:
    """All name findings that need no transfer code (routing adds ORG_MISMATCH and TABLE_NOT_ALLOWED)."""
    parsed = parse_name(name)
    if parsed is None:
        diagnosis = diagnose_name(name)
        return NameCheck(None, [_name_invalid(diagnosis.problems, diagnosis.suggestion, visible(name))])
    return NameCheck(parsed, _rule_findings(parsed, tables, systems, today))


def _rule_findings(
    parsed: ReportName, tables: Mapping[str, TableSpec], systems: Collection[str], today: datetime.date
) -> list[Finding]:
    found: list[Finding] = []
    if parsed.system not in systems:
        allowed = ", ".join(sorted(systems)) or "-"
        found.append(make("SYSTEM_UNKNOWN", value=parsed.system, system=parsed.system, allowed=allowed))
    table = tables.get(parsed.table)
    if table is None:
        found.append(make("TABLE_UNKNOWN", value=parsed.table, table=parsed.table))
    elif parsed.version not in table.versions:
        found.append(
            make(
                "VERSION_UNSUPPORTED",
                value=parsed.version,
                table=parsed.table,
                version=parsed.version,
                supported=", ".join(table.versions),
            )
        )
    found.extend(_date_findings(parsed.date, today))
    if parsed.batch == 0:  # the regex admits 00, the prose of spec 3 says batches run 01..99
        found.append(
            _name_invalid(
                (
                    Problem(
                        "批次号 00 无效，批次号为 01 至 99",
                        "batch 00 is not valid, batches run 01 to 99",
                        False,
                    ),
                ),
                None,
                parsed.name,
            )
        )
    if table is not None and parsed.mode not in table.modes:
        allowed = "/".join(table.modes)
        found.append(
            make("MODE_INVALID", value=parsed.mode, table=parsed.table, mode=parsed.mode, allowed=allowed)
        )
    if table is not None and parsed.is_zip and not table.attachments:
        problem = Problem(
            f"表 {parsed.table} 没有附件，只接受 .TXT 文件，不接受 .ZIP",
            f"table {parsed.table} has no attachments, so it takes a .TXT file and never a .ZIP",
            repaired=False,
        )
        found.append(_name_invalid((problem,), None, parsed.name))
    return found


def _date_findings(date: str, today: datetime.date) -> list[Finding]:
    try:
        day = datetime.date(int(date[:4]), int(date[4:6]), int(date[6:]))
    except ValueError:
        return [make("DATE_INVALID", value=date, date=date)]
    if day > today:
        return [make("DATE_IN_FUTURE", value=date, date=date, today=today.strftime("%Y%m%d"))]
    return []


def _name_invalid(problems: tuple[Problem, ...], suggestion: str | None, shown_name: str) -> Finding:
    return make(
        "NAME_INVALID",
        value=shown_name,
        problem_zh="；".join(p.zh for p in problems),
        problem_en="; ".join(p.en for p in problems),
        suggestion_zh=f"；可能的正确文件名：{suggestion}" if suggestion else "",
        suggestion_en=f"; the corrected name may be: {suggestion}" if suggestion else "",
    )
