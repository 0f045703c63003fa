"""File names (spec 3): the grammar, the finding codes, and the near-miss diagnosis with its suggestions."""

from __future__ import annotations

import datetime
import operator
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codes.tables import TableSpec, bundled_tables
from validators.findings import Finding, Severity
from validators.names import NameCheck, ReportName, check_name, diagnose_name, parse_name

EXAMPLE = "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT"
TODAY = datetime.date(2024, 6, 30)
TABLES: dict[str, TableSpec] = bundled_tables()
SUGGESTION_EN = "; the corrected name may be: "
SUGGESTION_ZH = "；可能的正确文件名："
UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check(name: str, *, today: datetime.date = TODAY, systems: tuple[str, ...] = ("CISP",)) -> NameCheck:
    return check_name(name, tables=TABLES, systems=systems, today=today)


def codes(result: NameCheck) -> list[str]:
    return [f.code for f in result.findings]


def suggestion_of(finding: Finding) -> str | None:
    """The corrected name a NAME_INVALID finding offers, read back from its hint."""
    if SUGGESTION_EN not in finding.hint_en:
        assert SUGGESTION_ZH not in finding.hint_zh
        return None
    suggested = finding.hint_en.split(SUGGESTION_EN, 1)[1]
    assert finding.hint_zh.endswith(SUGGESTION_ZH + suggested)
    return suggested


def texts(finding: Finding) -> list[str]:
    return [finding.message_zh, finding.message_en, finding.hint_zh, finding.hint_en, finding.value or ""]


# --- the grammar and ReportName -------------------------------------------------------------------


def test_the_platform_example_parses_into_its_parts() -> None:
    parsed = parse_name(EXAMPLE)
    assert parsed == ReportName(
        system="CISP",
        org="41210000",
        table="D1001",
        version="V01",
        part=1,
        date="20220401",
        batch=1,
        mode="Q",
        ext="TXT",
    )
    assert parsed.name == EXAMPLE
    assert parsed.stem == "CISP-41210000_D1001_V01_1_20220401_01_Q"
    assert not parsed.is_zip
    assert parsed.partner == "CISP-41210000_D1001_V01_1_20220401_01_Q.ZIP"
    assert parsed.report_key == ("41210000", "D1001", "20220401", 1)


def test_zip_partner_is_the_txt_of_the_same_stem() -> None:
    parsed = parse_name("CISP-41210000_D3006_V01_3_20220430_12_Z.ZIP")
    assert parsed is not None
    assert parsed.is_zip
    assert parsed.partner == "CISP-41210000_D3006_V01_3_20220430_12_Z.TXT"
    assert parsed.report_key == ("41210000", "D3006", "20220430", 3)


def test_the_example_passes_every_check() -> None:
    result = check(EXAMPLE)
    assert result.name is not None
    assert result.findings == []


@pytest.mark.parametrize(
    "name",
    [
        EXAMPLE + "\n",  # re's $ would accept this; the grammar must not
        "CISP-٤١٢١٠٠٠٠_D1001_V01_1_20220401_01_Q.TXT",  # Arabic-Indic digits are \d but not digits here
        "CISP-41210000_D1001_V01_0_20220401_01_Q.TXT",  # part 0
        "CISP-41210000_D1001_V01_10_20220401_01_Q.TXT",  # two-digit part
        "C-41210000_D1001_V01_1_20220401_01_Q.TXT",  # one-letter system
        "ABCDEFGHI-41210000_D1001_V01_1_20220401_01_Q.TXT",  # nine-letter system
        "CISP-41210000_D1001_V01_1_20220401_01_F.TXT",  # mode F
        "CİSP-41210000_D1001_V01_1_20220401_01_Q.TXT",  # non-ASCII capital
    ],
)
def test_the_grammar_is_exact(name: str) -> None:
    assert parse_name(name) is None
    result = check(name)
    assert result.name is None
    assert codes(result) == ["NAME_INVALID"]


# --- finding codes ---------------------------------------------------------------------------------


