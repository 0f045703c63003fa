"""inspect_zip against real archives: from zipfile, from the zip tool, and hand-built where they can't go."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from validators.archive import ArchiveReport, ZipLimits, inspect_zip
from validators.attachments import Member

REGULAR = (stat.S_IFREG | 0o644) << 16
UNIX_MADE_BY = (3 << 8) | 20
ZIP_CODES = {"ZIP_CORRUPT", "ZIP_UNSAFE", "ZIP_LIMIT", "ZIP_NAME_ENCODING"}


# --- building archives byte by byte -----------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """One member as written to the archive; every header field can be made to lie."""

    name: bytes
    payload: bytes  # as stored in the archive (compressed when method is 8)
    crc: int
    size: int
    method: int = 0
    flags: int = 0
    external_attr: int = REGULAR
    made_by: int = UNIX_MADE_BY
    local_name: bytes | None = None
    local_flags: int | None = None
    local_method: int | None = None


def stored(name: bytes, content: bytes, **changes: Any) -> Raw:
    return replace(Raw(name, content, zlib.crc32(content), len(content)), **changes)


def deflate(content: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(content) + packer.flush()


def deflated(name: bytes, content: bytes, **changes: Any) -> Raw:
    raw = Raw(name, deflate(content), zlib.crc32(content), len(content), method=8)
    return replace(raw, **changes)


def local_header(raw: Raw) -> bytes:
    name = raw.name if raw.local_name is None else raw.local_name
    flags = raw.flags if raw.local_flags is None else raw.local_flags
    method = raw.method if raw.local_method is None else raw.local_method
    fixed = struct.pack(
        "<4sHHHHHIIIHH",
        b"PK\x03\x04",
        20,
        flags,
        method,
        0,
        0x21,
        raw.crc,
        len(raw.payload),
        raw.size,
        len(name),
        0,
    )
    return fixed + name


def central_header(raw: Raw, offset: int, *, zip64: bool = False) -> bytes:
    sizes = (len(raw.payload), raw.size, offset)
    extra = b""
    if zip64:
        extra = struct.pack("<HHQQQ", 1, 24, raw.size, len(raw.payload), offset)
        sizes = (0xFFFFFFFF,) * 3
    fixed = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        raw.made_by,
        20,
        raw.flags,
        raw.method,
        0,
        0x21,
        raw.crc,
        sizes[0],
        sizes[1],
        len(raw.name),
        len(extra),
        0,
        0,
        0,
        raw.external_attr,
        sizes[2],
    )
    return fixed + raw.name + extra


def end_record(count: int, cd_size: int, cd_offset: int) -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def build(*raws: Raw, zip64: bool = False) -> bytes:
    body = bytearray()
    central = bytearray()
    for raw in raws:
        central += central_header(raw, len(body), zip64=zip64)
        body += local_header(raw) + raw.payload
    cd_offset = len(body)
    body += central
    if zip64:
        z64_at = len(body)
        body += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, len(raws), len(raws), len(central), cd_offset
        )
        body += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_at, 1)
        return bytes(body + end_record(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    return bytes(body + end_record(len(raws), len(central), cd_offset))


def with_zipfile(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def inspect(data: bytes, **limits: Any) -> ArchiveReport:
    return inspect_zip(io.BytesIO(data), limits=ZipLimits(**limits))


def codes(report: ArchiveReport) -> list[str]:
    return [f.code for f in report.findings]


def member(name: str, content: bytes) -> Member:
    return Member(name, len(content), hashlib.sha256(content).hexdigest())


class CountingStream(io.BytesIO):
    """Records what was actually read, to prove that reading stopped early."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        self.reads.append((start, start + len(data)))
        return data

    @property
    def bytes_read(self) -> int:
        return sum(end - start for start, end in self.reads)

    def touched(self, low: int, high: int) -> bool:
        return any(start < high and low < end for start, end in self.reads)


def zeros_bomb(megabytes: int) -> Raw:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024**2)
    payload = b"".join(packer.compress(block) for _ in range(megabytes)) + packer.flush()
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(block, crc)
    return Raw(b"zeros.pdf", payload, crc, megabytes * 1024**2, method=8)


# --- sound archives ---------------------------------------------------------------------------------


def test_sound_archive_lists_members_with_real_size_and_sha256() -> None:
    contents = {"合同扫描件.pdf": os.urandom(70_000), "a.txt": b"plain text " * 500, "empty.bin": b""}
    report = inspect(with_zipfile(contents))
    assert report.findings == []
    assert report.members == [member(n, c) for n, c in contents.items()]


