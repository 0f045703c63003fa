"""Receipts (spec 11): the OK/BAD file a sender finds in its ``out/`` for every file it dropped."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from gateway.text import visible
from spool.entries import NotRegularFileError, open_regular
from spool.fsio import fsync_dir, makedirs_durable, publish, stage
from spool.layout import GATEWAY_DIR
from spool.lock import open_lock_file
from validators.findings import Finding
from validators.name_grammar import parse_name

log = structlog.get_logger("gateway.receipts")

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
    names: tuple[str, ...] = ()  # the unit's other files (the ZIP of a TXT): the receipt speaks for them


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
    stem = _stem(name)
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


@dataclass(frozen=True, slots=True)
class _Found:
    """What is at a receipt's name in ``out/``."""

    kind: str  # "absent", "ours" (a receipt this gateway wrote), "foreign" (another regular file: the
    # core's feedback), "special" (not a regular file: a FIFO, symlink, directory, socket, device)
    name: bytes = b""  # ours: the name cell of its first line
    file_id: str | None = None  # ours


def _inspect(path: Path) -> _Found:
    """Look at ``path`` without ever blocking or following it: ``open_regular`` (O_NOFOLLOW|O_NONBLOCK,
    then fstat) refuses what is not a regular file, so a FIFO a sender made at a receipt's name never
    stops the daemon."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return _Found("absent")
    except (NotRegularFileError, OSError):  # EACCES too: not ours to read, so not ours to replace
        return _Found("special")
    try:
        head = os.pread(fd, 4096, 0).split(b"\n", 1)[0] + b"\n"
    finally:
        os.close(fd)
    if OWN_RECEIPT.match(head) is None:
        return _Found("foreign")
    fields = head.rstrip(b"\n").split(b"|")
    return _Found("ours", fields[0], fields[-2].decode("ascii"))


def _own_file_id(path: Path) -> str | None:
    """The file_id in one of our receipts (None: absent, or not ours)."""
    return _inspect(path).file_id


def distinct_receipt_name(name: str, ok: bool, file_id: str) -> str:
    """``<stem>_<file_id>_OK.TXT`` / ``_BAD.TXT``: the receipt of a file whose spec name is taken by (or
    could be confused with) another file's receipt. Never a valid name's receipt: a valid stem ends in
    ``_Q`` or ``_Z``, and a file_id is unique."""
    stem = _stem(name)
    suffix = f"_{file_id}" + ("_OK.TXT" if ok else "_BAD.TXT")
    while len((stem + suffix).encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def _stem(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem.lstrip(".") or "_"


_VALID_STEM = re.compile(
    r"[A-Z]{2,8}-[0-9]{8}_[A-Z][0-9]{4}_V[0-9]{2}_[1-9]_[0-9]{8}_[0-9]{2}_[QZ]", re.IGNORECASE | re.ASCII
)
"""A valid name's stem (spec 3), in any case."""


def _pretends(name: str) -> bool:
    """A name that is not valid but whose receipt stem is, compared case-insensitively, a valid stem
    (``X.TXT `` with a trailing space, ``x.txt``): its receipt must never take (or sit beside, in
    another case) the receipt of the valid name ``X.TXT``, which may have come or may come later."""
    return parse_name(name) is None and _VALID_STEM.fullmatch(_stem(name)) is not None


_MAX_RECEIPT_BYTES = 16 * 1024 * 1024
"""A receipt lists at most a file's kept findings; anything larger at its name is not ours to show."""


def find_receipt(outbox: Path, name: str, file_id: str) -> tuple[Path, bytes] | None:
    """The receipt in ``outbox`` that answers the file ``file_id`` (dropped as ``name``), and its bytes:
    at its spec name or its distinct name, OK or BAD, and only while it still names this file (not a
    later file of the same name). Read as ``_inspect`` reads: a FIFO or symlink there is never opened."""
    for ok in (True, False):
        for candidate in (receipt_name(name, ok), distinct_receipt_name(name, ok, file_id)):
            path = outbox / candidate
            if _own_file_id(path) != file_id:
                continue
            try:
                fd = open_regular(path)
            except OSError:
                continue
            try:
                return path, os.pread(fd, _MAX_RECEIPT_BYTES, 0)
            finally:
                os.close(fd)
    return None