def test_unknown_system_prefix() -> None:
    result = check("ABCD-41210000_D1001_V01_1_20220401_01_Q.TXT", systems=("CISP", "EAST"))
    assert codes(result) == ["SYSTEM_UNKNOWN"]
    assert result.name is not None
    finding = result.findings[0]
    assert finding.value == "ABCD"
    assert "ABCD" in finding.message_en
    assert "CISP, EAST" in finding.hint_en


def test_unknown_table_skips_the_table_rules() -> None:
    result = check("CISP-41210000_D9999_V07_1_20220401_01_Z.ZIP")
    assert codes(result) == ["TABLE_UNKNOWN"]
    assert result.findings[0].value == "D9999"


def test_unsupported_version() -> None:
    result = check("CISP-41210000_D1001_V02_1_20220401_01_Q.TXT")
    assert codes(result) == ["VERSION_UNSUPPORTED"]
    assert "V02" in result.findings[0].message_en
    assert "V01" in result.findings[0].hint_en


@pytest.mark.parametrize("date", ["20220230", "20221301", "20220400", "00000101", "20230229"])
def test_date_that_is_not_on_the_calendar(date: str) -> None:
    result = check(f"CISP-41210000_D1001_V01_1_{date}_01_Q.TXT")
    assert codes(result) == ["DATE_INVALID"]
    assert result.findings[0].value == date
    assert result.name is not None


def test_leap_day_is_a_real_date() -> None:
    assert check("CISP-41210000_D1001_V01_1_20240229_01_Q.TXT").findings == []


def test_date_after_today() -> None:
    today = datetime.date(2022, 3, 31)
    result = check(EXAMPLE, today=today)
    assert codes(result) == ["DATE_IN_FUTURE"]
    assert "20220331" in result.findings[0].message_en


def test_date_of_today_is_not_in_the_future() -> None:
    assert check(EXAMPLE, today=datetime.date(2022, 4, 1)).findings == []


def test_incremental_mode_on_a_full_only_table() -> None:
    result = check("CISP-41210000_D1001_V01_1_20220401_01_Z.TXT")
    assert codes(result) == ["MODE_INVALID"]
    assert result.findings[0].value == "Z"
    assert "Q" in result.findings[0].hint_en


def test_incremental_mode_on_an_incremental_table() -> None:
    assert check("CISP-41210000_D2001_V01_1_20220401_01_Z.TXT").findings == []


def test_zip_for_a_table_without_attachments() -> None:
    result = check("CISP-41210000_D1001_V01_1_20220401_01_Q.ZIP")
    assert codes(result) == ["NAME_INVALID"]
    assert result.name is not None
    assert "no attachments" in result.findings[0].message_en
    assert suggestion_of(result.findings[0]) is None


def test_zip_for_the_attachment_table() -> None:
    assert check("CISP-41210000_D3006_V01_1_20220401_01_Z.ZIP").findings == []


def test_batch_00_is_named_though_the_grammar_admits_it() -> None:
    result = check("CISP-41210000_D1001_V01_1_20220401_00_Q.TXT")
    assert codes(result) == ["NAME_INVALID"]
    assert result.name is not None
    assert result.name.batch == 0
    assert "batch 00" in result.findings[0].message_en


def test_every_rule_is_reported_and_the_name_still_returned() -> None:
    result = check("EAST-41210000_D1001_V09_1_20221399_00_Z.ZIP")
    expected = ["SYSTEM_UNKNOWN", "VERSION_UNSUPPORTED", "DATE_INVALID", "NAME_INVALID", "MODE_INVALID"]
    assert codes(result) == [*expected, "NAME_INVALID"]
    assert result.name is not None
    assert result.name.table == "D1001"
    assert all(f.severity is Severity.ERROR for f in result.findings)