def test_stored_members_and_empty_archive_pass() -> None:
    assert inspect(with_zipfile({"x.pdf": b"%PDF-1.4"}, zipfile.ZIP_STORED)).members == [
        member("x.pdf", b"%PDF-1.4")
    ]
    empty = inspect(with_zipfile({}))
    assert (empty.members, empty.findings) == ([], [])


def test_nested_zip_is_just_a_member() -> None:
    inner = build(stored(b"../evil.txt", b"x"), stored("附件.pdf".encode("gbk"), b"y"))
    report = inspect(with_zipfile({"inner.zip": inner}))
    assert report.findings == []
    assert report.members == [member("inner.zip", inner)]


def test_hand_built_archives_are_read_by_zipfile_too() -> None:
    raws = (stored(b"a.txt", b"alpha"), deflated("附件.pdf".encode(), b"beta" * 100, flags=0x800))
    for data in (build(*raws), build(*raws, zip64=True)):
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
        report = inspect(data)
        assert report.findings == []
        assert report.members == [member("a.txt", b"alpha"), member("附件.pdf", b"beta" * 100)]


def test_windows_made_member_with_dos_attributes_passes() -> None:
    report = inspect(build(stored(b"report.pdf", b"x", external_attr=0x20, made_by=0x0A14)))
    assert (codes(report), len(report.members)) == ([], 1)


def test_zip64_from_zipfile_passes() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, archive.open("big.bin", "w", force_zip64=True) as out:
        out.write(b"z" * 5000)
    assert inspect(buffer.getvalue()).members == [member("big.bin", b"z" * 5000)]


# --- member names -----------------------------------------------------------------------------------


def test_unflagged_gbk_name_is_named_as_guessed_gbk() -> None:
    report = inspect(build(stored("附件一.pdf".encode("gbk"), b"x")))
    assert codes(report) == ["ZIP_NAME_ENCODING"]
    assert "附件一.pdf" in report.findings[0].message_zh
    assert "GBK" in report.findings[0].message_en
    assert report.members == []


def test_name_that_is_not_gbk_falls_back_to_cp437() -> None:
    report = inspect(build(stored(b"\x80\xff.pdf", b"x")))
    assert codes(report) == ["ZIP_NAME_ENCODING"]
    assert "CP437" in report.findings[0].message_en
    assert b"\x80\xff.pdf".decode("cp437") in report.findings[0].message_en


def test_unflagged_utf8_name_is_rejected_but_shown_as_utf8() -> None:
    report = inspect(build(stored("附件一.pdf".encode(), b"x")))
    assert codes(report) == ["ZIP_NAME_ENCODING"]
    assert "附件一.pdf" in report.findings[0].message_en
    assert "guessed as UTF-8" in report.findings[0].message_en


def test_flagged_name_that_is_not_utf8_is_rejected() -> None:
    report = inspect(build(stored("附件一.pdf".encode("gbk"), b"x", flags=0x800)))
    assert codes(report) == ["ZIP_NAME_ENCODING"]
    assert "附件一.pdf" in report.findings[0].message_zh


def test_flagged_utf8_and_plain_ascii_names_pass() -> None:
    report = inspect(build(stored("附件一.pdf".encode(), b"x", flags=0x800), stored(b"b.pdf", b"y")))
    assert codes(report) == []
    assert [m.name for m in report.members] == ["附件一.pdf", "b.pdf"]


# --- unsafe members ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (b"../evil.txt", "'..'"),
        (b"..\\evil.txt", "'..'"),
        (b"/etc/x", "absolute path"),
        (b"\\\\server\\share.txt", "absolute path"),
        (b"C:evil.txt", "drive letter"),
        (b"a\\b.txt", "backslash"),
        (b"a/b.txt", "inside a folder"),
        (b"dir/", "directory"),
        (b".", "directory"),
        (b"", "empty"),
        (b"bad\x00name.txt", "control or invisible"),
        (b"line\nbreak.txt", "control or invisible"),
        (b"x" * 256, "longer than 255 bytes"),
    ],
)
def test_unsafe_names_are_rejected(name: bytes, problem: str) -> None:
    report = inspect(build(stored(name, b"data"), stored(b"fine.pdf", b"ok")))
    assert codes(report) == ["ZIP_UNSAFE"]
    assert problem in report.findings[0].message_en
    assert report.members == [member("fine.pdf", b"ok")]


