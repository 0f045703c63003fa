"""The streaming TXT validator (spec 4): every rule, its edge cases, and files fed in awkward chunks."""

from __future__ import annotations

import itertools

import pytest

from codes.tables import FieldSpec, TableSpec, bundled_tables
from validators import text
from validators.findings import MAX_REPORTED, Finding
from validators.text import TextReport, TextValidator, merge_reports, validate_text

TABLES = bundled_tables()
D1001, D1005, D2001, D3006 = (TABLES[c] for c in ("D1001", "D1005", "D2001", "D3006"))
ORG, DATE = "41210000", "20240115"

D2001_FIELDS = [
    "41210000", "202401150000000000000001", "0", "4121902254243635", "561913", "024", "",
    "1265514.50", "20240115", "092337", "W01", "20240115",
]  # fmt: skip
D1001_FIELDS = [
    "41210000", "示例基金销售有限公司", "91110000123456789X", "01", "北京市西城区金融大街1号", "张三",
    "李四", "010-12345678", "20240115",
]  # fmt: skip
D1005_FIELDS = ["41210000", "王五", "总经理", "20200101", "", "1234567.89", "20240115"]
D3006_FIELDS = ["41210000", "FJ0001", "A", "01", "年报.pdf", "1024", "a" * 64, "20240115"]


def line(fields: list[str], **changes: str) -> bytes:
    return "|".join(changes.get(str(i + 1), v) for i, v in enumerate(fields)).encode()


def d2001(**changes: str) -> bytes:
    return line(D2001_FIELDS, **changes)


VALID = {"D1001": D1001_FIELDS, "D1005": D1005_FIELDS, "D2001": D2001_FIELDS, "D3006": D3006_FIELDS}


def feed(data: bytes, table: TableSpec, chunk: int | None, org: str | None, date: str | None) -> TextReport:
    validator = TextValidator(table, org=org, date=date)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        validator.feed(data[start : start + step])
    return validator.finish()


def run(data: bytes, table: TableSpec = D2001, *, chunk: int | None = None, **kw: str) -> TextReport:
    """Validate ``data``; unless it starts with a BOM, also behind a valid first line, which must only
    shift the line numbers (the first line takes the slow path, later ones the fast one)."""
    org, date = kw.get("org", ORG) or None, kw.get("date", DATE) or None
    report = feed(data, table, chunk, org, date)
    if not data.startswith(b"\xef\xbb\xbf"):
        newline = data.find(b"\n")
        ending = b"\r\n" if newline > 0 and data[newline - 1] == 0x0D else b"\n"
        led = feed(line(VALID[table.code]) + ending + data, table, chunk, org, date)
        shifted = [(code, line_no - 1, field_no) for code, line_no, field_no in codes(led)]
        assert (shifted, led.records, led.total) == (codes(report), report.records + 1, report.total + 0)
    return report


def codes(report: TextReport) -> list[tuple[str, int, int]]:
    return [(f.code, f.line, f.field_no) for f in report.findings]


def only(report: TextReport) -> Finding:
    assert len(report.findings) == 1, codes(report)
    return report.findings[0]


# -- files as a whole -----------------------------------------------------------------------------


def test_valid_file_in_any_chunking_has_no_findings() -> None:
    data = b"\n".join(d2001(**{"2": f"SQ{i:020d}"}) for i in range(500)) + b"\n"
    for chunk in (None, 1, 7, 100, 4096):
        report = run(data, chunk=chunk)
        assert (report.records, report.total, report.findings) == (500, 0, [])
        assert report.line_ending == "\n"


def test_empty_file_is_a_valid_empty_table() -> None:
    report = run(b"")
    assert (report.records, report.total, report.findings, report.line_ending) == (0, 0, [], None)


def test_last_newline_is_optional() -> None:
    report = run(d2001() + b"\n" + d2001())
    assert (report.records, report.total) == (2, 0)


def test_an_empty_line_is_a_record_with_one_field() -> None:
    report = run(d2001() + b"\n\n" + d2001() + b"\n")
    assert report.records == 3
    assert codes(report) == [("FIELD_COUNT", 2, 0)]


