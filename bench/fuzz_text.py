"""Fuzz ``validators.text.validate_text`` with atheris, on D1001, D1005, D2001 and D3006.

Run from the repository root for a bounded time::

    python -m bench.fuzz_text -max_total_time=60

The first input byte picks the table, the next one a chunk size; the rest is the file. Checked: no
exception; the same bytes fed whole and fed in chunks give the same records, findings and total (the
daemon streams files in chunks of its own choosing); the total is at least the findings listed; no message
or hint carries a raw control character. libFuzzer prints the executions ("Done N runs in S
second(s)") and writes any crashing input to ``crash-<sha1>`` in the working directory.
"""

from __future__ import annotations

import atheris  # type: ignore[import-untyped]

from bench.fuzzing import check_messages, run

with atheris.instrument_imports():
    from codes.tables import bundled_tables
    from validators.text import validate_text

TABLES = bundled_tables()
NAMES = ("D1001", "D1005", "D2001", "D3006")
ORG, DATE = "41210000", "20240531"


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
    check_messages(whole.findings)


def main() -> None:
    run(test_one_input, max_len=4096)


if __name__ == "__main__":
    main()
