"""The field rules of spec 4, written twice from one definition: as Python checks and as regex pieces.

The streaming validator (``validators.text``) matches runs of valid records with one compiled bytes
regex per table and only asks the Python checks about the lines that regex refused. Both forms live
here, side by side, because they must accept exactly the same values; the tests hold them to that.

Decisions the spec leaves open:
- ``D``: a real Gregorian date with a four-digit year from 1000 to 9999 (an earlier year is a typo).
- ``N(p,s)``: digits on both sides of a decimal point (``0.5``, not ``.5`` or ``1.``), ASCII digits only,
  leading zeros allowed, no ``+``, exponent, grouping or spaces; ``N(p,p)`` takes the integer part ``0``.
- ``E``: exact, case-sensitive match of one listed value.
- A field has at most one finding, checked in this order: control character, empty, type, file name.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from codes.fieldtypes import FieldType, Kind
from codes.tables import TableSpec

FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters no field may hold: C0 and C1 controls (incl. CR, TAB, NEL) and the Unicode separators."""

_CHAR_NAMES = {
    "\t": "TAB",
    "\r": "CR",
    "\n": "LF",
    "\x0b": "VT",
    "\x0c": "FF",
    "\x1b": "ESC",
    "\x7f": "DEL",
    "\x85": "NEL",
    "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}

_DAY_31 = rb"(?:0[1-9]|[12][0-9]|3[01])"
_DAY_30 = rb"(?:0[1-9]|[12][0-9]|30)"
_LEAP_YEAR = rb"(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
DATE_PATTERN = (
    rb"[1-9][0-9]{3}+(?:0(?:[13578]" + _DAY_31 + rb"|[469]" + _DAY_30
    + rb"|2(?:0[1-9]|1[0-9]|2[0-8]|29(?<=" + _LEAP_YEAR + rb"0229)))"
    + rb"|1(?:[02]" + _DAY_31 + rb"|1" + _DAY_30 + rb"))"
)  # fmt: skip
"""YYYYMMDD, years 1000-9999, branching on one digit at a time (the regex engine's cheap case); the
leap-year test runs only for 0229, by looking back at the year."""
TIME_PATTERN = rb"(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]"

_DIGITS = re.compile("[0-9]*")
_SOURCES = {
    "org": {"source_zh": "机构编号", "source_en": "institution code"},
    "date": {"source_zh": "数据日期", "source_en": "data date"},
}
_NEVER = rb"(?!)"


def char_label(char: str) -> str:
    """``U+0009 (TAB)``: how a finding names a forbidden character without quoting the value."""
    name = _CHAR_NAMES.get(char)
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def is_date(value: str) -> bool:
    if len(value) != 8 or not value.isascii() or not value.isdigit():
        return False
    year, month, day = int(value[:4]), int(value[4:6]), int(value[6:])
    return year >= 1000 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def is_time(value: str) -> bool:
    if len(value) != 6 or not value.isascii() or not value.isdigit():
        return False
    return int(value[:2]) <= 23 and int(value[2:4]) <= 59 and int(value[4:]) <= 59


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one field: a finding code and the template parameters (never the value)."""

    code: str
    params: dict[str, object]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field of a table as the validator applies it; ``expected`` is what the file name dictates."""

    number: int  # 1-based
    name: str
    type: FieldType
    required: bool
    expected: str | None = None
    source: str = ""  # "org" or "date": the part of the file name ``expected`` comes from

    def problem(self, value: str) -> Problem | None:
        """The first thing wrong with ``value`` (control character, empty, type, file name) or None."""
        bad = FORBIDDEN.search(value)
        if bad:
            return Problem("CONTROL_CHAR", {"char": char_label(bad.group())})
        if not value:
            return Problem("REQUIRED_EMPTY", {}) if self.required else None
        problem = type_problem(self.type, value)
        if problem is None and self.expected is not None and value != self.expected:
            return Problem("FIELD_MISMATCH", {**_SOURCES[self.source], "expected": self.expected})
        return problem

    def piece(self, end: bytes, *, strict: bool, hot_date: str | None) -> bytes:
        """The regex for this field's value followed by ``end`` (its separator or the line ending).

        It matches exactly the values ``problem`` accepts. Free text is matched with ``[^|]`` (fast in
        the regex engine) unless ``strict`` or last on the line; the caller then proves by counting that
        no value ran over a line end and that no control character was inside.
        """
        last = end != rb"\|"
        if self.expected is not None:
            if self.problem(self.expected) is not None:
                return _NEVER  # nothing can both be valid and equal an invalid file-name part
            value = re.escape(self.expected.encode()) + end
        elif self.type.kind is Kind.DECIMAL and self.type.scale:
            value = _decimal_piece(self.type, end)
        else:
            kind, required = self.type, self.required
            value = _type_piece(kind, last=last, strict=strict, hot_date=hot_date, required=required) + end
        if self.required or (self.type.kind is Kind.TEXT and self.expected is None):
            return value
        return b"(?:" + end + b"|" + value + b")"  # empty first: the engine tells them apart by one byte


def _decimal_piece(ftype: FieldType, end: bytes) -> bytes:
    """N(p,s) with s > 0 and its end: after the integer part, the point or the end decides at once."""
    whole = ftype.precision - ftype.scale
    integer = b"[0-9]{1,%d}+" % whole if whole else b"0"
    return b"-?+" + integer + b"(?:" + end + b"|\\.[0-9]{1,%d}+" % ftype.scale + end + b")"


def _type_piece(ftype: FieldType, *, last: bool, strict: bool, hot_date: str | None, required: bool) -> bytes:
    kind = ftype.kind
    if kind is Kind.CODE:
        # ASCII only: lengths are in characters and the regex counts bytes, so a code of n bytes with a
        # multibyte character in it (fewer than n characters) must go to the slow path, which counts
        char = rb"[^|\r\n\x80-\xff]" if last or strict else rb"[^|\x80-\xff]"
        return char + b"{%d,%d}+" % (ftype.length, ftype.length)
    if kind is Kind.TEXT:  # a byte count above the limit sends the line to the slow path, which counts
        char = rb"[^|\r\n]" if last or strict else rb"[^|]"
        return char + b"{%d,%d}+" % (int(required), ftype.length)
    if kind is Kind.DECIMAL:  # whole numbers only: see _decimal_piece for the others
        return b"-?+" + (b"[0-9]{1,%d}+" % ftype.precision)
    if kind is Kind.DATE:
        if hot_date is not None and is_date(hot_date):
            return b"(?:" + hot_date.encode() + b"|" + DATE_PATTERN + b")"
        return DATE_PATTERN
    if kind is Kind.TIME:
        return TIME_PATTERN
    return _alternatives([c.encode() for c in ftype.choices])


def _alternatives(words: list[bytes]) -> bytes:
    """A regex matching exactly ``words``, factored by common first byte so the engine rarely backtracks."""
    if all(len(w) == 1 for w in words) and len(words) > 1:
        return b"[" + b"".join(re.escape(w) for w in sorted(words)) + b"]"
    groups: dict[bytes, list[bytes]] = {}
    for word in words:
        groups.setdefault(word[:1], []).append(word[1:])
    branches = []
    for first, tails in groups.items():
        rest = [t for t in tails if t]
        tail = _alternatives(rest) if rest else b""
        if rest and len(rest) < len(tails):
            tail = b"(?:" + tail + b")?"
        branches.append(re.escape(first) + tail)
    return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"


def type_problem(ftype: FieldType, value: str) -> Problem | None:
    """Whether a non-empty ``value`` is of ``ftype`` (spec 4 table); lengths count characters."""
    kind = ftype.kind
    if kind is Kind.CODE:
        if len(value) != ftype.length:
            return Problem("FIELD_LENGTH", {"length": len(value), "expected": ftype.length})
        return None
    if kind is Kind.TEXT:
        if len(value) > ftype.length:
            return Problem("FIELD_TOO_LONG", {"length": len(value), "max": ftype.length})
        return None
    if kind is Kind.DECIMAL:
        return _decimal_problem(ftype, value)
    if kind is Kind.DATE:
        if is_date(value):
            return None
        if len(value) == 8 and value.isascii() and value.isdigit():
            return _format(
                "YYYYMMDD",
                "不是有效的日历日期（注意各月天数与闰年；年份须为 1000–9999）",
                "not a real calendar date (mind the days of each month and leap years; years 1000-9999)",
            )
        return _format(
            "YYYYMMDD",
            "日期须为 8 位数字 YYYYMMDD，不带分隔符，例如 20240131",
            "dates are 8 digits YYYYMMDD without separators, e.g. 20240131",
        )
    if kind is Kind.TIME:
        if is_time(value):
            return None
        return _format(
            "HHMMSS",
            "时间须为 6 位数字 HHMMSS：时 00–23、分和秒 00–59，不带分隔符，例如 093015",
            "times are 6 digits HHMMSS: hours 00-23, minutes and seconds 00-59, no separators, e.g. 093015",
        )
    if value in ftype.choices:
        return None
    return Problem("FIELD_ENUM", {"allowed": ",".join(ftype.choices)})


def _decimal_problem(ftype: FieldType, value: str) -> Problem | None:
    whole = ftype.precision - ftype.scale
    body = value[1:] if value.startswith("-") else value
    integer, dot, fraction = body.partition(".")
    if not all(_DIGITS.fullmatch(part) for part in (integer, fraction)) or "." in fraction:
        zh, en = (
            "只允许数字、可选的前导负号和一个小数点；不允许 +、千分位、科学计数法或空格，例如 -1234.56",
            "only digits, an optional leading '-' and one decimal point: no '+', grouping, exponent or "
            "spaces, e.g. -1234.56",
        )
    elif dot and not ftype.scale:
        zh, en = "该字段为整数，不允许小数点", "this field is a whole number: no decimal point"
    elif not integer or (dot and not fraction):
        zh, en = "小数点两侧都须有数字，例如 0.5、1", "write digits on both sides of the point, e.g. 0.5 or 1"
    elif whole == 0 and integer != "0":
        zh, en = "整数部分只能为 0", "the integer part must be 0"
    elif len(integer) > whole and whole:
        zh, en = f"整数部分最多 {whole} 位", f"at most {whole} digits before the point"
    elif len(fraction) > ftype.scale:
        zh, en = f"小数部分最多 {ftype.scale} 位", f"at most {ftype.scale} digits after the point"
    else:
        return None
    return _format(str(ftype), zh, en)


def _format(expected: str, hint_zh: str, hint_en: str) -> Problem:
    params: dict[str, object] = {"expected": expected, "format_hint_zh": hint_zh, "format_hint_en": hint_en}
    return Problem("FIELD_FORMAT", params)


def table_rules(table: TableSpec, org: str | None, date: str | None) -> tuple[FieldRule, ...]:
    """The table's fields as rules; JGBH and SJRQ must equal the file name's institution and date."""
    dictated = {"JGBH": (org, "org"), "SJRQ": (date, "date")}
    rules = []
    for number, spec in enumerate(table.fields, start=1):
        expected, source = dictated.get(spec.name, (None, ""))
        source = source if expected is not None else ""
        rules.append(FieldRule(number, spec.name, spec.type, spec.required, expected, source))
    return tuple(rules)
