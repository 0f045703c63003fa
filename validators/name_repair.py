"""Near-miss help for file names the grammar rejects: what is wrong, part by part, and a certain fix.

A corrected name is suggested only when every problem found has one certain repair (letter case,
full-width characters, stray spaces or dots at the ends, separators, zero padding, a doubled or
lower-case extension, a date written with dashes). Nothing the sender did not write is ever guessed: a
missing batch or part, a 7- or 9-digit institution code and a ``.CSV`` export get a diagnosis but no
suggestion. Quoted pieces of the name are echoed with control characters escaped.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from validators.display import visible
from validators.name_grammar import EXTENSIONS, parse_name

__all__ = ["NameDiagnosis", "Problem", "diagnose_name"]

_SHOWN_MAX = 40


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a name; ``repaired`` when the suggestion fixes it without guessing."""

    zh: str
    en: str
    repaired: bool


@dataclass(frozen=True, slots=True)
class NameDiagnosis:
    """Why a name does not follow the grammar, and the corrected name when every repair is certain."""

    problems: tuple[Problem, ...]
    suggestion: str | None


def diagnose_name(name: str) -> NameDiagnosis:
    """Explain a name the grammar rejects; a name it accepts has no problems."""
    if parse_name(name) is not None:
        return NameDiagnosis((), None)
    problems: list[Problem] = []
    candidate = _repair(name, problems)
    if not problems:
        problems.append(Problem("不符合命名格式", "it does not match the pattern", repaired=False))
    certain = all(p.repaired for p in problems)
    if not certain or candidate is None or parse_name(candidate) is None:
        candidate = None
    return NameDiagnosis(tuple(problems), candidate)


def _token(text: str) -> str:
    return visible(text, _SHOWN_MAX)


# --- near-miss repair, step by step; each step records what it found ---------------------------------

_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20, 0x3002: 0x2E}
_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_SEPARATORS = re.compile(r"([-_ ]+)")
_DASHED_DATE = re.compile(
    r"(?<![0-9A-Za-z])([0-9]{4})([-.])(0[1-9]|1[0-2])\2(0[1-9]|[12][0-9]|3[01])(?![0-9])"
)


def _repair(name: str, problems: list[Problem]) -> str | None:
    if all(_is_junk(c) or c == "." for c in name):
        problems.append(
            Problem(
                "文件名为空，或只有空白、点和不可见字符",
                "the name is empty or holds only blanks, dots and invisible characters",
                repaired=False,
            )
        )
        return None
    text = _strip_ends(_from_full_width(name, problems), problems)
    stem, ext = _split_extension(text, problems)
    stem = _undash_date(stem, problems)
    stem = _upper_case(stem, problems)
    fixed = _repair_parts(stem, problems)
    if fixed is None or ext is None:
        return None
    return f"{fixed}.{ext}"


def _from_full_width(text: str, problems: list[Problem]) -> str:
    found = [c for c in dict.fromkeys(text) if ord(c) in _FULL_WIDTH]
    if not found:
        return text
    listed = "、".join(f"“{c}”" for c in found[:5])
    problems.append(
        Problem(
            f"含有全角字符{listed}，应使用半角（ASCII）字符",
            f"it contains full-width characters {' '.join(found[:5])}: use their ASCII forms",
            repaired=True,
        )
    )
    return text.translate(_FULL_WIDTH)


def _is_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("C")


def _strip_ends(text: str, problems: list[Problem]) -> str:
    """Blanks and invisible characters at either end (and dots at the end, which Windows drops) go."""
    start = 0
    while start < len(text) and _is_junk(text[start]):
        start += 1
    end = len(text)
    while end > start and (_is_junk(text[end - 1]) or text[end - 1] == "."):
        end -= 1
    if start:
        junk = _token(text[:start])
        problems.append(
            Problem(
                f"文件名开头有多余的空白或不可见字符“{junk}”",
                f"the name starts with blanks or invisible characters '{junk}'",
                repaired=True,
            )
        )
    if end < len(text):
        junk = _token(text[end:])
        problems.append(
            Problem(
                f"文件名末尾有多余的空格、点或不可见字符“{junk}”",
                f"the name ends with extra spaces, dots or invisible characters '{junk}'",
                repaired=True,
            )
        )
    return text[start:end]