# --- near misses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("cisp-41210000_d1001_v01_1_20220401_01_q.txt", "upper case"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.txt", "extension '.txt' must be upper case"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.Txt", "extension '.Txt' must be upper case"),
        ("CISP_41210000_D1001_V01_1_20220401_01_Q.TXT", "after 'CISP' use '-', not '_'"),
        ("CISP-41210000-D1001_V01_1_20220401_01_Q.TXT", "after '41210000' use '_', not '-'"),
        ("CISP-41210000-D1001-V01-1-20220401-01-Q.TXT", "wrong separators"),
        ("CISP-41210000__D1001_V01_1_20220401_01_Q.TXT", "not '__'"),
        ("CISP-41210000_D1001_V01_1_20220401_01 Q.TXT", "spaces"),
        ("CISP 41210000 D1001 V01 1 20220401 01 Q.TXT", "spaces"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q .TXT", "stray separator or space"),
        ("CISP-41210000_D1001_V01_1_20220401_1_Q.TXT", "batch number '1' must be written '01'"),
        ("CISP-41210000_D1001_V1_1_20220401_01_Q.TXT", "version 'V1' must be written 'V01'"),
        ("CISP-41210000_D1001_V01_01_20220401_01_Q.TXT", "part number '01' must be written '1'"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT.TXT", "doubled"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.txt.txt", "doubled"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT ", "ends with extra spaces"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT  ", "ends with extra spaces"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT.", "dots"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT\r\n", "'\\x0d\\x0a'"),
        ("\ufeffCISP-41210000_D1001_V01_1_20220401_01_Q.TXT", "starts with blanks or invisible"),
        ("CISP-41210000_D1001_V01_1_2022-04-01_01_Q.TXT", "'2022-04-01' must be written '20220401'"),
        ("CISP-41210000_D1001_V01_1_2022.04.01_01_Q.TXT", "'2022.04.01' must be written '20220401'"),
        ("CISP-41210000＿D1001_V01_1_20220401_01_Ｑ.TXT", "full-width characters ＿ Ｑ"),
        (
            "ＣＩＳＰ－４１２１００００＿Ｄ１００１＿Ｖ０１＿１＿２０２２０４０１＿０１＿Ｑ．ＴＸＴ",
            "full-width",
        ),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q。TXT", "full-width"),
        ("cisp 41210000-d1001-v1-1-2022-04-01-1-q.txt.txt ", "upper case"),
    ],
)
def test_near_miss_with_a_certain_correction(name: str, says: str) -> None:
    result = check(name)
    assert result.name is None
    [finding] = result.findings
    assert finding.code == "NAME_INVALID"
    assert says in finding.message_en
    assert suggestion_of(finding) == EXAMPLE
    assert diagnose_name(name).suggestion == EXAMPLE


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("CISP-41210000_D1001_V01_1_20220401_Q.TXT", "batch number is missing"),
        ("cisp-41210000_d1001_v01_1_20220401_q.txt", "batch number is missing"),
        ("CISP-41210000_D1001_V01_20220401_01_Q.TXT", "part number is missing"),
        ("CISP-41210000_D1001_1_20220401_01_Q.TXT", "version is missing"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.CSV", "'.CSV' is not accepted"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.DAT", "'.DAT' is not accepted"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT.tmp", "'.tmp' is not accepted"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q", "extension .TXT or .ZIP is missing"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT.ZIP", "two extensions '.TXT.ZIP'"),
        ("CISP-4121000_D1001_V01_1_20220401_01_Q.TXT", "'4121000' has 7 digits"),
        ("CISP-412100000_D1001_V01_1_20220401_01_Q.TXT", "'412100000' has 9 digits"),
        ("cisp-4121000_d1001_v01_1_20220401_01_q.txt", "has 7 digits"),
        ("CISP-41210000_D1001_V01_1_20220401_01_01_Q.TXT", "part '01' does not belong"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q (1).TXT", "part '(1)' does not belong"),
        ("CISP-41210000_D1001_V01_1_20220401_01_Q_X_Y.TXT", "10 parts"),
        ("CISP-41210000_D1001.TXT", "3 parts"),
        ("hello.txt", "1 part "),
        ("CISP-41210000_D1001_V01_1_220401_01_Q.TXT", "data date '220401'"),
        ("CISP-41210000_D1001_V01_1_20220401_100_Q.TXT", "batch number '100'"),
        ("CISP-41210000_D1001_V01_1_20220401_0_Q.TXT", "batch number '0'"),
        ("CISP-41210000_D1001_V01_1_20220401_000_Q.TXT", "batch number '000'"),
        ("CISP-41210000_D1001_V01_1_20220401_01_F.TXT", "mode 'F'"),
        ("СISP-41210000_D1001_V01_1_20220401_01_Q.TXT", "U+0421"),  # Cyrillic Es
        ("CISP-41210000_D1001_V01_1_2022-13-01_01_Q.TXT", "parts"),
        (".TXT", "nothing before the extension"),
        ("", "empty"),
        ("   ", "only blanks"),
        ("...", "only blanks, dots"),
    ],
)
def test_near_miss_without_a_safe_correction(name: str, says: str) -> None:
    result = check(name)
    assert result.name is None
    [finding] = result.findings
    assert finding.code == "NAME_INVALID"
    assert says in finding.message_en
    assert suggestion_of(finding) is None
    assert diagnose_name(name).suggestion is None


