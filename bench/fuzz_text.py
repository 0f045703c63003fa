"""Fuzz ``validators.text.validate_text`` with atheris, on D1001, D1005, D2001 and D3006.

Run from the repository root for a bounded time::

    python bench/fuzz_text.py -max_total_time=60

The first input byte picks the table, the next one a chunk size; the rest is the file. Checked: no
exception; the same bytes fed whole and fed in chunks give the same records, findings and total (the
daemon streams files in chunks of its own choosing); the total is at least the findings listed; no message
or hint carries a raw control character. libFuzzer prints the executions ("Done N runs in S
second(s)") and writes any crashing input to ``crash-<sha1>`` in the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from codes.tables import bundled_tables
    from validators.text import validate_text

TABLES = bundled_tables()
NAMES = ("D1001", "D1005", "D2001", "D3006")
ORG, DATE = "41210000", "20240531"
FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029", "\u202e"]
)


def summary(report: object) -> tuple[object, ...]:
    findings = [(f.code, f.line, f.field_no) for f in report.findings]  # type: ignore[attr-defined]
    return report.records, report.total, findings  # type: ignore[attr-defined]


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    table = TABLES[NAMES[data[0] % len(NAMES)]]
    size = 1 + data[1] % 64
    body = data[2:]
    whole = validate_text(body, table, org=ORG, date=DATE)
    chunked = validate_text(
        (body[i : i + size] for i in range(0, len(body), size)), table, org=ORG, date=DATE
    )
    if summary(whole) != summary(chunked):
        raise AssertionError(f"chunks of {size} disagree: {summary(whole)} != {summary(chunked)}")
    if whole.total < len(whole.findings):
        raise AssertionError("total below the findings listed")
    for finding in whole.findings:
        for text in (finding.message_zh, finding.message_en, finding.hint_zh, finding.hint_en):
            if any(c in FORBIDDEN for c in text):
                raise AssertionError(f"raw control character in {finding.code} message: {text!r}")


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-timeout=") for a in args):
        args.append("-timeout=10")
    if not any(a.startswith("-print_final_stats=") for a in args):
        args.append("-print_final_stats=1")
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=4096")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
