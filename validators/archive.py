"""Attachment ZIPs (spec 6): read the archive's own structure, trust no header, stream every member.

The reader is written here instead of using :mod:`zipfile`, because zipfile loads the whole central
directory whatever its size, cuts a member at the size its header claims (so a lying header hides a
bomb or a longer file) and decodes names before their raw bytes and flags can be judged. Here the
central directory is read record by record once the member count passed, and each member is inflated
in chunks while its real bytes are counted, hashed and held against the limits.

Decisions where the spec is silent (the operator's view: reject what the platform could not read or
an extractor could be fooled by, and say why):

- Only stored (0) and deflate (8) members are read; other methods are ``ZIP_CORRUPT`` ("cannot be
  read"), since the platform is not known to read them. WinZip AES (method 99) is encryption.
- Duplicates are also names equal after NFC normalisation and case folding: they collide when
  extracted on Windows or macOS.
- The ratio limit applies only to members larger than ``ratio_min_bytes``: a small blank document
  compresses far beyond 200:1 and is no bomb.
- A name not flagged UTF-8 is shown as UTF-8 when its bytes are valid UTF-8 (zip 3.0 writes that when
  it finds no en_US.UTF-8 locale), else as GBK, else as CP437.
- Also rejected: names a core on Windows could not store as they are (ending in a dot or a space, with
  one of ``<>:"|?*`` (``a.pdf:evil`` is an alternate data stream), a device name such as ``CON.pdf``),
  names over 255 bytes or with control or invisible characters, non-regular unix modes,
  members whose data overlap (a bomb technique), local headers that disagree with the central
  directory, data after the end record, and spanned archives.
- Only members without any finding are read; reading stops at the first member that passes the total.
- The stream must be seekable; the archive is all of it, from offset 0 to its end.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import stat
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from validators.attachments import Member
from validators.findings import Finding, make

_CHUNK = 64 * 1024
_NAME_MAX = 255  # bytes: what ext4, NTFS and APFS allow for one path component
_SHOWN_MAX = 120  # characters of a name quoted in a message
_UTF8_FLAG = 0x0800
_ENCRYPTION_FLAGS = 0x0041  # bit 0 encrypted, bit 6 strong encryption
_DOS_DIRECTORY = 0x10
_STORED, _DEFLATED, _AES = 0, 8, 99
_SATURATED = 0xFFFFFFFF

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EXTRA_HEADER = struct.Struct("<HH")


@dataclass(frozen=True)
class ZipLimits:
    """Per-archive limits from config (``limits.zip_*``)."""

    max_members: int = 10_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 200
    ratio_min_bytes: int = 1024**2


@dataclass
class ArchiveReport:
    """What an archive holds: its sound members as actually read, and everything wrong with it."""

    members: list[Member]
    findings: list[Finding]


@dataclass(slots=True)
class _Entry:
    """One central directory record, and what the checks learnt about it."""

    raw_name: bytes  # at most _NAME_MAX + 1 bytes are kept
    name_len: int
    flags: int
    method: int
    crc: int
    compressed: int
    size: int  # as the header claims
    offset: int
    external_attr: int
    name: str = ""
    sound: bool = True
    data_start: int = -1

    @property
    def shown(self) -> str:
        return _shown(self.name)


@dataclass(slots=True)
class _Directory:
    entries: list[_Entry]
    start: int  # member data must end before it


class _ReadError(Exception):
    """Reading (the archive or one member) cannot go on; carries the finding that says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


_DEFAULT_LIMITS = ZipLimits()


def inspect_zip(stream: BinaryIO, *, limits: ZipLimits = _DEFAULT_LIMITS) -> ArchiveReport:
    """Check an attachment ZIP read from a seekable binary stream; bad bytes give findings, not errors."""
    try:
        directory = _read_directory(stream, limits)
    except _ReadError as reject:
        return ArchiveReport([], [reject.finding])
    findings: list[Finding] = []
    seen: dict[str, str] = {}
    for entry in directory.entries:
        findings.extend(_check_entry(entry, seen))
    findings.extend(_check_layout(stream, directory))
    members: list[Member] = []
    budget = _Budget(limits)
    for entry in directory.entries:
        if not entry.sound:
            continue
        try:
            members.append(_read_member(stream, entry, budget))
        except _ReadError as reject:
            findings.append(reject.finding)
            if budget.spent:
                break
    return ArchiveReport(members, findings)