def test_notepad_bom_with_crlf_is_reported_once_and_the_rest_validated() -> None:
    data = b"\xef\xbb\xbf" + d2001() + b"\r\n" + d2001(**{"6": "021"}) + b"\r\n"
    report = run(data, chunk=2)
    assert codes(report) == [("BOM_PRESENT", 1, 0), ("FIELD_ENUM", 2, 6)]
    assert "记事本" in report.findings[0].hint_zh and "Notepad" in report.findings[0].hint_en
    assert report.line_ending == "\r\n"
    assert report.records == 2


def test_a_bom_alone_is_reported() -> None:
    assert codes(run(b"\xef\xbb\xbf")) == [("BOM_PRESENT", 1, 0)]


# -- encoding and characters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\x80", b"\xf4\x90\x80\x80"],
    ids=["overlong", "surrogate", "ff", "lone-continuation", "above-10ffff"],
)
def test_invalid_utf8_is_reported_with_line_and_byte_offset(bad: bytes) -> None:
    first = d2001() + b"\n"
    second = d2001(**{"2": "SQ"}).replace(b"SQ", b"SQ" + bad, 1)
    data = first + second + b"\n" + d2001(**{"3": "9"}) + b"\n"
    report = run(data, chunk=3)
    assert codes(report) == [("ENCODING_INVALID", 2, 2), ("FIELD_ENUM", 3, 3)]
    offset = len(first) + second.index(bad)
    assert f"byte offset {offset})" in report.findings[0].message_en
    assert report.findings[0].value is not None and "\\x" in report.findings[0].value


def test_truncated_sequence_at_end_of_file_is_invalid() -> None:
    data = d2001() + b"\n" + d2001(**{"11": "网"}).replace("网".encode(), "网".encode()[:2])
    assert codes(run(data)) == [("ENCODING_INVALID", 2, 11)]


def test_multibyte_character_split_across_chunks_is_valid() -> None:
    data = line(D1001_FIELDS) + b"\n" + line(D1001_FIELDS)
    for chunk in (1, 2, 5):
        assert run(data, D1001, chunk=chunk).total == 0


def test_nul_byte() -> None:
    report = run(d2001() + b"\n" + d2001(**{"4": "4121\x00"}) + b"\n")
    assert codes(report) == [("NUL_BYTE", 2, 4)]


@pytest.mark.parametrize(
    ("char", "label"),
    [("\t", "U+0009 (TAB)"), ("\u2028", "U+2028"), ("\u2029", "U+2029"), ("\x85", "U+0085"),
     ("\x7f", "U+007F"), ("\r", "U+000D (CR)"), ("\x1b", "U+001B")],
)  # fmt: skip
def test_control_characters_inside_fields(char: str, label: str) -> None:
    report = run(d2001() + b"\n" + d2001(**{"11": "W" + char + "1"}) + b"\n")
    found = only(report)
    assert (found.code, found.line, found.field_no, found.field) == ("CONTROL_CHAR", 2, 11, "XSQDDM")
    assert label in found.message_en


def test_cr_only_line_endings_are_a_control_character() -> None:
    report = run(d2001() + b"\r" + d2001() + b"\r" + d2001())
    assert codes(report) == [("CONTROL_CHAR", 1, 12), ("FIELD_COUNT", 1, 0)]
    assert report.records == 1


def test_mixed_line_endings_are_reported_per_line() -> None:
    data = d2001() + b"\n" + d2001() + b"\r\n" + d2001() + b"\n" + d2001() + b"\r\n"
    report = run(data)
    assert codes(report) == [("LINE_ENDINGS_MIXED", 2, 0), ("LINE_ENDINGS_MIXED", 4, 0)]
    assert "CRLF" in report.findings[0].message_en and report.line_ending == "\n"


def test_a_crlf_file_with_one_lf_line() -> None:
    data = d2001() + b"\r\n" + d2001() + b"\n" + d2001() + b"\r\n"
    report = run(data, chunk=50)
    assert codes(report) == [("LINE_ENDINGS_MIXED", 2, 0)]


def test_a_stray_cr_in_a_crlf_file() -> None:
    data = d2001() + b"\r\n" + d2001(**{"2": "SQ\r1"}) + b"\r\n" + d2001() + b"\r\r\n"
    assert codes(run(data)) == [("CONTROL_CHAR", 2, 2), ("CONTROL_CHAR", 3, 12)]


