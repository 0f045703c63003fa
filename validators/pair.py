"""The TXT <-> ZIP cross-check of an attachment table (spec 6, last bullet).

Member names may appear in messages (attachment names are not restricted content); other field
values travel only in ``Finding.value``. Names are compared after NFC normalisation, so a row typed on
Windows matches a member zipped on macOS (which stores decomposed names); the archive check already
rejects two members that are equal after that normalisation. Two add/update rows may name the same
member: the spec only requires every row to find exactly one member.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from validators.attachments import AttachmentRow, Member
from validators.findings import Finding, make

D3006_FIELD_NOS: Mapping[str, int] = MappingProxyType({"FJMC": 5, "WJDX": 6, "SHA256": 7})
"""1-based positions of the fields the check names, in table D3006 (other attachment tables pass theirs)."""

_NAMING_KINDS = ("A", "U")  # BGLX add and update name a member; delete names none
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


def check_pair(
    rows: Sequence[AttachmentRow],
    members: Sequence[Member],
    *,
    field_nos: Mapping[str, int] = D3006_FIELD_NOS,
) -> list[Finding]:
    """Every add/update row names exactly one member with its size and sha256; every member is named."""
    by_key: dict[str, list[Member]] = {}
    for member in members:
        by_key.setdefault(_key(member.name), []).append(member)
    named: set[str] = set()
    findings: list[Finding] = []
    for row in rows:
        if row.kind not in _NAMING_KINDS:
            continue
        key = _key(row.name)
        named.add(key)
        found = by_key.get(key, [])
        if len(found) == 1:
            findings.extend(_compare(row, found[0], field_nos))
            continue
        zh, en = (
            ("压缩包中没有该附件", "the ZIP holds no such member")
            if not found
            else (f"压缩包中有 {len(found)} 个同名附件", f"the ZIP holds {len(found)} members of that name")
        )
        findings.append(
            _mismatch(
                row,
                "FJMC",
                field_nos,
                f"第 {row.line} 行 FJMC 所指附件“{row.name}”：{zh}",
                f"line {row.line}: FJMC names '{row.name}', but {en}",
                value=row.name,
            )
        )
    findings.extend(
        make(
            "ATTACHMENT_MISMATCH",
            problem_zh=f"压缩包成员“{member.name}”没有对应的新增或更新记录（BGLX 为 A 或 U）",
            problem_en=f"the ZIP member '{member.name}' is not named by any add or update row (BGLX A or U)",
        )
        for member in members
        if _key(member.name) not in named
    )
    return findings


def missing_partner(name: str, minutes: int) -> Finding:
    """ATTACHMENT_MISSING for the file that arrived (``name``) when its TXT or ZIP partner never came."""
    stem, dot, ext = name.rpartition(".")
    partner_ext = {"TXT": "ZIP", "ZIP": "TXT"}.get(ext.upper()) if dot else None
    if partner_ext is None:
        zh = f"{name} 已到达，但与之配对的文件在 {minutes} 分钟内未到达"
        en = f"{name} arrived, but the file that belongs with it did not come within {minutes} minutes"
    else:
        partner = f"{stem}.{partner_ext if ext.isupper() else partner_ext.lower()}"
        zh = f"{name} 已到达，但 {partner} 在 {minutes} 分钟内未到达"
        en = f"{name} arrived, but {partner} did not come within {minutes} minutes"
    return make("ATTACHMENT_MISSING", problem_zh=zh, problem_en=en, minutes=minutes)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _compare(row: AttachmentRow, member: Member, field_nos: Mapping[str, int]) -> list[Finding]:
    findings: list[Finding] = []
    line, name = row.line, member.name
    if not _WHOLE_NUMBER.fullmatch(row.size):
        findings.append(
            _mismatch(
                row,
                "WJDX",
                field_nos,
                f"第 {line} 行 WJDX 不是整数，无法核对附件“{name}”的大小",
                f"line {line}: WJDX is not a whole number, so the size of '{name}' cannot be checked",
                value=row.size,
            )
        )
    elif int(row.size) != member.size:
        findings.append(
            _mismatch(
                row,
                "WJDX",
                field_nos,
                f"第 {line} 行 WJDX 与附件“{name}”的实际大小（{member.size} 字节）不一致",
                f"line {line}: WJDX differs from the real size of '{name}' ({member.size} bytes)",
                value=row.size,
            )
        )
    if row.sha256 and row.sha256.lower() != member.sha256.lower():
        findings.append(
            _mismatch(
                row,
                "SHA256",
                field_nos,
                f"第 {line} 行 SHA256 与附件“{name}”的实际 SHA256（{member.sha256}）不一致",
                f"line {line}: SHA256 differs from the real SHA256 of '{name}' ({member.sha256})",
                value=row.sha256,
            )
        )
    return findings


def _mismatch(
    row: AttachmentRow, field: str, field_nos: Mapping[str, int], zh: str, en: str, *, value: str
) -> Finding:
    return make(
        "ATTACHMENT_MISMATCH",
        line=row.line,
        field_no=field_nos.get(field, 0),
        field=field,
        value=value,
        problem_zh=zh,
        problem_en=en,
    )


def partner_rejected(partner: str) -> Finding:
    """ATTACHMENT_REJECTED for a sound file whose TXT or ZIP partner was rejected: they go as one unit."""
    return make("ATTACHMENT_REJECTED", partner=partner)