def _problem(code: str, zh: str, en: str) -> Finding:
    return make(code, problem_zh=zh, problem_en=en)


def _corrupt(zh: str, en: str) -> _ReadError:
    return _ReadError(_problem("ZIP_CORRUPT", zh, en))


def _unsafe(entry: _Entry, zh: str, en: str) -> Finding:
    """A ZIP_UNSAFE finding; the member will not be read."""
    entry.sound = False
    return make("ZIP_UNSAFE", member=entry.shown, problem_zh=zh, problem_en=en)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise _corrupt("压缩包被截断", "the archive is truncated")
    return data


def _find_end(stream: BinaryIO) -> tuple[int, tuple[int, ...]]:
    """The end record: the last signature whose comment reaches exactly the end of the file."""
    size = stream.seek(0, 2)
    tail_len = min(size, _EOCD.size + 0xFFFF)
    stream.seek(size - tail_len)
    tail = _read_exact(stream, tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0:
        if pos + _EOCD.size <= tail_len:
            record: tuple[int, ...] = _EOCD.unpack_from(tail, pos)[1:]
            if pos + _EOCD.size + record[-1] == tail_len:
                return size - tail_len + pos, record
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    if size == 0:
        raise _corrupt("文件为空", "the file is empty")
    stream.seek(0)
    if stream.read(4) == b"PK\x03\x04":
        raise _corrupt(
            "缺少压缩包结束记录（文件被截断，或末尾附加了其他数据）",
            "its end record is missing (the file is truncated or has data appended)",
        )
    raise _corrupt("不是 ZIP 文件", "it is not a ZIP file")


def _read_directory(stream: BinaryIO, limits: ZipLimits) -> _Directory:
    """The central directory's records, read only after the member count passed the limit."""
    eocd_at, (disk, cd_disk, disk_entries, count, cd_size, cd_offset, _) = _find_end(stream)
    cd_end, locator_at = eocd_at, eocd_at - _ZIP64_LOCATOR.size
    if locator_at >= 0:
        stream.seek(locator_at)
        sig, _, z64_at, _ = _ZIP64_LOCATOR.unpack(_read_exact(stream, _ZIP64_LOCATOR.size))
        if sig == b"PK\x06\x07":
            if z64_at + _ZIP64_EOCD.size > locator_at:
                raise _corrupt("ZIP64 结束记录位置无效", "its ZIP64 end record is misplaced")
            stream.seek(z64_at)
            record = _ZIP64_EOCD.unpack(_read_exact(stream, _ZIP64_EOCD.size))
            if record[0] != b"PK\x06\x06":
                raise _corrupt("ZIP64 结束记录已损坏", "its ZIP64 end record is damaged")
            disk, cd_disk, disk_entries, count, cd_size, cd_offset = record[4:]
            cd_end = z64_at
    if disk or cd_disk or disk_entries != count:
        raise _corrupt("不支持分卷压缩包", "split (multi-volume) archives are not supported")
    if cd_offset + cd_size != cd_end:
        raise _corrupt(
            "中央目录的位置与结束记录不符", "the central directory is not where its end record says"
        )
    if count > limits.max_members:
        raise _ReadError(
            _problem(
                "ZIP_LIMIT",
                f"成员数 {count} 超过上限 {limits.max_members}",
                f"it has {count} members, more than the limit of {limits.max_members}",
            )
        )
    stream.seek(cd_offset)
    entries = [_read_central(stream, cd_end) for _ in range(count)]
    if stream.tell() != cd_end:
        raise _corrupt(
            "中央目录的记录数与结束记录不符", "the central directory holds more than its end record says"
        )
    return _Directory(entries, cd_offset)


def _read_central(stream: BinaryIO, cd_end: int) -> _Entry:
    start = stream.tell()
    if start + _CENTRAL.size > cd_end:
        raise _corrupt("中央目录已损坏", "the central directory is damaged")
    fields = _CENTRAL.unpack(_read_exact(stream, _CENTRAL.size))
    name_len, extra_len, comment_len = fields[10:13]
    end = start + _CENTRAL.size + name_len + extra_len + comment_len
    if fields[0] != b"PK\x01\x02" or end > cd_end:
        raise _corrupt("中央目录已损坏", "the central directory is damaged")
    raw_name = stream.read(name_len)[: _NAME_MAX + 1]
    stream.seek(start + _CENTRAL.size + name_len)
    size, compressed, offset = _zip64_values(stream.read(extra_len), fields[9], fields[8], fields[16])
    stream.seek(end)
    return _Entry(
        raw_name,
        name_len,
        flags=fields[3],
        method=fields[4],
        crc=fields[7],
        compressed=compressed,
        size=size,
        offset=offset,
        external_attr=fields[15],
    )


def _zip64_values(extra: bytes, *values: int) -> tuple[int, int, int]:
    """Size, compressed size and offset, the saturated ones taken from the ZIP64 extra field."""
    out = list(values)
    pos = 0
    while _SATURATED in out and pos + _EXTRA_HEADER.size <= len(extra):
        tag, length = _EXTRA_HEADER.unpack_from(extra, pos)
        pos += _EXTRA_HEADER.size
        data, pos = extra[pos : pos + length], pos + length
        if tag != 1:
            continue
        wide = iter(int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data) - 7, 8))
        out = [next(wide, value) if value == _SATURATED else value for value in out]
        break
    if _SATURATED in out:
        raise _corrupt("ZIP64 扩展字段缺失或不完整", "a ZIP64 extra field is missing or incomplete")
    return out[0], out[1], out[2]


