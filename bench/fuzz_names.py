"""Fuzz ``validators.names.check_name`` with atheris (coverage-guided, libFuzzer options).

Run from the repository root for a bounded time::

    python -m bench.fuzz_names -max_total_time=60

Inputs are file names as the daemon sees them: raw bytes decoded with ``os.fsdecode`` (undecodable
bytes become lone surrogates), either as they are or spliced into a valid name. Beyond "no exception"
the target checks that a rejected name always has a finding and that no message or hint carries a raw
control character (they end up in logs, receipts and the history). libFuzzer prints the executions
("Done N runs in S second(s)") and writes any crashing input to ``crash-<sha1>`` in the working dir.
"""

from __future__ import annotations

import datetime
import os

import atheris  # type: ignore[import-untyped]

from bench.fuzzing import check_messages, run

with atheris.instrument_imports():
    from codes.tables import bundled_tables
    from validators.names import check_name

TABLES = bundled_tables()
SYSTEMS = frozenset({"CISP"})
TODAY = datetime.date(2024, 6, 30)
VALID = "CISP-41210000_D1001_V01_1_20240531_01_Q.TXT"


def name_from(data: bytes) -> str:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        return os.fsdecode(bytes(fdp.ConsumeBytes(fdp.remaining_bytes())))
    if mode == 1:  # splice raw bytes into a valid name
        at = fdp.ConsumeIntInRange(0, len(VALID))
        cut = fdp.ConsumeIntInRange(0, 3)
        middle = os.fsdecode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)))
        return VALID[:at] + middle + VALID[at + cut :]
    return str(fdp.ConsumeUnicode(fdp.remaining_bytes()))  # any code point, surrogates included


def test_one_input(data: bytes) -> None:
    name = name_from(data)
    checked = check_name(name, tables=TABLES, systems=SYSTEMS, today=TODAY)
    if checked.name is None and not checked.findings:
        raise AssertionError(f"unparsed name without a finding: {name!r}")
    check_messages(checked.findings, f" for {name!r}")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()
