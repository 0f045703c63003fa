"""Reading a TXT file once for both its content validation and its sha256, in bounded memory.

The daemon calls ``scan_text_file`` for every TXT it takes. Hashing runs in a helper thread on the
very chunks the validator reads (``hashlib`` releases the GIL on large buffers), so the bytes hashed
are the bytes validated and the hash costs no extra pass. A file smaller than one hashing batch, or a
process confined to one CPU, hashes each chunk inline instead: there the thread cannot overlap and
only adds its start and GIL hand-offs (measured ~8% on one CPU).
Given a process pool, a file larger than one segment is cut at line boundaries into segments that
worker processes validate in parallel, each reading its own byte range; this process meanwhile reads
the file once in order to hash it, find the cuts and count the lines before each segment, so that the
merged report is exactly the one a single pass would give.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from codes.tables import TableSpec
from validators.text import TextReport, TextValidator, merge_reports

__all__ = ["ScanResult", "scan_text_file"]

_HASH_BATCH = 8 * 1024 * 1024
"""Bytes handed to the hashing thread at once. While validation holds the GIL, a thread waits up to
the switch interval (5 ms) each time it needs the GIL back, so small hand-offs would serialise."""


Progress = Callable[[int], object]


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


@dataclass(frozen=True, slots=True)
class ScanResult:
    report: TextReport
    sha256: str
    size: int


def scan_text_file(
    path: Path,
    table: TableSpec,
    *,
    org: str | None,
    date: str | None,
    pool: Executor | None = None,
    segment_bytes: int = 64 * 1024 * 1024,
    chunk_bytes: int = 1024 * 1024,
    progress: Progress | None = None,
) -> ScanResult:
    """Validate the TXT file at ``path`` against ``table`` and hash it; blocking, run it off the loop.
    ``progress`` is told the size of every chunk read (a progress bar for one large file)."""
    if segment_bytes < 1 or chunk_bytes < 1:
        raise ValueError("segment_bytes and chunk_bytes must be positive")
    with _open(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        chunks = _chunks(stream, chunk_bytes, progress=progress)
        if pool is None or size <= segment_bytes:
            return _serial(chunks, table, org, date, inline_hash=size <= _HASH_BATCH or _cpus() < 2)
        return _parallel(chunks, path, table, org, date, pool, segment_bytes, chunk_bytes)


def _open(path: Path) -> io.FileIO:
    """Open a regular file without following a symlink and without blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return io.FileIO(fd, "rb", closefd=True)


def _chunks(
    stream: io.FileIO, chunk_bytes: int, end: int | None = None, progress: Progress | None = None
) -> Iterator[bytes]:
    left = end
    while left is None or left > 0:
        chunk = stream.read(chunk_bytes if left is None else min(chunk_bytes, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        if progress is not None:
            progress(len(chunk))
        yield chunk


def _serial(
    chunks: Iterator[bytes], table: TableSpec, org: str | None, date: str | None, *, inline_hash: bool
) -> ScanResult:
    """``inline_hash``: no hashing thread, for a file too small to overlap anything (a thread per file
    would cost more than it saves) or a process confined to one CPU (it could not overlap either)."""
    validator = TextValidator(table, org=org, date=date)
    digest = hashlib.sha256()
    size = 0
    if inline_hash:
        for chunk in chunks:
            digest.update(chunk)
            validator.feed(chunk)
            size += len(chunk)
        return ScanResult(validator.finish(), digest.hexdigest(), size)
    batch: list[bytes] = []
    batch_bytes = 0
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
        hashing: Future[None] | None = None
        for chunk in chunks:
            batch.append(chunk)
            batch_bytes += len(chunk)
            if batch_bytes >= _HASH_BATCH:
                if hashing is not None:
                    hashing.result()  # at most two batches held: memory stays bounded
                hashing = hasher.submit(_hash, digest, batch)
                batch, batch_bytes = [], 0
            validator.feed(chunk)
            size += len(chunk)
        if hashing is not None:
            hashing.result()
    _hash(digest, batch)
    return ScanResult(validator.finish(), digest.hexdigest(), size)


def _cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _hash(digest: _Digest, chunks: list[bytes]) -> None:
    """Hash a batch as one buffer: the thread then needs the GIL only twice a batch, not twice a chunk."""
    digest.update(b"".join(chunks) if len(chunks) > 1 else chunks[0] if chunks else b"")


@dataclass(frozen=True, slots=True)
class _Segment:
    """A byte range of the file starting at a line boundary, and what a worker needs to validate it."""

    start: int
    end: int
    first_line: int
    line_ending: str | None


def _parallel(
    chunks: Iterator[bytes],
    path: Path,
    table: TableSpec,
    org: str | None,
    date: str | None,
    pool: Executor,
    segment_bytes: int,
    chunk_bytes: int,
) -> ScanResult:
    digest = hashlib.sha256()
    futures: list[Future[TextReport]] = []

    def submit(segment: _Segment) -> None:
        futures.append(pool.submit(_validate_segment, str(path), segment, table, org, date, chunk_bytes))

    pos = lines = seg_start = 0  # offset of the chunk; newlines before it; where the open segment starts
    seg_line, next_cut = 1, segment_bytes
    ending: str | None = None
    previous = b""  # the byte before the chunk, to tell a CRLF cut by a chunk border
    try:
        for chunk in chunks:
            digest.update(chunk)
            if ending is None and (first := chunk.find(b"\n")) >= 0:
                ending = "\r\n" if (chunk[first - 1 : first] if first else previous) == b"\r" else "\n"
            done = 0  # newlines in chunk[:done] are counted in ``lines``
            while (newline := chunk.find(b"\n", max(done, next_cut - pos))) >= 0:
                lines += chunk.count(b"\n", done, newline + 1)
                done = newline + 1
                submit(_Segment(seg_start, pos + done, seg_line, ending))
                seg_start, seg_line, next_cut = pos + done, lines + 1, pos + done + segment_bytes
            lines += chunk.count(b"\n", done)
            previous = chunk[-1:]
            pos += len(chunk)
        if seg_start < pos or not futures:
            submit(_Segment(seg_start, pos, seg_line, ending))
        reports = [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()
    return ScanResult(merge_reports(reports), digest.hexdigest(), pos)


def _validate_segment(
    path: str, segment: _Segment, table: TableSpec, org: str | None, date: str | None, chunk_bytes: int
) -> TextReport:
    """Validate one segment in a worker process, reading only its byte range."""
    validator = TextValidator(
        table,
        org=org,
        date=date,
        first_line=segment.first_line,
        file_start=segment.start == 0,
        line_ending=segment.line_ending,
        offset=segment.start,
    )
    with _open(Path(path)) as stream:
        stream.seek(segment.start)
        for chunk in _chunks(stream, chunk_bytes, segment.end - segment.start):
            validator.feed(chunk)
    return validator.finish()
