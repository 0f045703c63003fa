"""What the gateway's own copy of a claimed file costs (``spool/private.py``), when it must be taken.

    python -m bench.private_copy [--files 2000] [--mb 512]

A claimed file is copied when a sender can still write it (another link, a writable handle, or simply
owned by the sender's account: the kernel grants the lease that proves "no writer" only to the owner).
Here every copy is forced with a second hard link. In the same run and directory (the repository's
filesystem): ``--files`` small D1001 files, each read and datasynced as the daemon does (``read_small``)
against the copy followed by the same read; and one ``--mb`` MB file, its sha256 read (what validation
costs at least) against the copy. Prints the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from spool.fsio import read_small
from spool.private import make_private

ROW = b"41210000|Example fund|91110000100000000X|01|Beijing||||20250101\n"


def small(directory: Path, count: int) -> tuple[float, float]:
    paths = []
    for n in range(count):
        path = directory / f"f{n:05d}.TXT"
        path.write_bytes(ROW * 16)
        os.link(path, directory / f"f{n:05d}.link")
        paths.append(path)
    os.sync()
    started = time.perf_counter()
    for path in paths:
        read_small(path, 64 * 1024, datasync=True)
    plain = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        assert make_private(path, 1 << 30)
        read_small(path, 64 * 1024, datasync=True)
    copied = time.perf_counter() - started
    return plain, copied


def large(directory: Path, mb: int) -> tuple[float, float]:
    path = directory / "large.TXT"
    block = ROW * (1024 * 1024 // len(ROW))
    with path.open("wb") as out:
        for _ in range(mb):
            out.write(block)
    os.link(path, directory / "large.link")
    os.sync()
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    assert make_private(path, 1 << 40)
    copied = time.perf_counter() - started
    return hashed, copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        plain, copied = small(Path(tmp), args.files)
        print(
            f"{args.files} small files: read+datasync {args.files / plain:,.0f} files/s, "
            f"copy+read+datasync {args.files / copied:,.0f} files/s (x{copied / plain:.2f} the time)"
        )
        hashed, copy = large(Path(tmp), args.mb)
        print(
            f"{args.mb} MB file: sha256 read {args.mb / hashed:,.0f} MB/s, "
            f"copy+fsync {args.mb / copy:,.0f} MB/s (+{copy / hashed:.2f} of the sha256 time)"
        )


if __name__ == "__main__":
    main()