# -- field counts and types -----------------------------------------------------------------------


def test_too_few_and_too_many_fields() -> None:
    report = run(d2001() + b"|x\n" + b"|".join(d2001().split(b"|")[:-1]) + b"\n")
    assert codes(report) == [("FIELD_COUNT", 1, 0), ("FIELD_COUNT", 2, 0)]
    assert "13 fields" in report.findings[0].message_en and "11 fields" in report.findings[1].message_en


def test_a_missing_field_cannot_hide_by_joining_the_next_line() -> None:
    short = line(D1001_FIELDS, **{"9": ""}).rsplit(b"|", 1)[0]  # 8 fields, the 8th is free text
    data = short + b"\n" + line(D1001_FIELDS) + b"\n"
    assert codes(run(data, D1001, org="", date="")) == [("FIELD_COUNT", 1, 0)]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("41210000", True),
        ("4121000", False),
        ("412100000", False),
        ("机构编号机构编号", True),
        ("机构编号机构编", False),
        ("中中12", False),  # 8 bytes, 4 characters: fast and slow path must both count characters
    ],
)
def test_code_fields_have_exactly_n_characters(value: str, ok: bool) -> None:
    report = run(d2001(**{"1": value}) + b"\n", org="")
    assert codes(report) == ([] if ok else [("FIELD_LENGTH", 1, 1)])


def test_text_length_counts_characters_not_bytes() -> None:
    assert run(line(D1001_FIELDS, **{"2": "中" * 200}), D1001).total == 0
    found = only(run(line(D1001_FIELDS, **{"2": "中" * 201}), D1001))
    assert (found.code, found.field, found.line) == ("FIELD_TOO_LONG", "JGMC", 1)
    assert "201 characters" in found.message_en and "200" in found.message_en


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("-0.5", True), ("0", True), ("1234567890123456.12", True), ("-1", True), ("007.10", True),
        ("1.", False), (".5", False), ("-", False), ("12345678901234567", False), ("1.123", False),
        ("+1", False), ("1e5", False), ("1,000.00", False), (" 1", False), ("1.2.3", False),
        ("１", False), ("--1", False), ("-.5", False),
    ],
)  # fmt: skip
def test_decimal_n_18_2(value: str, ok: bool) -> None:
    report = run(d2001(**{"8": value}) + b"\n")
    assert codes(report) == ([] if ok else [("FIELD_FORMAT", 1, 8)])
    if not ok:
        assert "N(18,2)" in report.findings[0].message_en


def test_decimal_hints_say_what_is_wrong() -> None:
    hints = {v: only(run(d2001(**{"8": v}))).hint_en for v in ("1.", "12345678901234567", "1.123", "1e5")}
    assert "both sides" in hints["1."]
    assert "16 digits before" in hints["12345678901234567"]
    assert "2 digits after" in hints["1.123"]
    assert "exponent" in hints["1e5"]


@pytest.mark.parametrize(("value", "ok"), [("1024", True), ("5.0", False), ("5.", False), ("-3", True)])
def test_decimal_n_18_0_takes_no_point(value: str, ok: bool) -> None:
    report = run(line(D3006_FIELDS, **{"6": value}), D3006)
    assert codes(report) == ([] if ok else [("FIELD_FORMAT", 1, 6)])


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("20240229", True), ("20000229", True), ("20230229", False), ("19000229", False),
        ("20241301", False), ("20240431", False), ("20240100", False), ("2024011", False),
        ("2024-01-15", False), ("09990101", False), ("99991231", True),
    ],
)  # fmt: skip
def test_dates_are_real_calendar_dates(value: str, ok: bool) -> None:
    report = run(d2001(**{"9": value}) + b"\n")
    assert codes(report) == ([] if ok else [("FIELD_FORMAT", 1, 9)])


@pytest.mark.parametrize(
    ("value", "ok"),
    [("235959", True), ("000000", True), ("240000", False), ("126000", False), ("12000", False)],
)
def test_times(value: str, ok: bool) -> None:
    assert codes(run(d2001(**{"10": value}))) == ([] if ok else [("FIELD_FORMAT", 1, 10)])


