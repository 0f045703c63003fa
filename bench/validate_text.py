"""Throughput of the TXT validator against a plain-Python baseline, on a >= 1 GB D2001 file.

Run from the repository root: ``python -m bench.validate_text [--size-mb 1024] [--repeat 3] [--cpus 1]``.
The data file is generated once and cached under ``bench/results/`` (git-ignored). Every measurement
runs in its own subprocess so that its peak RSS is its own; the kinds take turns and the best of
``--repeat`` runs of each is kept, as this machine is shared and wall time is noisy (CPU MB/s is shown
too: file size over the CPU seconds of all its threads and worker processes together).

- baseline: read 1 MiB chunks, incremental UTF-8 decode, split lines, split each line on ``|``.
- baseline+sha256: the same, also hashing every chunk (to compare with ``validator``, which hashes).
- validator-nohash: ``TextValidator`` fed 1 MiB chunks, no hash (to compare with ``baseline``).
- validator: ``gateway.pipeline.scan.scan_text_file`` without a pool (validation and sha256 of the file).
- validator-pool2: the same with a 2-process pool (64 MiB segments).

Fair pairs: baseline / validator-nohash (neither hashes), baseline+sha256 / validator (both hash).
``--cpus N`` confines every measurement to the first N CPUs (the single-core figure is ``--cpus 1``;
the pool is then skipped).
"""

from __future__ import annotations

import argparse
import json
import os
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
KINDS = ("baseline", "baseline+sha256", "validator-nohash", "validator", "validator-pool2")
PAIRS = {"validator-nohash": "baseline", "validator": "baseline+sha256", "validator-pool2": "baseline+sha256"}
"""The run each kind is compared with: the one doing the same hashing work."""


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


def measure(kind: str, path: Path, cpus: int = 0) -> dict[str, float]:
    """One measurement, run inside the subprocess (on the first ``cpus`` CPUs when given)."""
    if cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
    if kind != "baseline":  # imported before the clock starts, as a daemon imports them once at startup
        import hashlib  # noqa: F401
        from concurrent.futures import ProcessPoolExecutor

        from codes.tables import bundled_tables
        from gateway.pipeline.scan import scan_text_file
        from validators.text import TextValidator  # noqa: F401
    start, cpu = time.perf_counter(), time.process_time()
    if kind in ("baseline", "baseline+sha256"):
        records = baseline(path, sha256=kind == "baseline+sha256")
    elif kind == "validator-nohash":
        records = validator_only(path)
    else:
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


def baseline(path: Path, *, sha256: bool = False) -> int:
    import codecs
    import hashlib

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    digest = hashlib.sha256()
    records, rest = 0, ""
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            if sha256:
                digest.update(chunk)
            lines = (rest + decoder.decode(chunk)).split("\n")
            rest = lines.pop()
            for line in lines:
                line.split("|")
                records += 1
    if rest:
        rest.split("|")
        records += 1
    return records


def validator_only(path: Path) -> int:
    from codes.tables import bundled_tables
    from validators.text import TextValidator

    validator = TextValidator(bundled_tables()["D2001"], org=ORG, date=DATE)
    with path.open("rb", buffering=0) as stream:
        while chunk := stream.read(1024 * 1024):
            validator.feed(chunk)
    report = validator.finish()
    if report.total:
        raise SystemExit(f"the bench file should be valid: {report.findings[:3]}")
    return report.records


def run_once(kind: str, path: Path, cpus: int = 0) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.validate_text", "--measure", kind, str(path), "--cpus", str(cpus)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run_all(path: Path, repeat: int, cpus: int = 0) -> dict[str, dict[str, float]]:
    """The best run of each kind; the kinds take turns so that a busy moment hits them alike."""
    best: dict[str, dict[str, float]] = {}
    kinds = [kind for kind in KINDS if not (cpus == 1 and kind == "validator-pool2")]
    for _ in range(repeat):
        for kind in kinds:
            result = run_once(kind, path, cpus)
            if kind not in best or result["seconds"] < best[kind]["seconds"]:
                best[kind] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=0, help="run every measurement on the first N CPUs")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.cpus)))
        return
    if args.generate:
        print(data_file(args.size_mb))
        return
    # generated in a child: a forked child starts with its parent's peak RSS, so this process stays small
    generate = [sys.executable, "-m", "bench.validate_text", "--generate", "--size-mb", str(args.size_mb)]
    path = Path(subprocess.run(generate, capture_output=True, text=True, check=True, cwd=REPO).stdout.strip())
    size_mb = path.stat().st_size / 1_000_000
    results = run_all(path, args.repeat, args.cpus)
    base = results["baseline"]
    where = f", on {args.cpus} CPU(s)" if args.cpus else ""
    print(f"{path.name}: {size_mb:.0f} MB, {base['records']:,} records, best of {args.repeat}{where}")
    head = f"{'run':17} {'MB/s':>7} {'records/s':>11} {'CPU MB/s':>9} {'peak RSS MB':>12}"
    print(f"{head} {'vs baseline':>12} {'vs its pair':>12}")
    for kind, result in results.items():
        result["mb_per_s"] = size_mb / result["seconds"]
        result["records_per_s"] = result["records"] / result["seconds"]
        result["cpu_mb_per_s"] = size_mb / result["cpu_seconds"]
        result["ratio"] = base["seconds"] / result["seconds"]
        result["ratio_fair"] = results[PAIRS.get(kind, kind)]["seconds"] / result["seconds"]
        speed = f"{result['mb_per_s']:7.0f} {result['records_per_s']:11,.0f} {result['cpu_mb_per_s']:9.0f}"
        ratios = f"{result['ratio']:11.2f}x {result['ratio_fair']:11.2f}x"
        print(f"{kind:17} {speed} {result['peak_rss_mb']:12.0f} {ratios}")
    report = {"file": path.name, "size_mb": size_mb, "repeat": args.repeat, "cpus": args.cpus}
    report["runs"] = results
    (RESULTS / "validate_text.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