def test_missing_batch_explains_the_numbering_instead_of_guessing() -> None:
    [finding] = check("CISP-41210000_D1001_V01_1_20220401_Q.TXT").findings
    assert "01 for the first report" in finding.message_en
    assert "首次报送为 01" in finding.message_zh


def test_every_problem_is_listed_in_both_languages() -> None:
    diagnosis = diagnose_name("cisp-41210000_d1001_v01_1_2022-04-01_1_q.txt")
    assert len(diagnosis.problems) == 4
    assert all(p.repaired for p in diagnosis.problems)
    [finding] = check("cisp-41210000_d1001_v01_1_2022-04-01_1_q.txt").findings
    assert finding.message_zh.count("；") == 3
    assert finding.message_en.count("; ") == 3


def test_a_valid_name_has_nothing_to_diagnose() -> None:
    assert diagnose_name(EXAMPLE).problems == ()
    assert diagnose_name(EXAMPLE).suggestion is None


@pytest.mark.parametrize(
    "name",
    [
        "CI\x00SP-41210000_D1001_V01_1_20220401_01_Q.TXT",
        "\x1b[31mCISP-41210000_D1001_V01_1_20220401_01_Q.TXT",
        "CISP-41210000_D1001_V01_1_20220401_01_Q\u202e.TXT",
        "CISP-41210000_D1001_V01_1_20220401_01_Q\udcff.TXT",
        "CISP-41210000_D1001\u2028V01_1_20220401_01_Q.TXT",
        "CISP-41210000_D1001_V01_1_20220401_01_Q\x85.TXT",
        "line\nbreak\x07.txt",
    ],
)
def test_control_characters_are_never_echoed_raw(name: str) -> None:
    [finding] = check(name).findings
    for text in texts(finding):
        assert not [c for c in text if unicodedata.category(c) in UNPRINTABLE], text
        text.encode("utf-8")


def test_echoed_control_characters_are_visible_escapes() -> None:
    [finding] = check("CI\x00SP-41210000_D1001_V01_1_20220401_01_Q.TXT").findings
    assert "CI\\x00SP" in finding.message_en
    assert finding.value == "CI\\x00SP-41210000_D1001_V01_1_20220401_01_Q.TXT"


def test_a_very_long_name_gives_a_bounded_message() -> None:
    [finding] = check("A" * 100_000 + ".TXT").findings
    assert finding.code == "NAME_INVALID"
    assert len(finding.message_en) < 500
    assert finding.value is not None
    assert len(finding.value) < 400


# --- properties ------------------------------------------------------------------------------------


def digits(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=string.digits, min_size=size, max_size=size)


ANY_BATCH = st.integers(0, 99)
ANY_DATE = digits(8)
CALENDAR_DATE = st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}")


def report_names(
    batches: st.SearchStrategy[int] = ANY_BATCH, dates: st.SearchStrategy[str] = ANY_DATE
) -> st.SearchStrategy[ReportName]:
    return st.builds(
        ReportName,
        system=st.from_regex(r"[A-Z]{2,8}", fullmatch=True),
        org=digits(8),
        table=st.builds(operator.add, st.sampled_from(string.ascii_uppercase), digits(4)),
        version=digits(2).map("V{}".format),
        part=st.integers(1, 9),
        date=dates,
        batch=batches,
        mode=st.sampled_from("QZ"),
        ext=st.sampled_from(["TXT", "ZIP"]),
    )