def _split_extension(text: str, problems: list[Problem]) -> tuple[str, str | None]:
    """The stem and the repaired extension (None when there is no certain one)."""
    stem, dot, raw = text.rpartition(".")
    if not dot:
        problems.append(
            Problem("缺少扩展名 .TXT 或 .ZIP", "the extension .TXT or .ZIP is missing", repaired=False)
        )
        return text, None
    ext = _extension(raw, problems)
    inner_stem, inner_dot, inner_raw = stem.rpartition(".")
    inner = _upper_ascii(inner_raw.strip())
    if not inner_dot or inner not in EXTENSIONS:
        return stem, ext
    if inner == ext:
        problems.append(
            Problem(
                f"扩展名重复“.{_token(inner_raw)}.{_token(raw)}”",
                f"the extension is doubled '.{_token(inner_raw)}.{_token(raw)}'",
                repaired=True,
            )
        )
    elif ext is not None:
        problems.append(
            Problem(
                f"文件名有两个扩展名“.{inner}.{ext}”，只能有一个",
                f"the name has two extensions '.{inner}.{ext}' where one is allowed",
                repaired=False,
            )
        )
    return inner_stem, ext


def _upper_ascii(text: str) -> str:
    return text.translate(_UPPER) if text.isascii() else text


def _extension(raw: str, problems: list[Problem]) -> str | None:
    ext = raw.strip()
    if ext != raw:
        problems.append(Problem("扩展名中含有空格", "the extension contains spaces", repaired=True))
    upper = _upper_ascii(ext)
    if upper not in EXTENSIONS:
        problems.append(
            Problem(
                f"扩展名“.{_token(ext)}”不被接受：数据文件为 .TXT，附件为 .ZIP",
                f"the extension '.{_token(ext)}' is not accepted: data files are .TXT, attachments .ZIP",
                repaired=False,
            )
        )
        return None
    if ext != upper:
        problems.append(
            Problem(
                f"扩展名“.{ext}”须为大写“.{upper}”",
                f"the extension '.{ext}' must be upper case '.{upper}'",
                repaired=True,
            )
        )
    return upper


def _undash_date(stem: str, problems: list[Problem]) -> str:
    def undash(match: re.Match[str]) -> str:
        year, _, month, day = match.groups()
        problems.append(
            Problem(
                f"数据日期“{match[0]}”应写作“{year}{month}{day}”（YYYYMMDD，不带分隔符）",
                f"the data date '{match[0]}' must be written '{year}{month}{day}' (YYYYMMDD, no separators)",
                repaired=True,
            )
        )
        return f"{year}{month}{day}"

    return _DASHED_DATE.sub(undash, stem)


def _upper_case(stem: str, problems: list[Problem]) -> str:
    upper = stem.translate(_UPPER)
    if upper != stem:
        problems.append(
            Problem("文件名中的字母须为大写", "the letters in the name must be upper case", repaired=True)
        )
    return upper


# --- the eight parts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    pattern: re.Pattern[str]
    label_zh: str
    label_en: str
    rule_zh: str
    rule_en: str
    repair: Callable[[str], str | None]


def _no_repair(token: str) -> str | None:
    return None


def _pad_version(token: str) -> str | None:
    return f"V0{token[1]}" if re.fullmatch(r"V[0-9]", token) else None


def _unpad_part(token: str) -> str | None:
    return token.lstrip("0") if re.fullmatch(r"0+[1-9]", token) else None


def _pad_batch(token: str) -> str | None:
    return f"{int(token):02d}" if re.fullmatch(r"[0-9]{1,3}", token) and 1 <= int(token) <= 99 else None


