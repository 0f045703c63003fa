"""The burst's third baseline: the gateway's durable file steps, and nothing else.

    python -m bench.durable_mover CORE copy|link THREADS INBOX...

For every file that appears in an inbox, the same system calls the gateway makes to take it durably:
claim (rename into ``work/``), fdatasync the claimed file and read it, hand it to the core (a copy
written, fsynced and renamed into place, or a hard link), write a receipt (written, fsynced, renamed)
into ``out/``, and rename the file into ``archive/``; every directory those renames touched is fsynced
once a batch, as the gateway's group commit does. ``THREADS`` threads share each batch (the gateway's
offloaded steps run in up to 8 thread jobs plus a thread per core copy; 16 was this mover's best on the
benchmark machine).

No inotify (it lists the inboxes again as soon as a batch is done), no validation, no history, no ledger,
no event loop: what is left is what durability costs on this disk and these CPUs, so the gateway's files
a second against this mover's is how close it comes to the bound its guarantees set.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spool.fsio import fsync_dir, write_atomic  # the gateway's own primitives

RECEIPT = b"OK " * 35
BATCH = 2048
"""Files taken at once, as many as the gateway keeps in flight a process."""


class Mover:
    def __init__(self, core: str, link: bool, inboxes: list[str]) -> None:
        self.core = core
        self.link = link
        self.boxes = [os.path.dirname(inbox) for inbox in inboxes]  # noqa: PTH120
        self.done = 0
        for box in self.boxes:
            for state in ("work", "out", "archive"):
                os.makedirs(os.path.join(box, state), exist_ok=True)  # noqa: PTH103, PTH118

    def take(self, box: str, name: str) -> None:
        work = f"{box}/work/{name}"
        os.rename(f"{box}/in/{name}", work)  # noqa: PTH104
        fd = os.open(work, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            data = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        if self.link:  # as the gateway links: a temp name, its new link count fsynced, renamed into place
            temp = f"{self.core}/.{name}.tmp"
            os.link(work, temp)
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fstat(fd)  # the gateway checks size and mtime against what it validated
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, f"{self.core}/{name}")  # noqa: PTH104
        else:
            write_atomic(Path(f"{self.core}/{name}"), data, replace=False, sync_dir=False)  # as a core copy
        write_atomic(Path(f"{box}/out/{name}.OK"), RECEIPT, sync_dir=False)  # as a receipt
        os.rename(work, f"{box}/archive/{name}")  # noqa: PTH104

    def batch(self, pool: ThreadPoolExecutor, threads: int) -> int:
        listed = ((box, name) for box in self.boxes for name in os.listdir(f"{box}/in"))  # noqa: PTH208
        found = list(itertools.islice(listed, BATCH))
        if not found:
            return 0
        share = -(-len(found) // threads)
        shares = [found[i : i + share] for i in range(0, len(found), share)]
        list(pool.map(lambda part: [self.take(*each) for each in part], shares))
        states = ("in", "work", "out", "archive")
        touched = {self.core} | {f"{box}/{state}" for box, _ in found for state in states}
        list(pool.map(fsync_dir, map(Path, touched)))
        self.done += len(found)
        progress = Path(f"{self.core}.done")
        Path(f"{progress}.tmp").write_text(str(self.done))
        Path(f"{progress}.tmp").replace(progress)  # files done, their directories fsynced: the clock's end
        return len(found)


def main() -> None:
    core, hand_off, threads, inboxes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    mover = Mover(core, hand_off == "link", inboxes)
    Path(f"{core}.ready").touch()
    with ThreadPoolExecutor(threads) as pool:
        while True:  # until the benchmark stops it
            if not mover.batch(pool, threads):
                time.sleep(0.002)


if __name__ == "__main__":
    main()
