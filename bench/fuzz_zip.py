"""Fuzz ``validators.archive.inspect_zip`` with atheris.

Run from the repository root for a bounded time::

    python -m bench.fuzz_zip -max_total_time=60

Half the inputs are raw bytes; the other half build a real archive with ``zipfile`` (member names and
contents from the input) and then overwrite a few bytes of it, so the fuzzer reaches the member checks
and not only the end-record search. Checked: no exception (bad bytes must give findings), and no message
or hint carries a raw control character. Limits are small so that bombs are cheap. libFuzzer prints the
executions ("Done N runs in S second(s)") and writes any crashing input to ``crash-<sha1>``.
"""

from __future__ import annotations

import io
import zipfile

import atheris  # type: ignore[import-untyped]

from bench.fuzzing import check_messages, run

with atheris.instrument_imports():
    from validators.archive import ZipLimits, inspect_zip

LIMITS = ZipLimits(max_members=50, max_total_bytes=1024 * 1024, max_ratio=50, ratio_min_bytes=4096)


def archive_from(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        return bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if fdp.ConsumeBool() else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            info = zipfile.ZipInfo(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16)) or "a")
            info.flag_bits |= fdp.ConsumeIntInRange(0, 0xFFFF) & 0x0809
            info.external_attr = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            info.compress_type = method
            archive.writestr(info, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    raw = bytearray(buffer.getvalue())
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        if raw:
            raw[fdp.ConsumeIntInRange(0, len(raw) - 1)] = fdp.ConsumeInt(1) & 0xFF
    return bytes(raw)


def test_one_input(data: bytes) -> None:
    report = inspect_zip(io.BytesIO(archive_from(data)), limits=LIMITS)
    check_messages(report.findings)


def main() -> None:
    run(test_one_input, max_len=8192)


if __name__ == "__main__":
    main()