def _decode_name(raw: bytes, flags: int) -> tuple[str, str | None]:
    """The name, and the encoding guessed when it is not properly flagged UTF-8 (else None)."""
    if flags & _UTF8_FLAG:
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    elif raw.isascii():
        return raw.decode("ascii"), None
    for codec in ("UTF-8", "GBK"):
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return raw.decode("cp437"), "CP437"


def _invisible(char: str) -> bool:
    """Controls, format characters (bidi overrides, zero widths) and line or paragraph separators."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _shown(name: str) -> str:
    """A name fit to quote in a one-line message: control characters escaped, length capped."""
    text = "".join(f"\\u{ord(c):04x}" if _invisible(c) else c for c in name)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "…"


def _path_problem(entry: _Entry) -> tuple[str, str] | None:
    name = entry.name
    if not name:
        return "名称为空", "the name is empty"
    if any(_invisible(c) for c in name):
        return "名称含有控制字符或不可见字符", "the name contains a control or invisible character"
    if entry.name_len > _NAME_MAX:
        return f"名称超过 {_NAME_MAX} 字节", f"the name is longer than {_NAME_MAX} bytes"
    if name.endswith("/") or name == ".":
        return "它是目录", "it is a directory"
    if ".." in re.split(r"[/\\]", name):
        return (
            "名称含有 ..，解压时会写到目标目录之外",
            "the name holds '..' and would land outside the folder",
        )
    if name[0] in "/\\":
        return "它是绝对路径", "it is an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "名称以盘符开头", "the name starts with a drive letter"
    if "\\" in name:
        return "名称含有反斜杠（Windows 路径）", "the name contains a backslash (a Windows path)"
    if "/" in name:
        return "它位于子目录中，附件须平铺存放", "it is inside a folder; attachments must be flat"
    return _windows_problem(name)


_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')


def _windows_problem(name: str) -> tuple[str, str] | None:
    """A flat name a core on Windows could not store as it is: it would be renamed, cut, sent to a device
    or an alternate data stream (``a.pdf:evil``), or collide with another member (``a.pdf.`` is
    ``a.pdf`` there)."""
    if name[-1] in ". ":
        return "名称以点或空格结尾（Windows 会去掉）", "the name ends in a dot or a space (Windows drops it)"
    if bad := sorted(set(name) & _WINDOWS_FORBIDDEN):
        shown = " ".join(bad)
        return f"名称含有 Windows 不允许的字符 {shown}", f"the name holds characters Windows forbids: {shown}"
    device = name.split(".", 1)[0].rstrip(" ").upper()
    if device in _WINDOWS_RESERVED:
        return (
            f"名称 {device} 是 Windows 的设备名",
            f"{device} is a Windows device name, whatever its extension",
        )
    return None


def _type_problem(entry: _Entry) -> tuple[str, str] | None:
    mode = entry.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "它是符号链接", "it is a symbolic link"
    if stat.S_ISDIR(mode) or entry.external_attr & _DOS_DIRECTORY:
        return "它是目录", "it is a directory"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "它是特殊文件（设备、管道或套接字）", "it is a special file (a device, pipe or socket)"
    return None


def _check_entry(entry: _Entry, seen: dict[str, str]) -> list[Finding]:
    """What the central record alone shows: name encoding, path, type, duplicates, encryption, method."""
    findings: list[Finding] = []
    entry.name, guessed = _decode_name(entry.raw_name, entry.flags)
    if guessed:
        entry.sound = False
        findings.append(make("ZIP_NAME_ENCODING", member=entry.shown, guessed=guessed))
    problems = [_path_problem(entry), _type_problem(entry)]
    key = unicodedata.normalize("NFC", entry.name).casefold()
    if key in seen:
        earlier = _shown(seen[key])
        problems.append((f"与成员“{earlier}”重名", f"it has the same name as member '{earlier}'"))
    seen.setdefault(key, entry.name)
    if entry.flags & _ENCRYPTION_FLAGS or entry.method == _AES:
        problems.append(("它已加密", "it is encrypted"))
    findings.extend(_unsafe(entry, *problem) for problem in dict.fromkeys(p for p in problems if p))
    if entry.method not in (_STORED, _DEFLATED, _AES):
        entry.sound = False
        findings.append(
            _problem(
                "ZIP_CORRUPT",
                f"成员“{entry.shown}”使用无法读取的压缩方式 {entry.method}（只接受存储 0 和 Deflate 8）",
                f"member '{entry.shown}' uses compression method {entry.method}, which cannot be read "
                "(only stored 0 and deflate 8 are accepted)",
            )
        )
    return findings


def _check_layout(stream: BinaryIO, directory: _Directory) -> list[Finding]:
    """Local headers must agree with the central directory, and no two members may share bytes."""
    findings: list[Finding] = []
    placed: list[_Entry] = []
    for entry in directory.entries:
        try:
            findings.extend(_read_local(stream, entry, directory.start))
        except _ReadError as reject:
            entry.sound = False
            findings.append(reject.finding)
            continue
        placed.append(entry)
    placed.sort(key=lambda e: e.offset)
    for before, after in itertools.pairwise(placed):
        if before.data_start + before.compressed > after.offset:
            before.sound = False
            findings.append(
                _unsafe(
                    after,
                    f"它与成员“{before.shown}”的数据重叠（压缩炸弹手法）",
                    f"its data overlaps member '{before.shown}' (a zip bomb technique)",
                )
            )
    return findings


def _read_local(stream: BinaryIO, entry: _Entry, data_end: int) -> list[Finding]:
    """Place the member's data after its local header, which must say what the central record says."""
    zh, en = f"成员“{entry.shown}”", f"member '{entry.shown}'"
    if entry.offset + _LOCAL.size > data_end:
        raise _corrupt(f"{zh}的本地文件头超出范围", f"the local header of {en} lies outside the archive")
    stream.seek(entry.offset)
    fields = _LOCAL.unpack(_read_exact(stream, _LOCAL.size))
    if fields[0] != b"PK\x03\x04":
        raise _corrupt(f"{zh}的本地文件头已损坏", f"the local header of {en} is damaged")
    flags, method, name_len, extra_len = fields[2], fields[3], fields[9], fields[10]
    name = stream.read(min(name_len, _NAME_MAX + 1))
    entry.data_start = entry.offset + _LOCAL.size + name_len + extra_len
    if entry.data_start + entry.compressed > data_end:
        raise _corrupt(
            f"{zh}的数据超出范围（文件被截断或文件头中的大小有误）",
            f"the data of {en} runs past its end (the file is truncated or its header has wrong sizes)",
        )
    findings: list[Finding] = []
    if name_len != entry.name_len or name != entry.raw_name:
        findings.append(
            _unsafe(entry, "本地文件头中的名称与中央目录不一致", "its local header names a different file")
        )
    if flags & _ENCRYPTION_FLAGS and not entry.flags & _ENCRYPTION_FLAGS:
        findings.append(_unsafe(entry, "它已加密", "it is encrypted"))
    if method != entry.method:
        entry.sound = False
        findings.append(
            _problem(
                "ZIP_CORRUPT",
                f"{zh}的本地文件头与中央目录的压缩方式不一致",
                f"the local header of {en} gives another compression method",
            )
        )
    return findings


