"""What pathological TXT contents cost to validate, against valid rows of the same size (issue 19).

    python -m bench.adversarial_text [--mb 8] [--repeat 3]

Each content is ``--mb`` MB of one D2001 file (``bench/validate_text.py``'s realistic rows for the
valid one), fed to ``TextValidator`` in 1 MiB chunks as the daemon's serial scan does, in this process;
the best of ``--repeat`` runs counts. Prints each content's seconds and its ratio to the valid rows,
and the worst ratio; writes ``bench/results/adversarial_text-<mb>mb.json``. A content whose findings
pass the cap (``MAX_REPORTED`` kept) is only counted from there on, a refused line at a time, so the
cost per byte stays within a small factor of valid input whatever the bytes are.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from bench.validate_text import DATE, ORG, RESULTS, realistic_block
from codes.tables import bundled_tables
from validators.text import TextValidator

CHUNK = 1024 * 1024
VALID_ROW = realistic_block(0).split(b"\n", 1)[0] + b"\n"


def contents(size: int) -> dict[str, Callable[[], bytes]]:
    """Name -> a maker of ``size`` bytes of that content."""

    def repeat(unit: bytes) -> Callable[[], bytes]:
        return lambda: (unit * (size // len(unit) + 1))[:size]

    wide = b"|".join([b"x" * 10] * 40) + b"\n"

    def valid() -> bytes:
        block = realistic_block(0)
        data = (block * (size // len(block) + 1))[:size]
        return data[: data.rfind(b"\n") + 1]

    return {
        "valid rows": valid,
        "lines '1'": repeat(b"1\n"),
        "blank lines": repeat(b"\n"),
        "CRLF blank lines in an LF file": repeat(b"\n" + b"\r\n" * 1000),
        "control characters": repeat(b"\x01"),
        "a control character a line": repeat(b"\x01\n"),
        "invalid UTF-8 a line": repeat(b"\xff\n"),
        "NUL a line": repeat(b"\x00\n"),
        "C1 controls": repeat("\u0085".encode()),
        "U+2028 a line": repeat("a\u2028\n".encode()),
        "CR only (one long line)": repeat(b"1|2\r"),
        "separators only": repeat(b"|"),
        "40 fields a line": repeat(wide),
        "valid row, wrong institution": repeat(VALID_ROW.replace(ORG.encode(), b"41229999")),
        "valid rows with a bad row every 100": repeat(VALID_ROW * 99 + b"1\n"),
    }


def seconds(data: bytes, repeat: int) -> tuple[float, int]:
    table = bundled_tables()["D2001"]
    best, total = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        validator = TextValidator(table, org=ORG, date=DATE)
        for at in range(0, len(data), CHUNK):
            validator.feed(data[at : at + CHUNK])
        total = validator.finish().total
        best = min(best, time.perf_counter() - started)
    return best, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    rows: dict[str, dict[str, float]] = {}
    valid = 0.0
    for name, make in contents(size).items():
        taken, findings = seconds(make(), args.repeat)
        valid = valid or taken
        rows[name] = {"seconds": round(taken, 4), "ratio": round(taken / valid, 2), "findings": findings}
        print(f"{name:40} {taken:8.3f} s  x{taken / valid:6.2f}  findings {findings:,}")
    worst = max(rows.values(), key=lambda r: r["ratio"])
    print(f"worst ratio to valid rows: x{worst['ratio']:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"adversarial_text-{args.mb}mb.json"
    out.write_text(json.dumps({"mb": args.mb, "contents": rows, "worst_ratio": worst["ratio"]}, indent=2))


if __name__ == "__main__":
    main()