def test_message_shows_control_characters_escaped_and_long_names_shortened() -> None:
    shown = inspect(build(stored(b"line\nbreak.txt", b"d"))).findings[0].message_en
    assert "line\\u000abreak.txt" in shown and "\n" not in shown
    long_name = inspect(build(stored(b"y" * 300, b"d"))).findings[0].message_en
    assert "y" * 120 + "…" in long_name and "y" * 121 not in long_name


@pytest.mark.parametrize(
    ("char", "shown"), [("\u202e", "\\u202e"), ("\u200b", "\\u200b"), ("\u2028", "\\u2028")]
)
def test_invisible_characters_in_a_flagged_name_are_rejected(char: str, shown: str) -> None:
    report = inspect(build(stored(f"invoice{char}fdp.exe".encode(), b"x", flags=0x800)))
    assert codes(report) == ["ZIP_UNSAFE"]
    assert f"invoice{shown}fdp.exe" in report.findings[0].message_en


def test_directory_entry_from_zipfile_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.mkdir("scans")
        archive.writestr("a.pdf", b"x")
    report = inspect(buffer.getvalue())
    assert codes(report) == ["ZIP_UNSAFE"]
    assert "'scans/'" in report.findings[0].message_en and "directory" in report.findings[0].message_en
    assert [m.name for m in report.members] == ["a.pdf"]


def test_symlink_member_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("passwd.pdf")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    report = inspect(buffer.getvalue())
    assert codes(report) == ["ZIP_UNSAFE"]
    assert "symbolic link" in report.findings[0].message_en
    assert report.members == []


@pytest.mark.parametrize(
    ("attr", "problem"),
    [
        ((stat.S_IFIFO | 0o644) << 16, "special file"),
        ((stat.S_IFCHR | 0o644) << 16, "special file"),
        ((stat.S_IFDIR | 0o755) << 16, "directory"),
        (0x10, "directory"),
    ],
)
def test_non_regular_modes_are_rejected(attr: int, problem: str) -> None:
    report = inspect(build(stored(b"x.pdf", b"x", external_attr=attr)))
    assert codes(report) == ["ZIP_UNSAFE"]
    assert problem in report.findings[0].message_en


def test_encrypted_member_is_rejected_by_either_header() -> None:
    both = inspect(build(stored(b"secret.pdf", b"\x00" * 12 + b"ciphertext", flags=1)))
    local_only = inspect(build(stored(b"secret.pdf", b"\x00" * 12 + b"ciphertext", local_flags=1)))
    aes = inspect(build(replace(stored(b"secret.pdf", b"x"), method=99)))
    for report in (both, local_only, aes):
        assert codes(report) == ["ZIP_UNSAFE"]
        assert "encrypted" in report.findings[0].message_en
        assert report.members == []


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.pdf", "a.pdf"), ("Report.pdf", "report.PDF"), ("caf\u00e9.pdf", "cafe\u0301.pdf")],
)
def test_duplicate_names_are_rejected_also_after_normalisation(first: str, second: str) -> None:
    report = inspect(
        build(stored(first.encode(), b"1", flags=0x800), stored(second.encode(), b"2", flags=0x800))
    )
    assert codes(report) == ["ZIP_UNSAFE"]
    assert f"same name as member '{first}'" in report.findings[0].message_en
    assert report.members == [member(first, b"1")]


def test_duplicate_written_by_zipfile_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("a.pdf", b"first")
        archive.writestr("a.pdf", b"second")
    assert codes(inspect(buffer.getvalue())) == ["ZIP_UNSAFE"]


def test_local_header_that_names_another_file_is_rejected() -> None:
    report = inspect(build(stored(b"a.pdf", b"x", local_name=b"../a.pdf")))
    assert codes(report) == ["ZIP_UNSAFE"]
    assert "local header names a different file" in report.findings[0].message_en


def test_overlapping_members_are_rejected() -> None:
    """A member whose data holds the next member's local header: the overlap behind 'better zip bombs'."""
    inner = stored(b"b.pdf", b"kernel" * 10)
    outer = stored(b"a.pdf", local_header(inner) + inner.payload)
    body = local_header(outer) + outer.payload
    central = central_header(outer, 0) + central_header(inner, 30 + len(outer.name))
    report = inspect(body + central + end_record(2, len(central), len(body)))
    assert codes(report) == ["ZIP_UNSAFE"]
    assert (
        "'b.pdf'" in report.findings[0].message_en
        and "overlaps member 'a.pdf'" in report.findings[0].message_en
    )
    assert report.members == []


