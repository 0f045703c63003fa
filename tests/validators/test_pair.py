"""check_pair and missing_partner: the D3006 rows against the members the archive really holds."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from validators.archive import inspect_zip
from validators.attachments import AttachmentRow, Member
from validators.pair import check_pair, missing_partner

CONTRACT = b"%PDF-1.4 contract scan"
LICENCE = b"%PDF-1.4 licence scan, a little longer"


def member(name: str, content: bytes) -> Member:
    return Member(name, len(content), hashlib.sha256(content).hexdigest())


def row(line: int, name: str, content: bytes, *, kind: str = "A", sha: bool = True) -> AttachmentRow:
    digest = hashlib.sha256(content).hexdigest().upper() if sha else ""
    return AttachmentRow(line=line, kind=kind, name=name, size=str(len(content)), sha256=digest)


MEMBERS = [member("合同.pdf", CONTRACT), member("licence.pdf", LICENCE)]


def test_rows_and_members_that_agree_give_nothing() -> None:
    rows = [row(1, "合同.pdf", CONTRACT), row(2, "licence.pdf", LICENCE, kind="U", sha=False)]
    assert check_pair(rows, MEMBERS) == []


def test_sha256_is_compared_without_regard_to_case() -> None:
    upper, lower = row(1, "合同.pdf", CONTRACT), row(1, "合同.pdf", CONTRACT)
    lower = AttachmentRow(lower.line, lower.kind, lower.name, lower.size, upper.sha256.lower())
    assert check_pair([upper], MEMBERS[:1]) == check_pair([lower], MEMBERS[:1]) == []


def test_row_naming_a_member_the_zip_lacks() -> None:
    rows = [row(1, "合同.pdf", CONTRACT), row(2, "licence.pdf", LICENCE), row(3, "missing.pdf", b"x")]
    findings = check_pair(rows, MEMBERS)
    assert [(f.code, f.line, f.field, f.field_no) for f in findings] == [
        ("ATTACHMENT_MISMATCH", 3, "FJMC", 5)
    ]
    assert "'missing.pdf'" in findings[0].message_en and "no such member" in findings[0].message_en
    assert "“missing.pdf”" in findings[0].message_zh


def test_member_that_no_row_names() -> None:
    findings = check_pair([row(1, "合同.pdf", CONTRACT)], MEMBERS)
    assert [(f.code, f.line, f.field) for f in findings] == [("ATTACHMENT_MISMATCH", 0, "")]
    assert "'licence.pdf' is not named" in findings[0].message_en


def test_member_named_only_by_a_delete_row_is_unnamed() -> None:
    rows = [row(1, "合同.pdf", CONTRACT), row(2, "licence.pdf", LICENCE, kind="D")]
    findings = check_pair(rows, MEMBERS)
    assert len(findings) == 1
    assert "'licence.pdf' is not named" in findings[0].message_en


def test_delete_rows_need_no_member() -> None:
    rows = [
        row(1, "合同.pdf", CONTRACT),
        row(2, "licence.pdf", LICENCE),
        row(3, "old.pdf", b"gone", kind="D"),
    ]
    assert check_pair(rows, MEMBERS) == []
    assert check_pair([row(1, "old.pdf", b"gone", kind="D")], []) == []


def test_size_mismatch_names_the_member_but_not_the_field_value() -> None:
    wrong = AttachmentRow(line=4, kind="A", name="合同.pdf", size="98765", sha256="")
    findings = check_pair([wrong], MEMBERS[:1])
    assert [(f.code, f.line, f.field, f.field_no, f.value) for f in findings] == [
        ("ATTACHMENT_MISMATCH", 4, "WJDX", 6, "98765")
    ]
    assert f"'合同.pdf' ({len(CONTRACT)} bytes)" in findings[0].message_en
    assert "98765" not in findings[0].message_en + findings[0].message_zh


@pytest.mark.parametrize("size", ["", "12.5", "-22", "1_0", "２２", " 22"])
def test_size_that_is_not_a_whole_number(size: str) -> None:
    odd = AttachmentRow(line=2, kind="U", name="合同.pdf", size=size, sha256="")
    findings = check_pair([odd], MEMBERS[:1])
    assert [(f.field, f.value) for f in findings] == [("WJDX", size)]
    assert "not a whole number" in findings[0].message_en


def test_sha256_mismatch_names_the_member_but_not_the_field_value() -> None:
    claimed = hashlib.sha256(b"something else").hexdigest()
    wrong = AttachmentRow(line=5, kind="A", name="licence.pdf", size=str(len(LICENCE)), sha256=claimed)
    findings = check_pair([wrong], MEMBERS[1:])
    assert [(f.code, f.line, f.field, f.field_no, f.value) for f in findings] == [
        ("ATTACHMENT_MISMATCH", 5, "SHA256", 7, claimed)
    ]
    assert "'licence.pdf'" in findings[0].message_en
    assert hashlib.sha256(LICENCE).hexdigest() in findings[0].message_en
    assert claimed not in findings[0].message_en + findings[0].message_zh


def test_size_and_sha256_both_wrong_give_two_findings() -> None:
    wrong = AttachmentRow(line=1, kind="A", name="合同.pdf", size="1", sha256="0" * 64)
    assert [f.field for f in check_pair([wrong], MEMBERS[:1])] == ["WJDX", "SHA256"]


def test_names_match_across_unicode_normalisation() -> None:
    composed, decomposed = "caf\u00e9.pdf", "cafe\u0301.pdf"
    assert check_pair([row(1, composed, CONTRACT)], [member(decomposed, CONTRACT)]) == []


def test_names_do_not_match_across_case() -> None:
    findings = check_pair([row(1, "LICENCE.PDF", LICENCE)], MEMBERS[1:])
    assert [f.line for f in findings] == [1, 0]


def test_row_matching_two_members_is_a_mismatch() -> None:
    twins = [member("caf\u00e9.pdf", CONTRACT), member("cafe\u0301.pdf", CONTRACT)]
    findings = check_pair([row(1, "caf\u00e9.pdf", CONTRACT)], twins)
    assert [(f.line, f.field) for f in findings] == [(1, "FJMC")]
    assert "2 members" in findings[0].message_en


def test_field_numbers_of_another_attachment_table() -> None:
    findings = check_pair([row(3, "nope.pdf", b"x")], [], field_nos={"FJMC": 2, "WJDX": 3, "SHA256": 4})
    assert [(f.field, f.field_no) for f in findings] == [("FJMC", 2)]


def test_rows_against_a_real_archive() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("合同.pdf", CONTRACT)
        archive.writestr("licence.pdf", LICENCE)
        archive.writestr("extra.pdf", b"nobody asked")
    report = inspect_zip(buffer)
    assert report.findings == []
    findings = check_pair(
        [row(1, "合同.pdf", CONTRACT), row(2, "licence.pdf", b"other content")], report.members
    )
    assert [(f.line, f.field) for f in findings] == [(2, "WJDX"), (2, "SHA256"), (0, "")]
    assert "'extra.pdf'" in findings[2].message_en


@pytest.mark.parametrize(
    ("arrived", "partner"),
    [
        ("CISP-41210000_D3006_V01_1_20220401_01_Z.TXT", "CISP-41210000_D3006_V01_1_20220401_01_Z.ZIP"),
        ("CISP-41210000_D3006_V01_1_20220401_01_Z.ZIP", "CISP-41210000_D3006_V01_1_20220401_01_Z.TXT"),
    ],
)
def test_missing_partner_names_the_file_that_never_came(arrived: str, partner: str) -> None:
    finding = missing_partner(arrived, 10)
    assert finding.code == "ATTACHMENT_MISSING"
    assert (finding.line, finding.field_no, finding.value) == (0, 0, None)
    assert f"{arrived} arrived, but {partner} did not come within 10 minutes" in finding.message_en
    assert partner in finding.message_zh
    assert "10 minutes" in finding.hint_en and "10 分钟" in finding.hint_zh


def test_missing_partner_of_an_unexpected_name_still_reads_well() -> None:
    finding = missing_partner("attachments.7z", 15)
    assert (
        "attachments.7z arrived, but the file that belongs with it did not come within 15"
        in finding.message_en
    )
