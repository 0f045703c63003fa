"""Large file: one generated D2001 report of 2 GB through the daemon: MB/s and peak RSS vs plain Python.

    python -m bench.large_file [--gb 2] [--hand-off copy,link]

Same set-up as ``bench/burst.py`` (k6666, windows off, a fresh directory on the repository's filesystem).
The file is one valid D2001 report of ``--gb`` GB (a few 1 MiB blocks of ``burst.body`` rows, repeated),
written under ``stage/`` and flushed to disk before anything is timed. In the same run, first the
baseline reads it in its own process, exactly as ``bench/validate_text.py``'s ``baseline`` (1 MiB chunks,
incremental UTF-8 decode, split into lines and every line on ``|``); then, for each ``hand_off`` of the
directory route (``copy``: a durable copy; ``link``: a hard link), a fresh daemon is started and the file
renamed into its inbox (and taken back from the archive afterwards). The daemon's MB/s is the size over
rename-in -> its ``forwarded`` history event, so it includes validation, sha256, the durable hand-off
to the core, the receipt and the history. Its peak RSS is VmHWM of the daemon and of each validation
worker, read from /proc while it runs. Prints a table, writes ``bench/results/large_file-<gb>gb.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.burst import (
    REPO,
    STATION,
    body,
    daemon_log_tail,
    forwarded_times,
    gateway_config,
    names,
    save_result,
    start_gateway,
    stop_gateway,
    verify_gateway,
    wait_for_outcomes,
)
from bench.measure import TreeMemory, memory_text
from bench.validate_text import run_once

BLOCK = 1024 * 1024
BAD = ("not_forwarded", "no_receipt", "no_core_copy", "left_in_inbox", "extra_outcomes")
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


def run_daemon(root: Path, staged: Path, hand_off: str, timeout: float) -> dict[str, Any]:
    """Rename ``staged`` into a fresh daemon's inbox (the route's ``hand_off`` as given); its figures.
    The file is renamed back to ``staged`` from the archive afterwards, for the next contender."""
    tc, name = staged.parent.name, staged.name
    root.mkdir()
    config = gateway_config(root, hand_off=hand_off)
    inbox = root / "spool" / STATION / tc / "in"
    inbox.mkdir(parents=True)
    process = start_gateway(root, config)
    try:
        with TreeMemory(process.pid) as memory:
            renamed = time.time()
            staged.rename(inbox / name)
            wait_for_outcomes(root, 1, time.monotonic() + timeout)
    finally:
        stop_gateway(process)
    bad = verify_gateway(root, [(tc, "", name)])
    forwarded = forwarded_times(root).get(name)
    if forwarded is None:
        raise SystemExit(f"the file was not forwarded within {timeout:g}s: {bad}\n{daemon_log_tail(root)}")
    archived = next((root / "spool" / STATION / ".gateway" / "archive").rglob(f"*.{name}"))
    archived.rename(staged)
    return {"seconds": forwarded - renamed, **memory.figures(), **bad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the file in GB (10^9 bytes)")
    parser.add_argument(
        "--hand-off", default="copy,link", help="the directory route's hand_off values to run, in order"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on the daemon after this long")
    parser.add_argument("--root", type=Path, default=None, help="where the run directory goes (a fresh one)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="large_file-", dir=args.root or REPO.parent))
    tc, org, name = names(1)[0]
    runs: dict[str, dict[str, Any]] = {}
    try:
        staged = root / "stage" / tc / name
        staged.parent.mkdir(parents=True)
        print(f"generating {name} ({args.gb:g} GB) under {root}", flush=True)
        size = generate(staged, org, name, int(args.gb * 1e9))
        baseline = run_once("baseline", staged)
        for hand_off in args.hand_off.split(","):
            runs[hand_off] = run_daemon(root / hand_off, staged, hand_off, args.timeout)
            if not args.keep:
                shutil.rmtree(root / hand_off)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    mb = size / 1e6
    baseline["mb_per_s"] = mb / baseline["seconds"]
    print(f"{name}: {mb:,.0f} MB, {baseline['records']:,.0f} records")
    print(f"{'run':27} {'MB/s':>7} {'seconds':>8} {'ratio':>6}  peak RSS MB")
    print(
        f"{'read+decode+split (Python)':27} {baseline['mb_per_s']:7.1f} {baseline['seconds']:8.2f} "
        f"{1:6.2f}  {baseline['peak_rss_mb']:.0f}"
    )
    for hand_off, run in runs.items():
        run["mb_per_s"] = mb / run["seconds"]
        run["ratio"] = run["mb_per_s"] / baseline["mb_per_s"]
        bad = " ".join(f"{k}={run[k]}" for k in BAD)
        print(
            f"{'gateway, hand_off ' + hand_off:27} {run['mb_per_s']:7.1f} {run['seconds']:8.2f} "
            f"{run['ratio']:6.2f}  {memory_text(run)}  {bad}"
        )
    report = {"file": name, "size_mb": mb, "station": STATION, "baseline": baseline, "gateway": runs}
    save_result(f"large_file-{args.gb:g}gb", report)


if __name__ == "__main__":
    main()