# --- compression methods ----------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "method"), [(zipfile.ZIP_BZIP2, 12), (zipfile.ZIP_LZMA, 14)])
def test_unsupported_compression_is_corrupt(compression: int, method: int) -> None:
    report = inspect(with_zipfile({"a.pdf": b"abc" * 100}, compression))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert f"'a.pdf' uses compression method {method}" in report.findings[0].message_en


def test_local_header_with_another_method_is_corrupt() -> None:
    report = inspect(build(stored(b"a.pdf", b"x", local_method=8)))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "another compression method" in report.findings[0].message_en


# --- limits and lying headers -----------------------------------------------------------------------


def test_member_count_limit() -> None:
    data = with_zipfile({f"{i}.pdf": b"x" for i in range(5)})
    assert codes(inspect(data, max_members=5)) == []
    report = inspect(data, max_members=4)
    assert codes(report) == ["ZIP_LIMIT"]
    assert "5 members" in report.findings[0].message_en
    assert report.members == []


def test_total_size_limit_stops_at_the_member_that_passes_it() -> None:
    data = with_zipfile({f"{i}.pdf": os.urandom(1000) for i in range(3)})
    assert codes(inspect(data, max_total_bytes=3000)) == []
    report = inspect(data, max_total_bytes=2500)
    assert codes(report) == ["ZIP_LIMIT"]
    assert "'2.pdf'" in report.findings[0].message_en
    assert [m.name for m in report.members] == ["0.pdf", "1.pdf"]


def test_total_size_limit_stops_reading_early() -> None:
    stream = CountingStream(build(stored(b"big.bin", bytes(8 * 1024**2))))
    report = inspect_zip(stream, limits=ZipLimits(max_total_bytes=1024**2))
    assert codes(report) == ["ZIP_LIMIT"]
    assert stream.bytes_read < 2 * 1024**2


def test_zip_bomb_is_stopped_by_the_ratio_limit() -> None:
    bomb = zeros_bomb(50)
    assert len(bomb.payload) < 100_000
    report = inspect(build(bomb), max_ratio=200)
    assert codes(report) == ["ZIP_LIMIT"]
    assert "'zeros.pdf' expands more than 200 times" in report.findings[0].message_en
    assert report.members == []


def test_zip_bomb_with_a_lying_size_header_is_still_stopped() -> None:
    bomb = replace(zeros_bomb(50), size=1000, crc=zlib.crc32(bytes(1000)))
    assert len(zipfile.ZipFile(io.BytesIO(build(bomb))).read("zeros.pdf")) == 1000  # zipfile believes it
    assert codes(inspect(build(bomb))) == ["ZIP_LIMIT"]