@pytest.mark.parametrize(
    ("value", "ok"), [("020", True), ("039", True), ("021", False), ("20", False), ("0200", False)]
)
def test_enumerations(value: str, ok: bool) -> None:
    report = run(d2001(**{"6": value}))
    assert codes(report) == ([] if ok else [("FIELD_ENUM", 1, 6)])
    if not ok:
        assert "020,022,024,036,039" in report.findings[0].message_en


def test_required_empty_and_optional_empty() -> None:
    assert codes(run(d2001(**{"4": "", "7": "", "8": "", "11": ""}))) == [("REQUIRED_EMPTY", 1, 4)]


def test_institution_and_date_must_match_the_file_name() -> None:
    report = run(d2001(**{"1": "41220000", "12": "20240116"}) + b"\n")
    assert codes(report) == [("FIELD_MISMATCH", 1, 1), ("FIELD_MISMATCH", 1, 12)]
    assert "expected 41210000" in report.findings[0].message_en
    assert "expected 20240115" in report.findings[1].message_en
    assert run(d2001(**{"1": "41220000", "12": "20240116"}), org="", date="").total == 0


@pytest.mark.parametrize("small_bytes", [0, 1 << 30], ids=["own regex", "generic regex"])
def test_an_optional_file_name_field_may_be_empty_on_any_line(
    small_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table (a configured one may) whose JGBH is optional: empty passes, another institution not."""
    monkeypatch.setattr(text, "_SMALL_BYTES", small_bytes)
    table = TableSpec(
        code="T9001",
        title="optional JGBH",
        frequency=D2001.frequency,
        fields=({"name": "JGBH", "type": "C(8)"}, {"name": "BZ", "type": "V(10)", "required": True}),
    )
    data = b"41210000|a\n|b\n41220000|c\n|d\n"
    assert codes(feed(data, table, None, ORG, DATE)) == [("FIELD_MISMATCH", 3, 1)]  # line 1: slow path


def test_small_chunks_compile_no_regex_of_their_own_institution_and_date() -> None:
    """A burst of small files from many institutions and dates compiles one record regex per table; a
    large chunk compiles the one of its (institution, date), which holds their values."""
    org, date = "41299999", "20240301"
    record = d2001(**{"1": org, "12": date}) + b"\n"
    small = record * 10
    assert feed(small, D2001, None, org, date).total == 0
    assert text._grammar(D2001, org, date)._regexes == {}
    large = record * (2 * text._SMALL_BYTES // len(record))
    assert feed(large, D2001, None, org, date).total == 0
    assert text._grammar(D2001, org, date)._regexes != {}


def test_a_file_name_date_that_is_not_a_date_fails_every_line_once() -> None:
    bad = d2001(**{"12": "20230229"})
    report = feed(bad + b"\n" + bad + b"\n" + bad, D2001, None, ORG, "20230229")
    assert codes(report) == [("FIELD_FORMAT", 1, 12), ("FIELD_FORMAT", 2, 12), ("FIELD_FORMAT", 3, 12)]


# -- what findings carry and how many -------------------------------------------------------------


def test_values_are_shown_cut_for_open_tables() -> None:
    found = only(run(line(D1001_FIELDS, **{"2": "名" * 300}), D1001))
    assert found.value is not None and found.value.startswith("名" * 64) and len(found.value) == 65


def test_restricted_table_findings_never_carry_values() -> None:
    hidden = "9876543.219"
    lines = [
        line(D1005_FIELDS, **{"6": hidden}),
        line(D1005_FIELDS, **{"2": "秘" * 51}),
        line(D1005_FIELDS, **{"2": "秘\t密"}),
        line(D1005_FIELDS, **{"1": "41229999"}),
        line(D1005_FIELDS) + b"|extra",
        line(D1005_FIELDS, **{"3": "\xff"}).replace("ÿ".encode(), b"\xff"),
    ]
    report = run(b"\n".join(lines), D1005)
    assert [f.code for f in report.findings] == [
        "FIELD_FORMAT", "FIELD_TOO_LONG", "CONTROL_CHAR", "FIELD_MISMATCH", "FIELD_COUNT", "ENCODING_INVALID",
    ]  # fmt: skip
    for finding in report.findings:
        assert finding.value is None and "value" not in finding.to_dict()
        text = finding.message_en + finding.message_zh + finding.hint_en + finding.hint_zh
        assert hidden not in text and "秘" not in text and "extra" not in text


def test_more_than_the_limit_keeps_the_first_and_counts_all() -> None:
    data = b"\n".join(d2001(**{"6": "999"}) for _ in range(150)) + b"\n"
    report = run(data)
    assert len(report.findings) == MAX_REPORTED and report.total == 150
    assert [f.line for f in report.findings] == list(range(1, MAX_REPORTED + 1))


def test_a_smaller_limit() -> None:
    validator = TextValidator(D2001, limit=3)
    validator.feed(b"\n".join(d2001(**{"6": "999"}) for _ in range(10)))
    report = validator.finish()
    assert (len(report.findings), report.total) == (3, 10)


# -- long lines, segments, attachments ------------------------------------------------------------


def test_an_endless_line_is_capped_reported_and_skipped() -> None:
    validator = TextValidator(D2001, org=ORG, date=DATE)
    validator.feed(d2001(**{"2": "S"}) + b"\n")
    validator.feed(b"41210000|")
    for _ in range(40):
        validator.feed(b"x" * 100_000)
    validator.feed(b"|0|" + b"\n".join([b"|".join(d2001().split(b"|")[3:]), d2001(), d2001(**{"6": "1"})]))
    report = validator.finish()
    assert report.records == 4
    assert codes(report) == [("FIELD_TOO_LONG", 2, 2), ("FIELD_ENUM", 4, 6)]
    assert "4000000 characters" in report.findings[0].message_en


def test_an_endless_line_with_too_many_fields_and_no_newline_at_the_end() -> None:
    report = run(d2001() + b"\n" + b"a|" * 2_000_000, chunk=65536)
    assert codes(report) == [("FIELD_COUNT", 2, 0)]
    assert "2000001 fields" in report.findings[0].message_en


def segments(data: bytes, cuts: list[int], table: TableSpec = D2001, ending: str | None = None) -> TextReport:
    reports, line_no = [], 1
    bounds = [0, *cuts, len(data)]
    for start, end in itertools.pairwise(bounds):
        validator = TextValidator(
            table,
            org=ORG,
            date=DATE,
            first_line=line_no,
            file_start=start == 0,
            line_ending=ending,
            offset=start,
        )
        validator.feed(data[start:end])
        reports.append(validator.finish())
        line_no += reports[-1].records
    return merge_reports(reports)


def test_segments_merge_to_the_whole_file_report() -> None:
    rows = [d2001(**{"6": "999"}) if i % 7 == 3 else d2001() for i in range(60)]
    rows[20] = rows[20].replace(b"SQ", b"SQ\xc0\xaf")
    data = b"\xef\xbb\xbf" + b"\n".join(rows) + b"\n"
    cuts = [i + 1 for i, byte in enumerate(data) if byte == 0x0A][9::10]
    whole = run(data)
    assert segments(data, cuts, ending="\n") == whole
    assert segments(data, cuts) == whole


def test_merge_reports_segments_that_disagree_on_line_endings() -> None:
    data = d2001() + b"\n" + d2001() + b"\n" + d2001() + b"\r\n" + d2001() + b"\r\n"
    cut = len(d2001()) * 2 + 2
    report = segments(data, [cut])
    assert codes(report) == [("LINE_ENDINGS_MIXED", 3, 0)] and report.records == 4


def test_attachment_rows_are_collected_with_their_lines() -> None:
    rows = [
        line(D3006_FIELDS),
        line(D3006_FIELDS, **{"3": "D", "5": "旧.pdf", "7": ""}),
        line(D3006_FIELDS, **{"3": "X"}),
        line(D3006_FIELDS, **{"6": "12.5"}),
        line(D3006_FIELDS)[:-3],
    ]
    report = run(b"\r\n".join(rows) + b"\r\n", D3006)
    assert [(r.line, r.kind, r.name, r.size, r.sha256) for r in report.attachment_rows] == [
        (1, "A", "年报.pdf", "1024", "a" * 64),
        (2, "D", "旧.pdf", "1024", ""),
        (4, "A", "年报.pdf", "12.5", "a" * 64),
        (5, "A", "年报.pdf", "1024", "a" * 64),
    ]
    assert codes(report) == [("FIELD_ENUM", 3, 3), ("FIELD_FORMAT", 4, 6), ("FIELD_FORMAT", 5, 8)]


def test_feed_after_finish_is_an_error() -> None:
    validator = TextValidator(D2001)
    validator.finish()
    with pytest.raises(RuntimeError):
        validator.feed(b"x")


def test_validate_text_takes_bytes_or_chunks() -> None:
    data = d2001() + b"\n" + d2001(**{"3": "2"})
    assert validate_text(data, D2001) == validate_text(iter([data[:10], data[10:]]), D2001)
    assert codes(validate_text(data, D2001)) == [("FIELD_ENUM", 2, 3)]


# --- issue 19: the cost per byte of any content; past the cap lines are counted -------------------------


ADVERSARIAL = {
    "ones": b"1\n" * 3000,
    "blank": b"\n" * 5000,
    "control_a_line": b"\x01\n" * 3000,
    "invalid_utf8_a_line": b"\xff\n" * 3000,
    "nul_a_line": b"\x00\n" * 3000,
    "u2028_a_line": "a\u2028\n".encode() * 3000,
    "crlf_in_lf": b"\n" + b"\r\n" * 3000,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
@pytest.mark.parametrize("chunk", [None, 1000, 64 * 1024])
def test_past_the_cap_each_refused_line_is_counted_once(name: str, chunk: int | None) -> None:
    """Once the kept findings are full of errors the file is rejected: its lines are only counted, a
    refused line one finding, so a file of millions of bad lines costs what valid rows cost."""
    data = ADVERSARIAL[name]
    report = feed(data, D2001, chunk, ORG, DATE)
    assert len(report.findings) == MAX_REPORTED
    assert report.records == data.count(b"\n")
    assert report.findings[-1].line <= MAX_REPORTED + 1  # the first lines are the ones diagnosed
    assert data.count(b"\n") - 1 <= report.total <= data.count(b"\n") + MAX_REPORTED


def test_the_findings_kept_are_those_of_the_first_bad_lines_whatever_follows() -> None:
    good = d2001() + b"\n"
    data = good * 50 + b"1\n" * 150 + good * 50 + b"\xff\n" * 50
    report = feed(data, D2001, None, ORG, DATE)
    assert [f.line for f in report.findings] == list(range(51, 151))
    assert report.total == 200 and report.records == 300


def test_valid_rows_after_the_cap_are_not_counted_as_findings() -> None:
    good = d2001() + b"\n"
    report = feed(b"1\n" * 200 + good * 1000, D2001, 4096, ORG, DATE)
    assert report.total == 200 and report.records == 1200


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_counting_past_the_cap_gives_the_same_report_in_any_chunking(name: str) -> None:
    data = ADVERSARIAL[name] + d2001().replace(b"|", b"||", 1) + b"\n" + b"1|2\n" * 300
    reports = [feed(data, D2001, chunk, ORG, DATE) for chunk in (None, 7, 1000, 4096, 64 * 1024)]
    first = reports[0]
    for report in reports[1:]:
        assert (codes(report), report.total, report.records) == (codes(first), first.total, first.records)


def test_a_table_changed_under_its_code_is_validated_by_its_own_rules_not_a_cached_grammar() -> None:
    """Tables hash by their code (the grammar cache hashes one a file); equality still takes every field,
    so a catalogue reloaded with a longer field gets a grammar of its own."""
    fields = tuple(FieldSpec(name=f.name, type="V(40)") if f.name == "XSQDDM" else f for f in D2001.fields)
    longer = D2001.model_copy(update={"fields": fields})
    assert hash(longer) == hash(D2001) and longer != D2001
    value = "x" * 30
    assert [c for c, _, _ in codes(run(d2001(**{"11": value})))] == ["FIELD_TOO_LONG"]
    assert codes(run(d2001(**{"11": value}), longer)) == []
