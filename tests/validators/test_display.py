"""validators.display.visible: untrusted text as one printable line, for validators and gateway alike."""

from __future__ import annotations

import pytest

from gateway import text as gateway_text
from validators.display import visible


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("line\nbreak.txt", "line\\x0abreak.txt"),
        ("a\r\nb\tc", "a\\x0d\\x0ab\\x09c"),
        ("para\u2028graph", "para\\u2028graph"),
        ("evil\u202eTXT.exe", "evil\\u202eTXT.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("no\u00a0break", "no\\xa0break"),
        ("back\\slash", "back\\\\slash"),
        ("private\U000f0000use", "private\\U000f0000use"),
        ("plain name with spaces.TXT", "plain name with spaces.TXT"),
        ("中文名称.TXT", "中文名称.TXT"),
    ],
)
def test_escapes(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_lone_surrogate_from_surrogateescape_is_escaped_and_encodable() -> None:
    raw = b"bad\xffname.TXT".decode("utf-8", "surrogateescape")
    shown = visible(raw)
    assert shown == "bad\\udcffname.TXT"
    shown.encode("utf-8")  # no surrogate left to break a log line


def test_an_escape_cannot_be_forged() -> None:
    assert visible("\\x0a") == "\\\\x0a"
    assert visible("\\x0a") != visible("\n")


def test_long_text_is_cut_with_a_marker() -> None:
    assert visible("x" * 305) == "x" * 300 + "…(+5 chars)"
    assert visible("abcdef", limit=4) == "abcd…(+2 chars)"
    assert visible("x" * 300) == "x" * 300


def test_gateway_text_is_the_same_function() -> None:
    assert gateway_text.visible is visible