def receipt_path(outbox: Path, receipt: Receipt) -> tuple[Path, str | None, dict[str, _Found]]:
    """Where ``receipt`` goes, why not at its spec name (None: at its spec name), and what it found at
    the names it looked at (valid while the receipt's lock is held).

    The spec name ``<stem>_OK.TXT`` / ``<stem>_BAD.TXT`` is taken when its place, its OK/BAD sibling or
    the same names in upper or lower case hold a receipt of ours for a dropped name that is not one of
    this receipt's files; or when a non-regular entry (a FIFO, symlink, directory) sits at either name;
    or when the name only pretends to be a valid one. Then the receipt goes under
    ``distinct_receipt_name``: a receipt can never replace, or sit beside, another file's receipt."""
    path = outbox / receipt_name(receipt.name, receipt.ok)
    distinct = outbox / distinct_receipt_name(receipt.name, receipt.ok, receipt.file_id)
    seen: dict[str, _Found] = {}
    if _pretends(receipt.name):
        return distinct, "pretends", seen
    own = {_cell(n).encode("utf-8", "surrogateescape") for n in (receipt.name, *receipt.names)}
    stem = _stem(receipt.name)
    for variant in dict.fromkeys((stem, stem.upper(), stem.lower())):
        for ok in (True, False):
            candidate = receipt_name(f"{variant}.TXT", ok)
            found = seen[candidate] = _inspect(outbox / candidate)
            exact = variant == stem
            if exact and found.kind == "special":
                return distinct, "special", seen
            if found.kind == "ours" and found.name not in own:
                return distinct, "collides", seen
    return path, None, seen


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
    """Publish a durable ``staged`` receipt: the receipt of the newest file (by file_id) of a name stands,
    OK or BAD, and the core's own feedback file of the same name is never replaced. A receipt whose
    spec name is another file's goes under a distinct name (``receipt_path``). Returns None when
    nothing was written (``staged`` is removed). With ``sync_dir=False`` the caller fsyncs ``outbox``
    before it acknowledges the receipt."""
    plain = outbox / receipt_name(receipt.name, receipt.ok)
    with receipt_lock(outbox, plain.name):
        path, why, seen = receipt_path(outbox, receipt)
        if why is not None:
            return _publish_distinct(outbox, receipt, staged, path, why, sync_dir=sync_dir)
        other = outbox / receipt_name(receipt.name, not receipt.ok)
        here = seen.get(path.name) or _inspect(path)
        there = seen.get(other.name) or _inspect(other)
        if here.kind == "foreign":
            staged.unlink(missing_ok=True)
            return None
        newer = [i for i in (here.file_id, there.file_id) if i is not None and i > receipt.file_id]
        if newer:  # a later file of this name already answered: its receipt stands
            staged.unlink(missing_ok=True)
            return None
        publish(staged, path, replace=True)
        if sync_dir:
            fsync_dir(outbox)
        if there.file_id is not None:  # a BAD answered by a later OK (or the other way round)
            other.unlink(missing_ok=True)
            if sync_dir:
                fsync_dir(outbox)
    return path


def _publish_distinct(
    outbox: Path, receipt: Receipt, staged: Path, path: Path, why: str, *, sync_dir: bool
) -> Path | None:
    """The receipt under its file_id's name: replaced only by itself (a retry after a crash)."""
    say = log.error if why == "special" else log.warning  # a sender's entry in out/: an operator acts
    say(
        "receipt.distinct_name",
        reason=why,
        name=visible(receipt.name),
        file_id=receipt.file_id,
        receipt=visible(path.name),
    )
    try:
        if _inspect(path).file_id == receipt.file_id:
            publish(staged, path, replace=True)
        else:
            publish(staged, path, replace=False)
    except OSError as exc:  # something else already at a name made with this file_id: no receipt
        log.error("receipt.not_written", name=visible(receipt.name), file_id=receipt.file_id, error=str(exc))
        return None
    if sync_dir:
        fsync_dir(outbox)
    return path
