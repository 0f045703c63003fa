"""Throughput of the TXT validator against a plain-Python baseline, on a >= 1 GB D2001 file.

Run from the repository root: ``python bench/validate_text.py [--size-mb 1024] [--repeat 3]``.
The data file is generated once and cached under ``bench/results/`` (git-ignored). Every measurement
runs in its own subprocess so that its peak RSS is its own; the kinds take turns and the best of
``--repeat`` runs of each is kept, as this machine is shared and wall time is noisy (CPU MB/s is shown
too: file size over the CPU seconds of all its threads and worker processes together).

- baseline: read 1 MiB chunks, incremental UTF-8 decode, split lines, split each line on ``|``.
- validator: ``gateway.scan.scan_text_file`` without a pool (validation and sha256 of the file).
- validator-pool2: the same with a 2-process pool (64 MiB segments).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ORG, DATE = "41210000", "20240115"
BLOCK_LINES = 200_000
KINDS = ("baseline", "validator", "validator-pool2")


def realistic_block(seed: int) -> bytes:
    """D2001 rows as a fund distributor's daily flow looks: subscriptions and redemptions of the day."""
    rng = random.Random(seed)
    rows = []
    for n in range(BLOCK_LINES):
        ywlx = rng.choice(("020", "022", "022", "022", "024", "024", "036", "039"))
        amount = f"{rng.randint(100, 5_000_000)}.{rng.randint(0, 99):02d}"
        sqje, sqfe = (amount, "") if ywlx in ("020", "022") else ("", amount)
        sqrq = DATE if rng.random() < 0.9 else "20240112"
        rows.append(
            "|".join(
                (
                    ORG,
                    f"{DATE}{seed:04d}{n:012d}",
                    rng.choice("0001"),
                    f"{ORG[:4]}{rng.randint(0, 10**12):012d}",
                    f"{rng.randint(0, 999_999):06d}",
                    ywlx,
                    sqje,
                    sqfe,
                    sqrq,
                    f"{rng.randint(9, 14):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
                    rng.choice(("", "001", "002", "W01", "ZX0101")),
                    DATE,
                )
            )
        )
    return ("\n".join(rows) + "\n").encode()


def data_file(size_mb: int) -> Path:
    path = RESULTS / f"CISP-{ORG}_D2001_V01_1_{DATE}_01_Z.{size_mb}MB.TXT"
    if path.exists() and path.stat().st_size >= size_mb * 1_000_000:
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    blocks = [realistic_block(seed) for seed in range(8)]
    partial = path.with_suffix(".part")
    written = 0
    with partial.open("wb") as out:
        while written < size_mb * 1_000_000:
            block = blocks[(written // len(blocks[0])) % len(blocks)]
            out.write(block)
            written += len(block)
    partial.rename(path)
    return path


def measure(kind: str, path: Path) -> dict[str, float]:
    """One measurement, run inside the subprocess."""
    sys.path.insert(0, str(REPO))
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "baseline":
        records = baseline(path)
    else:
        from concurrent.futures import ProcessPoolExecutor

        from codes.tables import bundled_tables
        from gateway.scan import scan_text_file

        table = bundled_tables()["D2001"]
        if kind == "validator":
            result = scan_text_file(path, table, org=ORG, date=DATE)
        else:
            with ProcessPoolExecutor(2) as pool:
                result = scan_text_file(path, table, org=ORG, date=DATE, pool=pool)
        if result.report.total:
            raise SystemExit(f"the bench file should be valid: {result.report.findings[:3]}")
        records = result.report.records
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's processes, once shut down
    cpu += workers.ru_utime + workers.ru_stime
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, workers.ru_maxrss) / 1024
    return {"seconds": wall, "cpu_seconds": cpu, "records": records, "peak_rss_mb": peak}


def baseline(path: Path) -> int:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    records, rest = 0, ""
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            lines = (rest + decoder.decode(chunk)).split("\n")
            rest = lines.pop()
            for line in lines:
                line.split("|")
                records += 1
    if rest:
        rest.split("|")
        records += 1
    return records


def run_once(kind: str, path: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", kind, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run_all(path: Path, repeat: int) -> dict[str, dict[str, float]]:
    """The best run of each kind; the kinds take turns so that a busy moment hits them alike."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for kind in KINDS:
            result = run_once(kind, path)
            if kind not in best or result["seconds"] < best[kind]["seconds"]:
                best[kind] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    if args.generate:
        print(data_file(args.size_mb))
        return
    # generated in a child: a forked child starts with its parent's peak RSS, so this process stays small
    generate = [sys.executable, __file__, "--generate", "--size-mb", str(args.size_mb)]
    path = Path(subprocess.run(generate, capture_output=True, text=True, check=True).stdout.strip())
    size_mb = path.stat().st_size / 1_000_000
    results = run_all(path, args.repeat)
    base = results["baseline"]
    print(f"{path.name}: {size_mb:.0f} MB, {base['records']:,} records, best of {args.repeat}")
    print(f"{'run':17} {'MB/s':>7} {'records/s':>11} {'CPU MB/s':>9} {'peak RSS MB':>12} {'vs baseline':>12}")
    for kind, result in results.items():
        result["mb_per_s"] = size_mb / result["seconds"]
        result["records_per_s"] = result["records"] / result["seconds"]
        result["cpu_mb_per_s"] = size_mb / result["cpu_seconds"]
        result["ratio"] = base["seconds"] / result["seconds"]
        speed = f"{result['mb_per_s']:7.0f} {result['records_per_s']:11,.0f} {result['cpu_mb_per_s']:9.0f}"
        print(f"{kind:17} {speed} {result['peak_rss_mb']:12.0f} {result['ratio']:11.2f}x")
    report = {"file": path.name, "size_mb": size_mb, "repeat": args.repeat, "runs": results}
    (RESULTS / "validate_text.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