def _stored(stream: BinaryIO, entry: _Entry) -> Iterator[bytes]:
    stream.seek(entry.data_start)
    left = entry.compressed
    while left:
        chunk = _read_exact(stream, min(_CHUNK, left))
        left -= len(chunk)
        yield chunk


def _inflated(stream: BinaryIO, entry: _Entry) -> Iterator[bytes]:
    """Inflate exactly the member's compressed bytes, in bounded chunks; the stream must end with them."""
    zh, en = f"成员“{entry.shown}”的压缩数据", f"the compressed data of member '{entry.shown}'"
    stream.seek(entry.data_start)
    left = entry.compressed
    inflater = zlib.decompressobj(-15)
    while not inflater.eof:
        data = inflater.unconsumed_tail
        if not data and left:
            data = _read_exact(stream, min(_CHUNK, left))
            left -= len(data)
        try:
            out = inflater.decompress(data, _CHUNK)
        except zlib.error:
            raise _corrupt(f"{zh}无效", f"{en} is invalid") from None
        if not out and not data:
            raise _corrupt(f"{zh}不完整", f"{en} ends early")
        yield out
    if left or inflater.unused_data:
        raise _corrupt(f"{zh}之后还有多余字节", f"{en} is followed by stray bytes")


@dataclass(slots=True)
class _Budget:
    """The real bytes read so far, against the archive's total."""

    limits: ZipLimits
    total: int = 0

    @property
    def spent(self) -> bool:
        return self.total > self.limits.max_total_bytes