_SLOTS = (
    _Slot(
        re.compile(r"[A-Z]{2,8}"),
        "系统前缀",
        "system prefix",
        "2 至 8 个大写字母",
        "2 to 8 capital letters",
        _no_repair,
    ),
    _Slot(re.compile(r"[0-9]{8}"), "机构编号", "institution code", "8 位数字", "8 digits", _no_repair),
    _Slot(
        re.compile(r"[A-Z][0-9]{4}"),
        "表代码",
        "table code",
        "大写字母加 4 位数字，如 D1001",
        "a capital letter and 4 digits, e.g. D1001",
        _no_repair,
    ),
    _Slot(
        re.compile(r"V[0-9]{2}"),
        "版本号",
        "version",
        "V 加两位数字，如 V01",
        "V and two digits, e.g. V01",
        _pad_version,
    ),
    _Slot(re.compile(r"[1-9]"), "分册号", "part number", "一位数字 1 至 9", "one digit 1 to 9", _unpad_part),
    _Slot(
        re.compile(r"[0-9]{8}"),
        "数据日期",
        "data date",
        "YYYYMMDD 共 8 位数字",
        "YYYYMMDD, 8 digits",
        _no_repair,
    ),
    _Slot(
        re.compile(r"[0-9]{2}"),
        "批次号",
        "batch number",
        "两位数字 01 至 99",
        "two digits 01 to 99",
        _pad_batch,
    ),
    _Slot(
        re.compile(r"[QZ]"),
        "模式",
        "mode",
        "Q（全量）或 Z（增量）",
        "Q (full) or Z (incremental)",
        _no_repair,
    ),
)
_BATCH = _SLOTS[6]


def _fits(slot: _Slot, token: str) -> bool:
    return slot.pattern.fullmatch(token) is not None or slot.repair(token) is not None


def _repair_parts(stem: str, problems: list[Problem]) -> str | None:
    """The canonical stem when the eight parts are all there and each is certain, else None."""
    pieces = _SEPARATORS.split(stem)
    tokens, seps = pieces[0::2], pieces[1::2]
    if len(tokens) > 1 and not tokens[0]:
        _stray_separator("开头", "starts", seps[0], problems)
        tokens, seps = tokens[1:], seps[1:]
    if len(tokens) > 1 and not tokens[-1]:
        _stray_separator("结尾", "ends", seps[-1], problems)
        tokens, seps = tokens[:-1], seps[:-1]
    if tokens == [""]:
        problems.append(Problem("扩展名前没有内容", "there is nothing before the extension", repaired=False))
        return None
    if len(tokens) == len(_SLOTS):
        fixed = _check_tokens(_SLOTS, tokens, problems)
        _check_separators(tokens, seps, problems)
        return f"{fixed[0]}-{'_'.join(fixed[1:])}"
    if len(tokens) == len(_SLOTS) - 1:
        _missing_part(tokens, problems)
    elif len(tokens) == len(_SLOTS) + 1:
        _extra_part(tokens, problems)
    else:
        _wrong_count(len(tokens), problems)
    return None


def _stray_separator(where_zh: str, where_en: str, sep: str, problems: list[Problem]) -> None:
    shown = _token(sep)
    problems.append(
        Problem(
            f"文件名主体{where_zh}有多余的分隔符或空格“{shown}”",
            f"the name {where_en} with a stray separator or space '{shown}'",
            repaired=True,
        )
    )


def _check_tokens(slots: tuple[_Slot, ...], tokens: list[str], problems: list[Problem]) -> list[str]:
    fixed: list[str] = []
    for slot, token in zip(slots, tokens, strict=True):
        repaired = None if slot.pattern.fullmatch(token) else slot.repair(token)
        if repaired is not None:
            problems.append(
                Problem(
                    f"{slot.label_zh}“{token}”应写作“{repaired}”（{slot.rule_zh}）",
                    f"the {slot.label_en} '{token}' must be written '{repaired}' ({slot.rule_en})",
                    repaired=True,
                )
            )
            token = repaired
        elif slot.pattern.fullmatch(token) is None:
            problems.append(_bad_token(slot, token))
        fixed.append(token)
    return fixed


