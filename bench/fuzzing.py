"""What the fuzz targets share: the characters no message may carry raw, and the run defaults."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import atheris  # type: ignore[import-untyped]

FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029", "\u202e"]
)


def check_messages(findings: Iterable[Any], context: str = "") -> None:
    """Every message and hint is one printable line: a raw control character is a fuzz finding."""
    for finding in findings:
        for text in (finding.message_zh, finding.message_en, finding.hint_zh, finding.hint_en):
            if any(c in FORBIDDEN for c in text):
                raise AssertionError(f"raw control character in {finding.code} message{context}: {text!r}")


def run(test_one_input: Callable[[bytes], None], **defaults: object) -> None:
    """Fuzz with libFuzzer flags from the command line; a hang over 10 s counts as a crash."""
    args = list(sys.argv)
    for flag, value in {"timeout": 10, "print_final_stats": 1, **defaults}.items():
        if not any(a.startswith(f"-{flag}=") for a in args):
            args.append(f"-{flag}={value}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
