"""scan_text_file: one read for validation and sha256; parallel segments give the serial report."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from codes.tables import bundled_tables
from gateway.pipeline.scan import scan_text_file
from validators.text import validate_text

D2001 = bundled_tables()["D2001"]
D3006 = bundled_tables()["D3006"]
GOOD = "41210000|{n:024d}|0|4121902254243635|561913|024||1265514.50|20240115|092337|W01|20240115"


def rows(count: int) -> list[str]:
    return [GOOD.format(n=n) for n in range(count)]


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2) as executor:
        yield executor


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_serial_scan_hashes_and_validates(tmp_path: Path) -> None:
    lines = rows(3000)
    lines[1500] = lines[1500].replace("|024|", "|025|")
    data = ("\n".join(lines) + "\n").encode()
    path = write(tmp_path / "a.TXT", data)
    result = scan_text_file(path, D2001, org="41210000", date="20240115", chunk_bytes=4096)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert result.report == validate_text(data, D2001, org="41210000", date="20240115")
    assert [(f.code, f.line) for f in result.report.findings] == [("FIELD_ENUM", 1501)]


def test_empty_file(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    path = write(tmp_path / "e.TXT", b"")
    for executor in (None, pool):
        result = scan_text_file(path, D2001, org=None, date=None, pool=executor, segment_bytes=1)
        assert (result.size, result.sha256, result.report.records) == (0, hashlib.sha256(b"").hexdigest(), 0)


def spread_errors(count: int, ending: str) -> bytes:
    lines = [line.encode() for line in rows(count)]
    for i in range(0, count, 23):
        lines[i] = lines[i].replace(b"|0|", b"|7|")
    for i in range(5, count, 101):
        lines[i] = lines[i].replace(b"W01", "W\u20280".encode())
    lines[200] = lines[200].replace(b"4121902254243635", b"41\xff")
    return b"\xef\xbb\xbf" + ending.encode().join(lines) + ending.encode()


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("segment_bytes", [997, 4096, 65536])
def test_parallel_equals_serial_across_segment_borders(
    tmp_path: Path, pool: ProcessPoolExecutor, ending: str, segment_bytes: int
) -> None:
    data = spread_errors(2500, ending)
    path = write(tmp_path / "b.TXT", data)
    serial = scan_text_file(path, D2001, org="41210000", date="20240115", chunk_bytes=1000)
    parallel = scan_text_file(
        path, D2001, org="41210000", date="20240115", pool=pool, segment_bytes=segment_bytes, chunk_bytes=1000
    )
    assert parallel == serial
    assert serial.report.total > 100 and len(serial.report.findings) == 100
    assert serial.report.findings[0].code == "BOM_PRESENT"
    assert any(f.code == "ENCODING_INVALID" for f in serial.report.findings)
    assert serial.sha256 == hashlib.sha256(data).hexdigest()


def test_parallel_keeps_attachment_rows_in_order(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    line = "41210000|FJ{n:04d}|A|01|附件{n}.pdf|{n}||20240115"
    data = ("\r\n".join(line.format(n=n) for n in range(800)) + "\r\n").encode()
    path = write(tmp_path / "c.TXT", data)
    serial = scan_text_file(path, D3006, org="41210000", date="20240115")
    parallel = scan_text_file(path, D3006, org="41210000", date="20240115", pool=pool, segment_bytes=2000)
    assert parallel == serial
    assert [row.line for row in parallel.report.attachment_rows] == list(range(1, 801))


def test_a_file_without_newlines_in_parallel(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    data = b"x|" * 20_000
    path = write(tmp_path / "d.TXT", data)
    serial = scan_text_file(path, D2001, org=None, date=None)
    assert scan_text_file(path, D2001, org=None, date=None, pool=pool, segment_bytes=1000) == serial
    assert [f.code for f in serial.report.findings] == ["FIELD_COUNT"]


def test_refuses_symlinks_and_fifos(tmp_path: Path) -> None:
    target = write(tmp_path / "t.TXT", b"")
    link = tmp_path / "l.TXT"
    link.symlink_to(target)
    with pytest.raises(OSError):
        scan_text_file(link, D2001, org=None, date=None)
    fifo = tmp_path / "f.TXT"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        scan_text_file(fifo, D2001, org=None, date=None)


@pytest.mark.parametrize("parallel", [False, True])
def test_progress_is_told_every_chunk_read(tmp_path: Path, pool: ProcessPoolExecutor, parallel: bool) -> None:
    """``check`` moves its bar while one large file is read, not only when the file is done."""
    data = ("\n".join(rows(20_000)) + "\n").encode()
    path = write(tmp_path / "f.txt", data)
    told: list[int] = []
    scan_text_file(
        path,
        D2001,
        org="41210000",
        date="20240115",
        pool=pool if parallel else None,
        segment_bytes=len(data) // 3,
        chunk_bytes=64 * 1024,
        progress=told.append,
    )
    assert sum(told) == len(data)
    assert len(told) == -(-len(data) // (64 * 1024))  # one call a chunk