def _bad_token(slot: _Slot, token: str) -> Problem:
    shown = _token(token)
    if slot is _SLOTS[1] and token.isascii() and token.isdigit():
        return Problem(
            f"机构编号“{shown}”为 {len(token)} 位，应为 8 位数字",
            f"the institution code '{shown}' has {len(token)} digits where 8 are needed",
            repaired=False,
        )
    odd = [f"U+{ord(c):04X}" for c in dict.fromkeys(token) if not c.isascii()][:3]
    odd_zh = f"，其中含有非 ASCII 字符 {' '.join(odd)}" if odd else ""
    odd_en = f"; it holds the non-ASCII characters {' '.join(odd)}" if odd else ""
    return Problem(
        f"{slot.label_zh}“{shown}”不符合格式（{slot.rule_zh}）{odd_zh}",
        f"the {slot.label_en} '{shown}' is not {slot.rule_en}{odd_en}",
        repaired=False,
    )


def _check_separators(tokens: list[str], seps: list[str], problems: list[Problem]) -> None:
    expected = ["-"] + ["_"] * (len(seps) - 1)
    wrong = [(i, sep) for i, (sep, want) in enumerate(zip(seps, expected, strict=True)) if sep != want]
    spaced = [sep for _, sep in wrong if " " in sep]
    plain = [(i, sep) for i, sep in wrong if " " not in sep]
    if spaced:
        problems.append(
            Problem(
                "文件名中含有空格，各部分之间只能用“_”分隔（系统前缀后为“-”）",
                "the name contains spaces: parts are separated by '_' only ('-' after the system prefix)",
                repaired=True,
            )
        )
    if not plain:
        return
    if len(plain) > 2:
        detail_zh = "系统前缀后用“-”，其余各部分之间用“_”"
        detail_en = "'-' follows the system prefix, '_' separates all other parts"
    else:
        detail_zh = "，".join(
            f"“{_token(tokens[i])}”之后应为“{expected[i]}”而不是“{sep}”" for i, sep in plain
        )
        detail_en = ", ".join(
            f"after '{_token(tokens[i])}' use '{expected[i]}', not '{sep}'" for i, sep in plain
        )
    problems.append(Problem(f"分隔符有误：{detail_zh}", f"wrong separators: {detail_en}", repaired=True))


def _missing_part(tokens: list[str], problems: list[Problem]) -> None:
    gaps = [k for k in range(len(_SLOTS)) if all(map(_fits, _SLOTS[:k] + _SLOTS[k + 1 :], tokens))]
    if len(gaps) != 1:
        _wrong_count(len(tokens), problems)
        return
    slot = _SLOTS[gaps[0]]
    note_zh = "（首次报送为 01，重报依次使用下一个批次号）" if slot is _BATCH else ""
    note_en = " (01 for the first report, the next number for each re-report)" if slot is _BATCH else ""
    problems.append(
        Problem(f"缺少{slot.label_zh}{note_zh}", f"the {slot.label_en} is missing{note_en}", False)
    )
    _check_tokens(_SLOTS[: gaps[0]] + _SLOTS[gaps[0] + 1 :], tokens, problems)


def _extra_part(tokens: list[str], problems: list[Problem]) -> None:
    extras = [k for k in range(len(tokens)) if all(map(_fits, _SLOTS, tokens[:k] + tokens[k + 1 :]))]
    if len({tokens[k] for k in extras}) != 1:
        _wrong_count(len(tokens), problems)
        return
    k = extras[0]
    shown = _token(tokens[k])
    problems.append(Problem(f"多余的部分“{shown}”", f"the part '{shown}' does not belong in the name", False))
    _check_tokens(_SLOTS, tokens[:k] + tokens[k + 1 :], problems)


def _wrong_count(count: int, problems: list[Problem]) -> None:
    problems.append(
        Problem(
            f"文件名主体由 {count} 个部分组成，应为 8 个（以“-”和“_”分隔）",
            f"the name has {count} part{'' if count == 1 else 's'} (separated by '-' or '_'), 8 are needed",
            repaired=False,
        )
    )