def test_ratio_limit_stops_inflating_early() -> None:
    bomb = zeros_bomb(200)
    data = build(bomb)
    stream = CountingStream(data)
    assert codes(inspect_zip(stream)) == ["ZIP_LIMIT"]
    start, length = data.index(bomb.payload), len(bomb.payload)
    assert length > 150_000  # the reader's first chunks and the end record search miss the middle
    assert not stream.touched(start + length * 2 // 5, start + length * 3 // 5)


def test_small_highly_compressible_member_is_no_bomb() -> None:
    data = build(deflated(b"blank.txt", bytes(200_000)))
    assert codes(inspect(data)) == []
    assert codes(inspect(data, ratio_min_bytes=0)) == ["ZIP_LIMIT"]


def test_size_header_smaller_than_the_content_is_corrupt() -> None:
    content = os.urandom(5000)
    lying = replace(deflated(b"a.pdf", content), size=100, crc=zlib.crc32(content[:100]))
    assert zipfile.ZipFile(io.BytesIO(build(lying))).read("a.pdf") == content[:100]  # zipfile believes it
    report = inspect(build(lying))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "'a.pdf' says 100 bytes, its content has 5000" in report.findings[0].message_en


def test_size_header_larger_than_the_content_is_corrupt() -> None:
    report = inspect(build(replace(stored(b"a.pdf", b"abc"), size=10)))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "says 10 bytes" in report.findings[0].message_en


def test_bytes_after_the_compressed_stream_are_corrupt() -> None:
    padded = deflated(b"a.pdf", b"content" * 50)
    report = inspect(build(replace(padded, payload=padded.payload + b"hidden")))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "followed by stray bytes" in report.findings[0].message_en


def test_compressed_stream_that_ends_early_is_corrupt() -> None:
    cut = deflated(b"a.pdf", os.urandom(3000))
    report = inspect(build(replace(cut, payload=cut.payload[:1000])))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "'a.pdf' ends early" in report.findings[0].message_en


# --- corrupt archives -------------------------------------------------------------------------------


def test_crc_mismatch_in_stored_data_is_corrupt() -> None:
    data = bytearray(with_zipfile({"a.pdf": b"hello world, this is the content"}, zipfile.ZIP_STORED))
    data[data.index(b"hello world")] ^= 0x01
    report = inspect(bytes(data))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "'a.pdf' fails its CRC check" in report.findings[0].message_en
    assert report.members == []


def test_flipped_byte_in_deflated_data_is_corrupt_and_names_the_member() -> None:
    raw = deflated(b"a.pdf", b"The quick brown fox jumps over the lazy dog. " * 200)
    data = bytearray(build(stored(b"ok.pdf", b"fine"), raw))
    data[data.index(raw.payload) + len(raw.payload) // 2] ^= 0x10
    report = inspect(bytes(data))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "'a.pdf'" in report.findings[0].message_en
    assert report.members == [member("ok.pdf", b"fine")]


@pytest.mark.parametrize("cut", [0.5, 1, 10, 21])
def test_truncated_archive_is_corrupt(cut: float) -> None:
    data = with_zipfile({"a.pdf": os.urandom(2000), "b.pdf": os.urandom(2000)})
    keep = int(len(data) * cut) if cut < 1 else len(data) - int(cut)
    report = inspect(data[:keep])
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "truncated" in report.findings[0].message_en


@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"", "empty"), (b"hello, not a zip", "not a ZIP file"), (bytes(30), "not a ZIP file")],
)
def test_not_a_zip_is_corrupt(data: bytes, problem: str) -> None:
    report = inspect(data)
    assert codes(report) == ["ZIP_CORRUPT"]
    assert problem in report.findings[0].message_en


def test_data_appended_after_the_end_record_is_corrupt() -> None:
    assert codes(inspect(with_zipfile({"a.pdf": b"x"}) + b"junk")) == ["ZIP_CORRUPT"]


def test_byte_removed_in_the_middle_is_corrupt() -> None:
    data = with_zipfile({"a.pdf": b"x" * 100})
    assert codes(inspect(data[:40] + data[41:])) == ["ZIP_CORRUPT"]


def test_end_record_that_miscounts_the_central_directory_is_corrupt() -> None:
    data = bytearray(build(stored(b"a.pdf", b"1"), stored(b"b.pdf", b"2")))
    struct.pack_into("<HH", data, len(data) - 22 + 8, 1, 1)
    report = inspect(bytes(data))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "central directory" in report.findings[0].message_en


def test_spanned_archive_is_corrupt() -> None:
    data = bytearray(build(stored(b"a.pdf", b"1")))
    struct.pack_into("<H", data, len(data) - 22 + 4, 1)
    report = inspect(bytes(data))
    assert codes(report) == ["ZIP_CORRUPT"]
    assert "split" in report.findings[0].message_en


# --- the real zip tool ------------------------------------------------------------------------------


def _zip_tool(folder: Path, names: list[str], locpath: Path) -> bytes:
    """Run Info-ZIP zip. It sets the UTF-8 flag only when setlocale("en_US.UTF-8") works, so the
    locale path decides: a folder offering that name (a link to C.utf8) or an empty one."""
    tool = shutil.which("zip")
    if tool is None:
        pytest.skip("the zip command-line tool is not installed")
    env = {**os.environ, "LOCPATH": str(locpath)}
    subprocess.run([tool, "-q", "-X", "out.zip", *names], cwd=folder, env=env, check=True)
    return (folder / "out.zip").read_bytes()


def _write(folder: Path, contents: dict[str, bytes]) -> list[str]:
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return list(contents)


def test_zip_tool_with_a_utf8_locale_makes_archives_that_pass(tmp_path: Path) -> None:
    utf8 = next(
        (p for p in (Path("/usr/lib/locale/C.utf8"), Path("/usr/lib/locale/C.UTF-8")) if p.is_dir()), None
    )
    if utf8 is None:
        pytest.skip("no C.utf8 locale folder to offer zip as en_US.UTF-8")
    locales = tmp_path / "locales"
    locales.mkdir()
    (locales / "en_US.UTF-8").symlink_to(utf8)
    contents = {"附件一.pdf": os.urandom(3000), "说明.txt": "报送说明\n".encode() * 100}
    report = inspect(_zip_tool(tmp_path, _write(tmp_path, contents), locales))
    assert report.findings == []
    assert report.members == [member(n, c) for n, c in contents.items()]


