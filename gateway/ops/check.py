"""``fdep-gateway check``: validate files offline with exactly the daemon's rules, before sending."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from gateway.pipeline.validate import Rules, Verdict, check_partners, partner_missing, validate_file
from gateway.text import visible
from validators.findings import Finding, Severity
from validators.pair import partner_rejected

_PROGRESS_MIN_FILES = 20
_PROGRESS_MIN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    path: Path
    name: str
    size: int


class UncheckablePathError(Exception):
    """A path given to ``check`` cannot be checked at all (missing, not a file or directory)."""


def collect(paths: Iterable[Path]) -> list[Target]:
    """Files named directly, and the regular files directly inside named directories, in name order."""
    targets: list[Target] = []
    for path in paths:
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink())
            targets.extend(Target(p, p.name, p.stat().st_size) for p in entries)
        elif path.is_file():
            targets.append(Target(path, path.name, path.stat().st_size))
        else:
            raise UncheckablePathError(f"{path}: no such file or directory")
    return targets


def check_all(targets: list[Target], rules: Rules, today: date, *, progress: bool) -> list[Verdict]:
    """Validate every target, then cross-check each TXT with the ZIP of the same stem."""
    total = sum(t.size for t in targets)
    show = progress and (len(targets) >= _PROGRESS_MIN_FILES or total >= _PROGRESS_MIN_BYTES)
    verdicts: list[Verdict] = []
    with tqdm(total=total, unit="B", unit_scale=True, disable=not show, file=sys.stderr) as bar:
        for target in targets:
            start = bar.n
            verdicts.append(validate_file(target.path, target.name, rules, today=today, progress=bar.update))
            bar.update(max(0, target.size - (bar.n - start)))  # what was not read: a ZIP, a bad name
    _pair_up(verdicts, rules)
    return verdicts


def _pair_up(verdicts: list[Verdict], rules: Rules) -> None:
    """As the daemon pairs them: a missing partner, the cross-check, then a pair is rejected as a unit."""
    by_name = {v.parsed.name: v for v in verdicts if v.parsed is not None}
    pairs: list[tuple[Verdict, Verdict]] = []
    for verdict in verdicts:
        if verdict.parsed is None or not verdict.needs_partner:
            continue
        partner = by_name.get(verdict.parsed.partner)
        if partner is None:
            verdict.findings.add(partner_missing(verdict, rules))
        else:
            pairs.append((verdict, partner))
            if not verdict.parsed.is_zip:
                for finding in check_partners(verdict, partner):
                    verdict.findings.add(finding)
    rejected = {id(v) for v in verdicts if v.rejected}  # before any of them is marked for its partner
    for verdict, partner in pairs:
        if id(partner) in rejected and id(verdict) not in rejected:
            verdict.findings.add(partner_rejected(partner.name))


def _position(finding: Finding) -> str:
    parts = []
    if finding.line:
        parts.append(f"第{finding.line}行 line {finding.line}")
    if finding.field_no:
        parts.append(f"field {finding.field_no} {finding.field}".rstrip())
    return ", ".join(parts) if parts else "文件 file"


def render_findings(findings: Sequence[Finding], total: int, out: IO[str], indent: str = "  ") -> None:
    """Each kept finding, then how many more were counted but not kept."""
    for finding in findings:
        render_finding(finding, out, indent)
    hidden = total - len(findings)
    if hidden > 0:
        out.write(f"{indent}… 另有 {hidden} 条问题未列出 / {hidden} more findings not listed\n")


def render_finding(finding: Finding, out: IO[str], indent: str = "  ") -> None:
    """A finding for people: code, where, the value (never for restricted tables), zh and en, the hint."""
    mark = "!" if finding.severity is Severity.ERROR else "i"
    value = f" [{visible(finding.value)}]" if finding.value is not None else ""
    more = indent + "    "
    out.write(f"{indent}{mark} {finding.code:<22} {_position(finding)}{value}\n")
    out.write(f"{more}{finding.message_zh}\n{more}{finding.message_en}\n")
    out.write(f"{more}提示：{finding.hint_zh}\n{more}Hint: {finding.hint_en}\n")


def render_text(verdicts: list[Verdict], out: IO[str]) -> None:
    """Human output: per file a verdict line, then each finding with its position, message and hint."""
    for verdict in verdicts:
        label = "拒收 BAD" if verdict.rejected else "通过 OK "
        table = f"{verdict.table.code} {verdict.table.title}" if verdict.table else "?"
        total = verdict.findings.total
        out.write(
            f"{label}  {visible(verdict.name)}  [{table}, {verdict.records} records, "
            f"{total} finding{'' if total == 1 else 's'}]\n"
        )
        render_findings(verdict.findings.items, total, out)
    bad = sum(v.rejected for v in verdicts)
    out.write(
        f"\n{len(verdicts)} 个文件：{len(verdicts) - bad} 通过，{bad} 拒收 / "
        f"{len(verdicts)} files: {len(verdicts) - bad} OK, {bad} rejected\n"
    )


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {
        "name": verdict.name,
        "ok": not verdict.rejected,
        "table": verdict.table.code if verdict.table else None,
        "size": verdict.size,
        "sha256": verdict.sha256,
        "records": verdict.records,
        "findings_total": verdict.findings.total,
        "findings": [f.to_dict() for f in verdict.findings.items],
    }


def render_json(verdicts: list[Verdict], out: IO[str]) -> None:
    document = {"files": [verdict_dict(v) for v in verdicts], "ok": not any(v.rejected for v in verdicts)}
    json.dump(document, out, ensure_ascii=False, indent=2)
    out.write("\n")
