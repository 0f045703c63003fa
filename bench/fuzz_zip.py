"""Fuzz ``validators.archive.inspect_zip`` with atheris.

Run from the repository root for a bounded time::

    python bench/fuzz_zip.py -max_total_time=60

Half the inputs are raw bytes; the other half build a real archive with ``zipfile`` (member names and
contents from the input) and then overwrite a few bytes of it, so the fuzzer reaches the member checks
and not only the end-record search. Checked: no exception (bad bytes must give findings), and no message
or hint carries a raw control character. Limits are small so that bombs are cheap. libFuzzer prints the
executions ("Done N runs in S second(s)") and writes any crashing input to ``crash-<sha1>``.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from validators.archive import ZipLimits, inspect_zip

LIMITS = ZipLimits(max_members=50, max_total_bytes=1024 * 1024, max_ratio=50, ratio_min_bytes=4096)
FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029", "\u202e"]
)


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
    for finding in report.findings:
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
        args.append("-max_len=8192")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
