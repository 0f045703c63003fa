"""Large file: one generated D2001 report of 2 GB through the daemon: MB/s and peak RSS vs plain Python.

    python bench/large_file.py [--gb 2]

Same set-up as ``bench/burst.py`` (k6666, windows off, a fresh directory on the repository's filesystem).
The file is one valid D2001 report of ``--gb`` GB (a few 1 MiB blocks of ``burst.body`` rows, repeated),
written under ``stage/`` and flushed to disk before anything is timed. In the same run, first the
baseline reads it in its own process, exactly as ``bench/validate_text.py``'s ``baseline`` (1 MiB chunks,
incremental UTF-8 decode, split into lines and every line on ``|``); then the daemon is started and the
file renamed into its inbox. The daemon's MB/s is the size over rename-in -> its ``forwarded`` history
event, so it includes validation, sha256, the durable core copy, the receipt and the history. Its peak
RSS is VmHWM of the daemon and of each validation worker, read from /proc while it runs. Prints a table,
writes ``bench/results/large_file-<gb>gb.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import (
    REPO,
    STATION,
    body,
    forwarded_times,
    gateway_config,
    names,
    save_result,
    start_gateway,
    stop_gateway,
    verify_gateway,
    wait_for_outcomes,
)
from measure import TreeMemory, memory_text
from validate_text import run_once

BLOCK = 1024 * 1024
BLOCKS = 8
"""Distinct blocks, repeated: generating GBs is then bound by the disk, not by Python."""


def generate(path: Path, org: str, name: str, size: int) -> int:
    """Write a valid report of at least ``size`` bytes to ``path`` and flush it to disk; its size."""
    blocks = [body(org, name, serial, BLOCK) for serial in range(BLOCKS)]
    written = 0
    with path.open("wb") as out:
        while written < size:
            written += out.write(blocks[written // BLOCK % BLOCKS])
    os.sync()  # neither contender should pay for writing back the generated file
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the file in GB (10^9 bytes)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on the daemon after this long")
    parser.add_argument("--root", type=Path, default=None, help="where the run directory goes (a fresh one)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="large_file-", dir=args.root or REPO.parent))
    files = names(1)
    tc, org, name = files[0]
    try:
        config = gateway_config(root)
        staged = root / "stage" / tc / name
        inbox = root / "spool" / STATION / tc / "in"
        staged.parent.mkdir(parents=True)
        inbox.mkdir(parents=True)
        print(f"generating {name} ({args.gb:g} GB) under {root}", flush=True)
        size = generate(staged, org, name, int(args.gb * 1e9))
        baseline = run_once("baseline", staged)
        process = start_gateway(root, config)
        try:
            with TreeMemory(process.pid) as memory:
                renamed = time.time()
                staged.rename(inbox / name)
                wait_for_outcomes(root, 1, time.monotonic() + args.timeout)
        finally:
            stop_gateway(process)
        bad = verify_gateway(root, files)
        forwarded = forwarded_times(root).get(name)
        if forwarded is None:
            log = (root / "daemon.log").read_text(encoding="utf-8")[-3000:]
            raise SystemExit(f"the file was not forwarded within {args.timeout:g}s: {bad}\n{log}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    mb = size / 1e6
    gateway = {"seconds": forwarded - renamed, **memory.figures(), **bad}
    gateway["mb_per_s"] = mb / gateway["seconds"]
    baseline["mb_per_s"] = mb / baseline["seconds"]
    ratio = gateway["mb_per_s"] / baseline["mb_per_s"]
    print(f"{name}: {mb:,.0f} MB, {baseline['records']:,.0f} records")
    print(f"{'run':27} {'MB/s':>7} {'seconds':>8}  peak RSS MB")
    print(
        f"{'read+decode+split (Python)':27} {baseline['mb_per_s']:7.1f} {baseline['seconds']:8.2f}  "
        f"{baseline['peak_rss_mb']:.0f}"
    )
    print(f"{'gateway':27} {gateway['mb_per_s']:7.1f} {gateway['seconds']:8.2f}  {memory_text(gateway)}")
    print(f"gateway / baseline: {ratio:.2f}x; " + " ".join(f"{k}={v}" for k, v in bad.items()))
    report = {
        "file": name,
        "size_mb": mb,
        "station": STATION,
        "baseline": baseline,
        "gateway": gateway,
        "ratio": ratio,
    }
    save_result(f"large_file-{args.gb:g}gb", report)


if __name__ == "__main__":
    main()
