"""Streaming validation of a TXT report file (spec 4): bytes in, findings out, in bounded memory.

Files are gigabytes and most of their lines are valid, so the common case must cost almost nothing:
one compiled bytes regex per table (``_Grammar``) matches a whole run of valid records in C, and a
few whole-chunk C passes (one ``bytes.translate``, counts) prove what that regex leaves unchecked:
no control character, no value running over a line end, valid UTF-8. Only a line the fast path
refuses is decoded and checked field by field in Python (``validators.text_rules``), which says what
is wrong with it. Chunks are never joined: only the line cut by a chunk border is carried over, and a
line longer than any valid record can be is capped, reported and skipped to its end.

Decisions the spec leaves open:
- ``records`` counts every line, valid or not; a last line without newline counts, an empty file has 0.
- The file's line-ending style is that of its first line; every line that ends otherwise is
  LINE_ENDINGS_MIXED. A CR not followed by LF is a character inside a field: CONTROL_CHAR. A file
  with CR-only endings therefore reads as one long line with CONTROL_CHAR (U+000D) and FIELD_COUNT.
- A line with invalid UTF-8 gets one ENCODING_INVALID (its first bad byte, offset in the file) and no
  field checks, as its text is unknown; the same for NUL_BYTE. A wrong field count gets FIELD_COUNT and
  no field checks (the fields cannot be told apart), after the line's first control character if any.
- A BOM is reported as BOM_PRESENT at line 1 and then ignored.
- A line longer than the cap (``_Grammar.cap`` bytes, far above any valid record) is judged on its
  first ``cap`` bytes plus the count of its separators; the rest is skipped unread.
- Attachment rows are kept for every line with the right field count that decodes and whose BGLX and
  FJMC pass their checks: the pair check needs the name and kind, and reports size and hash itself.
- Cost per byte stays within a small factor of valid input whatever the content (issue 19: 20 MB of
  lines ``1`` took 55 s against 0.74 s for valid rows). Once the kept findings are full
  (``MAX_REPORTED``) and hold an error, the file is rejected whatever else it holds: from there on its
  lines are only counted against the record regex in C, each refused line one more finding in
  ``total``, which is then a lower bound (a refused line may have had several). Before that, no more
  lines are diagnosed than it takes to fill the findings, and the searches for control characters and
  line separators take one position a line, not every occurrence.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from codes.fieldtypes import Kind
from codes.tables import TableSpec
from validators.attachments import AttachmentRow
from validators.findings import MAX_REPORTED, Finding, FindingLog, make
from validators.text_rules import FORBIDDEN, FieldRule, Problem, char_label, table_rules

__all__ = ["TextReport", "TextValidator", "merge_reports", "validate_text"]

BOM = b"\xef\xbb\xbf"
SHOWN_CHARS = 64
"""Longest value a finding carries; longer ones are cut and end with an ellipsis."""

_ENDING_NAMES = {"\n": "LF", "\r\n": "CRLF"}
_CONTROLS = bytes(range(0x20)) + b"\x7f"
_PLAIN_ASCII = bytes(b for b in range(0x80) if b not in _CONTROLS and b != 0x7C)
"""What ``_lines`` drops to see the rest at once: controls, separators and any non-ASCII byte."""
_HIGH = bytes(range(0x80, 0x100))
_CONTINUATION = bytes(range(0x80, 0xC0))
_NOT_CONTINUATION = bytes(b for b in range(256) if b not in _CONTINUATION)
_SEPARATORS = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")  # C1 controls, U+2028, U+2029
_CLEAN_CHARS = (
    rb"(?:[\x20-\x7e]++|\xc2[\xa0-\xbf]|[\xc3-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]"
    rb"|\xe2(?!\x80[\xa8\xa9])[\x80-\xbf]{2}|[\xe1\xe3-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})*+"
)
"""Characters a field may hold: printable ASCII (a run at a time) or valid UTF-8 that is not a C1
control, U+2028 or U+2029 (``text_rules.FORBIDDEN``)."""
_MIN_CAP = 64 * 1024
_SMALL_BYTES = 16 * 1024
"""Lines up to this size at once are matched with the table's generic record regex and their file-name
fields compared in Python (~1 us a line) instead of compiling the regex of their (institution, date),
~0.5 ms for D2001: a burst brings small files from many institutions and dates, few of each."""


@dataclass(slots=True)
class TextReport:
    """What validating a TXT file (or a segment of one) found."""

    records: int
    findings: list[Finding]
    total: int
    attachment_rows: list[AttachmentRow] = field(default_factory=list)
    line_ending: str | None = None  # "\n" or "\r\n"; None when no line ended
    # how ``total`` came about, for ``merge_reports``: the findings of each diagnosed line that had any
    # (and of the BOM), then the refused lines only counted once the findings were full
    line_findings: list[int] = field(default_factory=list, compare=False, repr=False)
    counted: int = field(default=0, compare=False, repr=False)


class _Grammar:
    """Everything compiled once per (table, org, date): rules, the record regexes, the line cap."""

    def __init__(self, table: TableSpec, org: str | None, date: str | None) -> None:
        self.table = table
        self.rules = table_rules(table, org, date)
        self.width = len(self.rules)
        self.restricted = table.restricted
        self.attachments = table.attachments
        self.columns = {rule.name: rule.number - 1 for rule in self.rules}
        most = sum(_max_chars(rule) for rule in self.rules) + self.width + 1
        self.cap = max(_MIN_CAP, 4 * most)
        self._date = date
        self._regexes: dict[tuple[str, bool], re.Pattern[bytes]] = {}
        self._line_regexes: dict[str, re.Pattern[bytes]] = {}
        # (column, value, required) of the fields the file name dictates (JGBH, SJRQ)
        self.dictated = tuple(
            (rule.number - 1, rule.expected.encode(), rule.required)
            for rule in self.rules
            if rule.expected is not None
        )

    def regex(self, ending: str, *, strict: bool) -> re.Pattern[bytes]:
        """The record regex for one line ending, compiled when first needed (~0.5 ms each for D2001): a
        file has one ending, and needs the strict form only when a value may have run over a line end."""
        key = (ending, strict)
        found = self._regexes.get(key)
        if found is None:  # two threads may both compile it: the same pattern, either one is kept
            found = self._regexes[key] = self._compile(ending, strict=strict, hot_date=self._date)
        return found

    def line_regex(self, ending: str) -> re.Pattern[bytes]:
        """One valid line at any line start, ``subn`` counts a buffer's valid lines in C: valid UTF-8
        without a control character or line separator (what the fast path's extra passes prove), then
        a record with strict values."""
        found = self._line_regexes.get(ending)
        if found is None:
            end = re.escape(ending.encode())
            record = self._record(ending, strict=True, hot_date=self._date)
            # the record first: a refused line fails there at once, and only records are scanned again
            found = re.compile(b"(?m)^(?=" + record + b")" + _CLEAN_CHARS + end)
            self._line_regexes[ending] = found
        return found

    def _compile(self, ending: str, *, strict: bool, hot_date: str | None) -> re.Pattern[bytes]:
        return re.compile(b"(?:" + self._record(ending, strict=strict, hot_date=hot_date) + b")*+")

    def _record(self, ending: str, *, strict: bool, hot_date: str | None) -> bytes:
        # a one-field table has no separators to count, so its values must stop at line ends themselves
        strict = strict or self.width == 1
        ends = [rb"\|"] * (self.width - 1) + [re.escape(ending.encode())]
        pairs = zip(self.rules, ends, strict=True)
        return b"".join(rule.piece(end, strict=strict, hot_date=hot_date) for rule, end in pairs)


def _max_chars(rule: FieldRule) -> int:
    kind = rule.type
    return max(kind.length, kind.precision + 2, 8, *(len(c) for c in kind.choices))


@lru_cache(maxsize=1024)
def _grammar(table: TableSpec, org: str | None, date: str | None) -> _Grammar:
    """One a (table, institution, data date): a day brings files from hundreds of institutions, and each
    compiles its own record regexes (a few KiB kept each)."""
    return _Grammar(table, org, date)


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


@dataclass(slots=True)
class _Overlong:
    """A line past the cap: its first ``cap`` bytes kept, the rest only counted until its newline."""

    head: bytes
    offset: int
    bars: int = 0  # separators in the skipped rest
    open_chars: int = 0  # characters of the cut field that lie in the skipped rest
    open: bool = True  # still inside the cut field
    last: bytes = b""  # last byte seen, to tell CRLF


class TextValidator:
    """Feed a TXT file's bytes in chunks of any size, then ``finish`` for the report.

    ``org`` and ``date`` are the institution code and data date from the file name (JGBH and SJRQ must
    equal them). To validate a segment of a file that starts at a line boundary, pass
    ``file_start=False``, the segment's ``first_line`` and byte ``offset`` and, when known, the file's
    ``line_ending`` so that line numbers, offsets and line-ending findings come out as for the whole file.
    """

    def __init__(
        self,
        table: TableSpec,
        *,
        org: str | None = None,
        date: str | None = None,
        first_line: int = 1,
        file_start: bool = True,
        limit: int = MAX_REPORTED,
        line_ending: str | None = None,
        offset: int = 0,
    ) -> None:
        if line_ending not in (None, *_ENDING_NAMES):
            raise ValueError(f"line_ending is '\\n', '\\r\\n' or None, not {line_ending!r}")
        self._g = _grammar(table, org, date)
        self._generic = _grammar(table, None, None)  # for small chunks: see _SMALL_BYTES
        self._log = FindingLog(limit)
        self._line = first_line  # number of the next line to begin
        self._offset = offset  # file offset of the next byte fed
        self._style = line_ending
        self._bom = file_start
        self._bom_held = b""
        self._held: list[bytes] = []  # the line cut by the last chunk border
        self._held_len = 0
        self._held_offset = offset
        self._over: _Overlong | None = None
        self._records = 0
        self._rows: list[AttachmentRow] = []
        self._done = False
        self._counting = False  # the kept findings are full and hold an error: lines are only counted
        self._line_findings: list[int] = []  # see TextReport
        self._counted = 0

    # -- input --------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("feed() after finish()")
        self._feed(chunk)

    def finish(self) -> TextReport:
        if not self._done:
            self._done = True
            if self._bom_held:
                self._bom, held, self._bom_held = False, self._bom_held, b""
                self._feed(held)
            if self._over is not None:
                self._end_overlong(terminated=False)
            elif self._held:
                line = b"".join(self._held)
                self._slow(line, 0, len(line), self._held_offset, terminated=False)
                self._line += 1
                self._records += 1
        return TextReport(
            self._records,
            list(self._log.items),
            self._log.total,
            self._rows,
            self._style,
            self._line_findings,
            self._counted,
        )

    def _feed(self, chunk: bytes) -> None:
        if self._bom:
            chunk = self._take_bom(chunk)
        if self._over is not None:
            chunk = self._skip_overlong(chunk)
        if not chunk:
            return
        first = chunk.find(b"\n")
        if first < 0:
            self._hold(chunk)
            self._offset += len(chunk)
            return
        head_offset = self._held_offset if self._held else self._offset
        head = b"".join([*self._held, chunk[: first + 1]])
        self._held, self._held_len = [], 0
        if self._style is None:
            self._slow(head, 0, len(head) - 1, head_offset)
            self._line += 1
            self._records += 1
        else:
            self._lines(head, 0, len(head), head_offset)
        last = chunk.rfind(b"\n") + 1
        if last > first + 1:
            self._lines(chunk, first + 1, last, self._offset)
        self._offset += last
        if last < len(chunk):
            self._hold(chunk[last:])
        self._offset += len(chunk) - last

    def _take_bom(self, chunk: bytes) -> bytes:
        """Strip and report a BOM at the file start; hold up to two bytes until it can be told."""
        data = self._bom_held + chunk
        if len(data) < len(BOM) and BOM.startswith(data):
            self._bom_held = data
            return b""
        self._bom, self._bom_held = False, b""
        if not data.startswith(BOM):
            return data
        self._emit("BOM_PRESENT", line=self._line)
        self._line_findings.append(1)
        self._offset += len(BOM)
        return data[len(BOM) :]

    def _hold(self, piece: bytes) -> None:
        """Carry the line cut by a chunk border; past the cap, keep only its head and count the rest."""
        if not self._held:
            self._held_offset = self._offset
        self._held.append(piece)
        self._held_len += len(piece)
        if self._held_len > self._g.cap:
            line = b"".join(self._held)
            self._held, self._held_len = [], 0
            cut = self._g.cap
            while cut and line[cut] in _CONTINUATION:  # do not split a character
                cut -= 1
            self._over = _Overlong(line[:cut], self._held_offset)
            self._count_overlong(line[cut:])

    # -- overlong lines -----------------------------------------------------------------------------

    def _count_overlong(self, piece: bytes) -> None:
        over = self._over
        if over is None or not piece:
            return
        if over.open:
            bar = piece.find(b"|")
            part = piece if bar < 0 else piece[:bar]
            over.open_chars += len(part) - len(part.translate(None, _NOT_CONTINUATION))
            over.open = bar < 0
        over.bars += piece.count(b"|")
        over.last = piece[-1:]

    def _skip_overlong(self, chunk: bytes) -> bytes:
        end = chunk.find(b"\n")
        if end < 0:
            self._count_overlong(chunk)
            self._offset += len(chunk)
            return b""
        self._count_overlong(chunk[:end])
        self._end_overlong(terminated=True)
        self._offset += end + 1
        return chunk[end + 1 :]

    def _end_overlong(self, *, terminated: bool) -> None:
        over = self._over
        if over is None:
            return
        self._over = None
        if self._saturated():
            self._log.total += 1  # rejected already: an overlong line is one more refused line
            self._counted += 1
            self._line += 1
            self._records += 1
            return
        crlf = terminated and over.last == b"\r"
        more_chars = over.open_chars - (1 if crlf and over.open else 0)
        raw = over.head + (b"\r" if crlf else b"")
        self._slow(
            raw, 0, len(raw), over.offset, terminated=terminated, more_bars=over.bars, more_chars=more_chars
        )
        self._line += 1
        self._records += 1

    # -- the fast path ------------------------------------------------------------------------------

    def _saturated(self) -> bool:
        if not self._counting and self._log.full and self._log.has_errors:
            self._counting = True
        return self._counting

    def _lines(self, buf: bytes, start: int, end: int, base: int) -> None:
        """Validate the complete lines ``buf[start:end]`` (``end`` just after a newline): diagnose them
        until the findings are full, then only count them."""
        while start < end:
            if self._saturated():
                self._count_lines(buf, start, end)
                return
            start = self._diagnose_lines(buf, start, end, base)

    def _count_lines(self, buf: bytes, start: int, end: int) -> None:
        """Lines of a file rejected already: each line the strict record regex refuses is one finding."""
        newlines = buf.count(b"\n", start, end)
        valid = self._g.line_regex(self._style or "\n").subn(b"", buf[start:end])[1]
        self._log.total += newlines - valid
        self._counted += newlines - valid
        self._line += newlines
        self._records += newlines

    def _diagnose_lines(self, buf: bytes, start: int, end: int, base: int) -> int:
        """Diagnose ``buf[start:end]``, or only its first lines, up to as many refused ones as fill the
        kept findings; returns where it stopped. Lines after the one that filled them are counted."""
        g, style = self._g, self._style
        crlf = style == "\r\n"
        kept = buf.translate(None, _PLAIN_ASCII)
        all_bars, all_newlines = kept.count(b"|"), kept.count(b"\n")
        all_returns = kept.count(b"\r") if len(kept) > all_bars + all_newlines else 0
        outside = buf[:start] + buf[end:] if start or end < len(buf) else b""
        bars = all_bars - outside.count(b"|")
        newlines = all_newlines - outside.count(b"\n")
        returns = all_returns - outside.count(b"\r")
        stops: set[int] = set()
        room = self._log.room  # no more problem lines are searched for than can fill the findings
        if len(kept) != all_bars + all_newlines + all_returns:
            ascii_kept = kept if kept.isascii() else kept.translate(None, _HIGH)
            if len(ascii_kept) != all_bars + all_newlines + all_returns:
                controls = _control_positions(buf, start, end, ascii_kept, room)
                stops.update(_line_starts(buf, start, end, controls))
            if len(ascii_kept) != len(kept):
                stops.update(_line_starts(buf, start, end, _unicode_problems(buf, start, end, room)))
        if returns and not crlf:
            stops.update(_line_starts(buf, start, end, _positions(buf, b"\r", start, end, room)))
        ordered = sorted(stops)
        if len(ordered) > room:  # the searches stopped early: diagnose up to the last line they vouch for
            return self._diagnose_lines(buf, start, buf.index(b"\n", ordered[room - 1]) + 1, base)
        small = end - start <= _SMALL_BYTES and bool(g.dictated)
        grammar = self._generic if small else g  # the same records, the file-name fields compared apart
        bad, cut = _refused(buf, start, end, grammar.regex(style or "\n", strict=False), ordered, room)
        if cut < end:  # these lines fill the findings: diagnose them alone, the rest is counted
            return self._diagnose_lines(buf, start, cut, base)
        if g.width > 1:
            lines = newlines - len(bad)
            bad_bars = bad_returns = 0
            for line_start in bad:
                line_end = buf.index(b"\n", line_start) + 1
                bad_bars += buf.count(b"|", line_start, line_end)
                bad_returns += buf.count(b"\r", line_start, line_end)
            if bars - bad_bars != (g.width - 1) * lines or (crlf and returns - bad_returns != lines):
                # a free-text value ran over a line end or hid a CR: find the lines with strict values
                bad, _ = _refused(buf, start, end, grammar.regex(style or "\n", strict=True), ordered, None)
        if small:  # every line the regex took is now one whole record: compare its file-name fields
            bad = _mismatched(buf, start, end, bad, g.dictated, crlf=crlf)
        self._account(buf, start, end, base, bad, newlines)
        return end

    def _account(self, buf: bytes, start: int, end: int, base: int, bad: list[int], newlines: int) -> None:
        """Diagnose the refused lines and collect attachment rows; advance the line count."""
        first = self._line
        attachments = self._g.attachments
        line, pos = first, start
        for line_start in bad:
            if attachments:
                self._rows_of(buf, pos, line_start, line)
            if attachments or not self._log.full:  # line numbers are only needed for what is kept
                line += buf.count(b"\n", pos, line_start)
            pos = buf.index(b"\n", line_start) + 1
            self._line = line
            self._slow(buf, line_start, pos - 1, base)
            line += 1
            if self._saturated():  # the same line whatever the chunks: the rest is only counted
                consumed = buf.count(b"\n", start, pos)
                self._line = first + consumed
                self._records += consumed
                self._count_lines(buf, pos, end)
                return
        if attachments:
            self._rows_of(buf, pos, end, line)
        self._line = first + newlines
        self._records += newlines

    def _rows_of(self, buf: bytes, start: int, end: int, first_line: int) -> None:
        if start >= end:
            return
        for number, raw in enumerate(buf[start : end - 1].split(b"\n"), start=first_line):
            self._row(raw.rstrip(b"\r").decode("utf-8").split("|"), number)

    def _row(self, values: list[str], line: int) -> None:
        cols = self._g.columns
        sha = values[cols["SHA256"]] if "SHA256" in cols else ""
        kind, name, size = values[cols["BGLX"]], values[cols["FJMC"]], values[cols["WJDX"]]
        self._rows.append(AttachmentRow(line, kind, name, size, sha))

    # -- the slow path ------------------------------------------------------------------------------

    def _slow(
        self,
        buf: bytes,
        start: int,
        stop: int,
        base: int,
        *,
        terminated: bool = True,
        more_bars: int = 0,
        more_chars: int = 0,
    ) -> None:
        before = self._log.total
        self._diagnose(
            buf, start, stop, base, terminated=terminated, more_bars=more_bars, more_chars=more_chars
        )
        if self._log.total > before:
            self._line_findings.append(self._log.total - before)

    def _diagnose(
        self,
        buf: bytes,
        start: int,
        stop: int,
        base: int,
        *,
        terminated: bool = True,
        more_bars: int = 0,
        more_chars: int = 0,
    ) -> None:
        """Say what is wrong with the line ``buf[start:stop]`` (newline excluded), numbered ``_line``."""
        raw = buf[start:stop]
        line = self._line
        if terminated:
            ending = "\r\n" if raw.endswith(b"\r") else "\n"
            raw = raw[:-1] if ending == "\r\n" else raw
            if self._style is None:
                self._style = ending
            elif ending != self._style:
                seen, expected = _ENDING_NAMES[ending], _ENDING_NAMES[self._style]
                self._emit("LINE_ENDINGS_MIXED", line=line, found=seen, expected=expected)
        g = self._g
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            index = raw.count(b"|", 0, exc.start)
            shown = raw.split(b"|")[index].decode("utf-8", "backslashreplace")
            self._emit_field("ENCODING_INVALID", line, index, shown, offset=base + start + exc.start)
            return
        if "\x00" in text:
            index = text.count("|", 0, text.index("\x00"))
            self._emit_field("NUL_BYTE", line, index, text.split("|")[index])
            return
        values = text.split("|")
        found = len(values) + more_bars
        if found != g.width:
            bad = FORBIDDEN.search(text)  # a stray CR (CR-only endings) explains a wrong count best
            if bad:
                index = text.count("|", 0, bad.start())
                self._emit_field("CONTROL_CHAR", line, index, values[index], char=char_label(bad.group()))
            whole, code = self._value(text), g.table.code
            self._emit("FIELD_COUNT", line=line, value=whole, found=found, expected=g.width, table=code)
            return
        failed: set[str] = set()
        cut = len(values) - 1 if more_chars else -1
        for index, (rule, value) in enumerate(zip(g.rules, values, strict=False)):
            problem = rule.problem(value)
            if index == cut and (problem is None or problem.code in _LENGTH_CODES):
                problem = _overlong_problem(rule, value, more_chars) or problem
            if problem is not None:
                failed.add(rule.name)
                self._emit_field(problem.code, line, index, value, **problem.params)
        if g.attachments and not more_bars and not failed & {"BGLX", "FJMC"}:
            self._row(values, line)

    def _value(self, text: str) -> str | None:
        return None if self._g.restricted else _shown(text)

    def _emit_field(self, code: str, line: int, index: int, value: str, **params: object) -> None:
        name = self._g.rules[index].name if index < self._g.width else ""
        self._emit(code, line=line, field_no=index + 1, field=name, value=self._value(value), **params)

    def _emit(
        self,
        code: str,
        *,
        line: int,
        field_no: int = 0,
        field: str = "",
        value: str | None = None,
        **params: object,
    ) -> None:
        if self._log.full:
            self._log.total += 1  # counted, not kept: no need to build it
            return
        self._log.add(make(code, line=line, field_no=field_no, field=field, value=value, **params))


_LENGTH_CODES = ("FIELD_TOO_LONG", "FIELD_LENGTH")


def _overlong_problem(rule: FieldRule, value: str, more_chars: int) -> Problem | None:
    """The length finding of a field cut by the line cap, counted over its whole length."""
    kind, length = rule.type.kind, len(value) + more_chars
    if kind is Kind.TEXT and length > rule.type.length:
        return Problem("FIELD_TOO_LONG", {"length": length, "max": rule.type.length})
    if kind is Kind.CODE and length != rule.type.length:
        return Problem("FIELD_LENGTH", {"length": length, "expected": rule.type.length})
    return None


def _refused(
    buf: bytes, start: int, end: int, regex: re.Pattern[bytes], stops: list[int], most: int | None
) -> tuple[list[int], int]:
    """Starts of the lines in ``buf[start:end]`` the record regex refuses, and of the ``stops`` lines;
    with ``most``, only up to that many, and where the search stopped (``end`` when it did not)."""
    refused: list[int] = []
    pending = iter(stops)
    stop = next(pending, end)
    pos = start
    while pos < end:
        if pos < stop:
            match = regex.match(buf, pos, stop)
            pos = match.end() if match else pos
            if pos == end:
                break
        refused.append(pos)
        if pos == stop:
            stop = next(pending, end)
        pos = buf.index(b"\n", pos) + 1
        if most is not None and len(refused) >= most and pos < end:
            return refused, pos
    return refused, end


_Dictated = Sequence[tuple[int, bytes, bool]]


def _mismatched(
    buf: bytes, start: int, end: int, refused: list[int], dictated: _Dictated, *, crlf: bool
) -> list[int]:
    """``refused`` and the starts of the other lines whose file-name fields differ from the name's (an
    optional one may be empty), in order. Each line not refused is one record, with all its fields."""
    skip = set(refused)
    found: list[int] = []
    pos = start
    while pos < end:
        stop = buf.index(b"\n", pos)
        if pos not in skip:
            values = buf[pos : stop - crlf].split(b"|")
            if any(values[col] != want and (values[col] or required) for col, want, required in dictated):
                found.append(pos)
        pos = stop + 1
    return sorted(skip.union(found)) if found else refused


def _positions(buf: bytes, needle: bytes, start: int, end: int, most: int) -> list[int]:
    """The first position of ``needle`` in each line that holds it (only lines are wanted: a line of
    a million control characters is one search, not a million), in the first ``most`` such lines."""
    found: list[int] = []
    pos = buf.find(needle, start, end)
    while pos >= 0 and len(found) < most:
        found.append(pos)
        line_end = buf.find(b"\n", pos, end)
        if line_end < 0:
            break
        pos = buf.find(needle, line_end + 1, end)
    return found


def _line_starts(buf: bytes, start: int, end: int, positions: Iterable[int]) -> list[int]:
    return [max(start, buf.rfind(b"\n", start, pos) + 1) for pos in positions]


def _control_positions(buf: bytes, start: int, end: int, kept: bytes, most: int) -> list[int]:
    positions: list[int] = []
    for byte in set(kept) - {0x7C, 0x0A, 0x0D}:
        positions.extend(_positions(buf, bytes([byte]), start, end, most))
    return positions


def _unicode_problems(buf: bytes, start: int, end: int, most: int) -> list[int]:
    """Positions of invalid UTF-8 (one a line), C1 controls and U+2028/U+2029 (the first a line) in
    ``buf[start:end]``, in the first ``most`` lines of each kind that hold one."""
    positions: list[int] = []
    if b"\xc2" in buf or b"\xe2\x80\xa8" in buf or b"\xe2\x80\xa9" in buf:
        found = _SEPARATORS.search(buf, start, end)
        while found is not None and len(positions) < most:  # the first one a line
            positions.append(found.start())
            line_end = buf.find(b"\n", found.start(), end)
            found = _SEPARATORS.search(buf, line_end + 1, end) if line_end >= 0 else None
    invalid = 0
    view = memoryview(buf)
    pos, window = start, _DECODE_WINDOW
    while pos < end and invalid < most:
        stop = min(end, pos + window)
        try:  # a decode error copies what it was given: small windows where errors are dense
            _, used = codecs.utf_8_decode(view[pos:stop], "strict", stop == end)
        except UnicodeDecodeError as exc:
            positions.append(pos + exc.start)
            invalid += 1
            pos = buf.index(b"\n", pos + exc.start) + 1
            window = _DECODE_WINDOW
            continue
        pos += used
        window = min(window * 2, _DECODE_WINDOW_MAX)
    return positions


_DECODE_WINDOW = 256
_DECODE_WINDOW_MAX = 1024 * 1024


# -- whole files and segments ---------------------------------------------------------------------


def validate_text(
    data: bytes | Iterable[bytes], table: TableSpec, *, org: str | None = None, date: str | None = None
) -> TextReport:
    """Validate a whole TXT file given as bytes or as an iterable of chunks."""
    validator = TextValidator(table, org=org, date=date)
    for chunk in [data] if isinstance(data, bytes | bytearray) else data:
        validator.feed(bytes(chunk))
    return validator.finish()


def merge_reports(reports: Sequence[TextReport]) -> TextReport:
    """Join the reports of consecutive segments of one file (the first starting at line 1).

    Counts add up and the first ``MAX_REPORTED`` findings are kept in line order. Segments validated
    without the file's line-ending style may disagree on it: the first line of each segment whose style
    differs from the file's is then reported as LINE_ENDINGS_MIXED. The total is the one validating the
    file in one piece gives: its diagnosed lines' findings until the findings are full, then one for
    each refused line (a segment only knows when its own findings are full, not the file's).
    """
    log = FindingLog(MAX_REPORTED)
    records, rows, style = 0, [], None
    diagnosed, counted = 0, 0
    entries: list[int] = []
    for report in reports:
        if report.line_ending is not None:
            if style is None:
                style = report.line_ending
            elif report.line_ending != style:
                found, expected = _ENDING_NAMES[report.line_ending], _ENDING_NAMES[style]
                log.add(make("LINE_ENDINGS_MIXED", line=records + 1, found=found, expected=expected))
                diagnosed += 1
                entries.append(1)
        log.extend(report.findings)
        for found_on_line in report.line_findings:
            if diagnosed >= MAX_REPORTED and log.has_errors:
                counted += 1
            else:
                diagnosed += found_on_line
                entries.append(found_on_line)
        counted += report.counted
        records += report.records
        rows.extend(report.attachment_rows)
    return TextReport(records, list(log.items), diagnosed + counted, rows, style, entries, counted)
