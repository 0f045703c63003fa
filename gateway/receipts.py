"""Receipts (spec 11): the OK/BAD file a sender finds in its ``out/`` for every file it dropped."""

from __future__ import annotations

import fcntl
import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.text import visible
from spool.fsio import fsync_dir, makedirs_durable, publish, stage
from spool.layout import GATEWAY_DIR
from spool.lock import open_lock_file
from validators.findings import Finding

_MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class Receipt:
    name: str  # the file name as dropped
    ok: bool
    records: int
    findings: list[Finding]
    findings_total: int
    at: datetime
    file_id: str
    status: str  # forwarded, held, duplicate, rejected


def _cell(text: str) -> str:
    """A receipt cell: one line, no field separator (a message may mention '|')."""
    return visible(text).replace("|", "｜")


def render(receipt: Receipt) -> bytes:
    head = "|".join(
        [
            _cell(receipt.name),
            "OK" if receipt.ok else "BAD",
            str(receipt.records),
            str(receipt.findings_total),
            receipt.at.strftime("%Y%m%d%H%M%S"),
            receipt.file_id,
            receipt.status,
        ]
    )
    lines = [head]
    for f in receipt.findings:
        lines.append(
            "|".join([str(f.line), str(f.field_no), f.field, f.code, _cell(f.message_zh), _cell(f.hint_zh)])
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def receipt_name(name: str, ok: bool) -> str:
    """``<stem>_OK.TXT`` / ``<stem>_BAD.TXT``, the stem cut (at a character) to fit a file name."""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = stem.lstrip(".") or "_"
    suffix = "_OK.TXT" if ok else "_BAD.TXT"
    while len((stem + suffix).encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


OWN_RECEIPT = re.compile(
    rb"[^\n]*\|(OK|BAD)\|[0-9]+\|[0-9]+\|[0-9]{14}\|[0-9]{8}-[0-9]{6}-[0-9]{6}-[0-9a-f]{4}"
    rb"\|(forwarded|held|duplicate|rejected)\n"
)
"""The first line of a receipt this gateway wrote (as opposed to the core's feedback of the same name)."""


_STRIPES = tuple(threading.Lock() for _ in range(64))
_LOCK_DIR = "receipt-locks"
_lock_files: dict[tuple[Path, int], int] = {}  # (station's .gateway, stripe): open for the process's life
_lock_files_guard = threading.Lock()


@contextmanager
def receipt_lock(outbox: Path, name: str) -> Iterator[None]:
    """The lock every writer of ``outbox/name`` takes, ``name`` being a receipt's or the core's feedback
    file name: the OK and BAD files of one stem share it, so the gateway's receipts and the core's
    feedback of that stem never interleave a check and a replace. Other stems (almost always) take
    another, so one outbox's fsyncs never wait for another's.

    It holds across processes too (``processes`` > 1, where one process delivers the core's feedback
    into every mailbox): besides the thread lock, an flock on the stripe's file in the station's
    ``.gateway/receipt-locks/``, the stripe chosen by a stable hash of the stem. Not byte-range
    (POSIX) locks on one file: the kernel checks those for deadlocks process by process, and two
    processes whose threads each hold one stripe and wait for the other's got EDEADLK (bench/burst.py
    with two processes). Each process keeps its descriptors open; the thread lock keeps its own
    threads off a descriptor that another of them holds locked."""
    stripe = lock_stripe(outbox, name)
    with _STRIPES[stripe]:
        fd = _lock_file(outbox.parent.parent / GATEWAY_DIR, stripe)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def lock_stripe(outbox: Path, name: str) -> int:
    """Which of the locks ``outbox/name`` takes: the same for the OK and BAD names of a stem, and the
    same in every process."""
    ok_name = name[: -len("_BAD.TXT")] + "_OK.TXT" if name.endswith("_BAD.TXT") else name
    key = f"{outbox}/{ok_name}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % len(_STRIPES)


def _lock_file(gateway_dir: Path, stripe: int) -> int:
    with _lock_files_guard:
        fd = _lock_files.get((gateway_dir, stripe))
        if fd is None:
            directory = gateway_dir / _LOCK_DIR
            directory.mkdir(parents=True, exist_ok=True)
            fd = _lock_files[gateway_dir, stripe] = open_lock_file(directory / f"{stripe:02d}", 0o600)
        return fd


def _own_file_id(path: Path) -> str | None:
    """The file_id in one of our receipts (None: absent, or not ours)."""
    try:
        with path.open("rb") as stream:
            head = stream.readline(4096)
    except OSError:
        return None
    if OWN_RECEIPT.match(head) is None:
        return None
    return head.split(b"|")[-2].decode("ascii")


def is_own_receipt(path: Path) -> bool:
    return _own_file_id(path) is not None


def write_receipt(outbox: Path, receipt: Receipt, *, sync_dir: bool = True) -> Path | None:
    """``stage_receipt`` and ``publish_receipt`` in one step, the receipt synced on its own."""
    return publish_receipt(outbox, receipt, stage_receipt(outbox, receipt), sync_dir=sync_dir)


def stage_receipt(outbox: Path, receipt: Receipt, *, sync: bool = True) -> Path:
    """The receipt under a temp name in ``outbox``, for ``publish_receipt``; with ``sync=False`` the
    caller makes it durable (with other files' in one go) before it publishes it. An ``out/`` removed
    by hand is made again: every file dropped gets its receipt."""
    makedirs_durable(outbox)
    return stage(outbox / receipt_name(receipt.name, receipt.ok), render(receipt), sync=sync)


def publish_receipt(outbox: Path, receipt: Receipt, staged: Path, *, sync_dir: bool = True) -> Path | None:
    """Publish a durable ``staged`` receipt: the receipt of the newest file (by file_id) of a stem stands,
    OK or BAD, and the core's own feedback file of the same name is never replaced. Returns None when
    nothing was written (``staged`` is removed). With ``sync_dir=False`` the caller fsyncs ``outbox``
    before it acknowledges the receipt."""
    path = outbox / receipt_name(receipt.name, receipt.ok)
    other = outbox / receipt_name(receipt.name, not receipt.ok)
    with receipt_lock(outbox, path.name):
        if path.exists() and not is_own_receipt(path):
            staged.unlink(missing_ok=True)
            return None
        newer = [
            i for i in (_own_file_id(path), _own_file_id(other)) if i is not None and i > receipt.file_id
        ]
        if newer:  # a later file of this stem already answered: its receipt stands
            staged.unlink(missing_ok=True)
            return None
        publish(staged, path, replace=True)
        if sync_dir:
            fsync_dir(outbox)
        if is_own_receipt(other):  # a BAD answered by a later OK (or the other way round)
            other.unlink(missing_ok=True)
            if sync_dir:
                fsync_dir(outbox)
    return path