def test_zip_tool_without_a_utf8_locale_gives_name_encoding(tmp_path: Path) -> None:
    empty = tmp_path / "no-locales"
    empty.mkdir()
    data = _zip_tool(tmp_path, _write(tmp_path, {"附件一.pdf": b"x"}), empty)
    if zipfile.ZipFile(io.BytesIO(data)).infolist()[0].flag_bits & 0x800:
        pytest.skip("this zip build sets the UTF-8 flag whatever the locale")
    report = inspect(data)
    assert codes(report) == ["ZIP_NAME_ENCODING"]
    assert "'附件一.pdf'" in report.findings[0].message_en


# --- properties -------------------------------------------------------------------------------------

_BASES = (
    with_zipfile({"a.pdf": b"alpha" * 300, "附件.pdf": bytes(range(256)) * 2}),
    with_zipfile({"s.txt": b"stored content"}, zipfile.ZIP_STORED),
    build(stored(b"x.pdf", b"x"), deflated(b"y.pdf", bytes(5000)), zip64=True),
)
_LIMITS = st.builds(
    ZipLimits,
    max_members=st.integers(0, 4),
    max_total_bytes=st.integers(0, 10_000),
    max_ratio=st.floats(0.5, 300),
    ratio_min_bytes=st.integers(0, 5000),
)


def _assert_well_formed(report: ArchiveReport) -> None:
    assert isinstance(report, ArchiveReport)
    assert {f.code for f in report.findings} <= ZIP_CODES
    for found in report.members:
        assert len(found.sha256) == 64


@given(st.binary(max_size=3000))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    report = inspect(data)
    _assert_well_formed(report)
    assert report.findings


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["byte", "word", "insert", "delete", "truncate"]))
        if action == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif action == "word" and pos + 4 <= len(data):
            data[pos : pos + 4] = draw(
                st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"PK\x05\x06"])
            )
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=30))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 30))]
        elif action == "truncate":
            del data[pos:]
    return bytes(data)


@given(mutated(), _LIMITS | st.just(ZipLimits()))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_archives_never_raise(data: bytes, limits: ZipLimits) -> None:
    _assert_well_formed(inspect_zip(io.BytesIO(data), limits=limits))


_NAME_CHARS = st.sampled_from("abcXYZ019_-.附件说明（）é ")


@given(
    st.dictionaries(st.text(_NAME_CHARS, min_size=1, max_size=20), st.binary(max_size=3000), max_size=5),
    st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
@settings(max_examples=100, deadline=None)
def test_sound_archives_report_exactly_their_contents(contents: dict[str, bytes], compression: int) -> None:
    names = [
        n
        for n in contents
        if n.strip(".")
        and not n.endswith((".", " "))  # Windows drops a trailing dot or space: its own test below
        and n.casefold() not in {m.casefold() for m in contents if m < n}
    ]
    kept = {n: contents[n] for n in names}
    report = inspect(with_zipfile(kept, compression))
    assert report.findings == []
    assert report.members == [member(n, c) for n, c in kept.items()]


PDF_BYTES = b"%PDF-1.4 attachment\n"


@pytest.mark.parametrize(
    "name",
    [
        "a.pdf.",
        "a.pdf ",
        "a.pdf:evil",
        "CON.pdf",
        "con",
        "nul.txt",
        "COM1.pdf",
        "lpt9.doc",
        "AUX .pdf",
        "a<b.pdf",
        "a>b.pdf",
        'a"b.pdf',
        "a|b.pdf",
        "a?.pdf",
        "a*.pdf",
    ],
)
def test_names_a_core_on_windows_could_not_store_are_unsafe(name: str) -> None:
    """Accepted before: a core on Windows would drop the dot or space (colliding with ``a.pdf``), write
    an alternate data stream, or open a device."""
    report = inspect(with_zipfile({name: PDF_BYTES}))
    assert [f.code for f in report.findings] == ["ZIP_UNSAFE"], report.findings
    assert "Windows" in report.findings[0].message_en


@pytest.mark.parametrize("name", ["CONTRACT.pdf", "console.pdf", "a.b.pdf", "COM10.pdf", "附件 1.pdf"])
def test_names_that_only_look_like_windows_trouble_are_fine(name: str) -> None:
    assert inspect(with_zipfile({name: PDF_BYTES})).findings == []