@given(report_names())
def test_names_built_from_valid_parts_parse_back(report: ReportName) -> None:
    assert parse_name(report.name) == report
    parsed = parse_name(report.name)
    assert parsed is not None
    assert parsed.name == report.name
    assert parse_name(report.partner) is not None
    assert parse_name(report.partner).partner == report.name  # type: ignore[union-attr]
    assert report.name == f"{report.stem}.{report.ext}"


CANONICAL_SEPARATORS = ["-"] + ["_"] * 6
SEPARATOR_SLIPS = ["-", "_", " ", "__", "--", " _ ", "_-", "  "]
TRAILERS = ["", " ", "  ", ".", "\n", "\r\n", " . ", "\t"]
LEADERS = ["", "\ufeff", " ", "\u200b"]


def full_width(char: str) -> str:
    if char == " ":
        return "\u3000"
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[str, str]:
    """A valid name and the same name with only slips that have one certain repair."""
    report = draw(report_names(st.integers(1, 99), CALENDAR_DATE))
    parts = [
        report.system,
        report.org,
        report.table,
        report.version,
        str(report.part),
        report.date,
        f"{report.batch:02d}",
        report.mode,
    ]
    if report.version.startswith("V0") and draw(st.booleans()):
        parts[3] = "V" + report.version[2]
    if draw(st.booleans()):
        parts[4] = "0" + parts[4]
    if report.batch < 10 and draw(st.booleans()):
        parts[6] = str(report.batch)
    if draw(st.booleans()):
        dash = draw(st.sampled_from("-."))
        parts[5] = dash.join((report.date[:4], report.date[4:6], report.date[6:]))
    seps = [
        draw(st.sampled_from(SEPARATOR_SLIPS)) if draw(st.booleans()) else s for s in CANONICAL_SEPARATORS
    ]
    stem = parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:], strict=True))
    ext = draw(st.sampled_from([report.ext, report.ext.lower(), report.ext.title()]))
    name = stem + "." + ext
    if draw(st.booleans()):
        name += "." + draw(st.sampled_from([report.ext, report.ext.lower()]))
    if draw(st.booleans()):
        name = name.lower()
    widths = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(full_width(c) if wide else c for c, wide in zip(name, widths, strict=True))
    name = draw(st.sampled_from(LEADERS)) + name + draw(st.sampled_from(TRAILERS))
    return report.name, name


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(near_misses())
def test_certain_slips_are_repaired_to_the_original_name(case: tuple[str, str]) -> None:
    original, slipped = case
    result = check(slipped)
    if slipped == original:
        assert result.name is not None
        return
    assert result.name is None
    [finding] = result.findings
    assert suggestion_of(finding) == original


NAME_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=())),
    st.text(alphabet=st.sampled_from("CISPDQZVTXZIP0123456789-_. ＿Ｑｔｘ\x00\n\u3000cisp")),
    st.builds(
        lambda head, junk, tail: head + junk + tail,
        st.sampled_from([EXAMPLE[:k] for k in range(len(EXAMPLE))]),
        st.text(st.characters(exclude_categories=()), max_size=3),
        st.sampled_from([EXAMPLE[k:] for k in range(len(EXAMPLE))]),
    ),
)


@settings(max_examples=500)
@given(NAME_TEXT)
def test_arbitrary_text_never_raises_and_is_parsed_or_named_invalid(name: str) -> None:
    result = check(name)
    if result.name is None:
        assert parse_name(name) is None
        assert codes(result) == ["NAME_INVALID"]
    else:
        assert result.name.name == name
    for finding in result.findings:
        for text in texts(finding):
            assert not [c for c in text if unicodedata.category(c) in UNPRINTABLE], text
            text.encode("utf-8")


@settings(max_examples=500)
@given(NAME_TEXT)
def test_a_suggested_name_always_parses(name: str) -> None:
    diagnosis = diagnose_name(name)
    if diagnosis.suggestion is not None:
        assert parse_name(diagnosis.suggestion) is not None
        assert all(p.repaired for p in diagnosis.problems)
    result = check(name)
    if result.name is None:
        suggested = suggestion_of(result.findings[0])
        assert suggested == diagnosis.suggestion
        assert suggested is None or parse_name(suggested) is not None