def _read_member(stream: BinaryIO, entry: _Entry, budget: _Budget) -> Member:
    """Stream one member against the limits; its size, CRC and sha256 come from the real bytes."""
    limits = budget.limits
    ratio_cap = max(limits.max_ratio * entry.compressed, limits.ratio_min_bytes)
    digest = hashlib.sha256()
    crc = size = 0
    for chunk in (_inflated if entry.method == _DEFLATED else _stored)(stream, entry):
        size += len(chunk)
        budget.total += len(chunk)
        if budget.spent:
            raise _ReadError(
                _problem(
                    "ZIP_LIMIT",
                    f"解压后总大小超过上限 {limits.max_total_bytes} 字节（读到成员“{entry.shown}”时）",
                    f"the uncompressed total passes the limit of {limits.max_total_bytes} bytes "
                    f"(at member '{entry.shown}')",
                )
            )
        if size > ratio_cap:
            raise _ReadError(
                _problem(
                    "ZIP_LIMIT",
                    f"成员“{entry.shown}”的压缩比超过上限 {limits.max_ratio:g}:1（压缩炸弹）",
                    f"member '{entry.shown}' expands more than {limits.max_ratio:g} times (a zip bomb)",
                )
            )
        digest.update(chunk)
        crc = zlib.crc32(chunk, crc)
    if size != entry.size:
        raise _corrupt(
            f"成员“{entry.shown}”的文件头声称 {entry.size} 字节，实际为 {size} 字节",
            f"the header of member '{entry.shown}' says {entry.size} bytes, its content has {size}",
        )
    if crc != entry.crc:
        raise _corrupt(f"成员“{entry.shown}”的 CRC 校验失败", f"member '{entry.shown}' fails its CRC check")
    return Member(entry.name, size, digest.hexdigest())
