"""Hostile inputs, table-driven: one running daemon takes the whole table, then each case is checked.

Every case drops one or more entries (files with hostile names or contents, hostile ZIPs with a valid
TXT partner, links, FIFOs, sockets, sub-directories, an oversized and a growing file) into an inbox of a
single running daemon. After all of them reached an outcome, each case is asserted on its own: the
outcome and finding code in the sync history, ``<file_id>.reason.json`` in quarantine for a rejection,
the receipt in ``out/`` and nothing left in ``in/`` or ``.gateway/work``. Then a plain valid file must
still be forwarded within seconds, and the daemon's log must not carry a raw control character.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import os
import socket
import stat
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.forward.retry import MISCONFIGURED_TRIES
from harness.daemon import (
    ORG,
    TC,
    Gateway,
    d1001_body,
    d1001_name,
    day,
    drop,
    launch,
    receipt_head,
    state_files,
    wait_for,
)
from tests.e2e.test_http_core import use_http_core
from tests.forward.helpers import Core, Reply

MAX_FILE_BYTES = 2 * 1024 * 1024
STATIONS = ("k1237", "k6666")


# --- ZIPs written header by header (copied from tests/validators/test_archive.py) ---------------------

REGULAR = (stat.S_IFREG | 0o644) << 16
SYMLINK = (stat.S_IFLNK | 0o777) << 16
UNIX_MADE_BY = (3 << 8) | 20


@dataclass(frozen=True)
class Raw:
    name: bytes
    payload: bytes
    crc: int
    size: int
    method: int = 0
    flags: int = 0
    external_attr: int = REGULAR


def stored(name: bytes, content: bytes, **changes: Any) -> Raw:
    return Raw(name, content, zlib.crc32(content), len(content), **changes)


def build(*raws: Raw) -> bytes:
    body = bytearray()
    central = bytearray()
    for raw in raws:
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                UNIX_MADE_BY,
                20,
                raw.flags,
                raw.method,
                0,
                0x21,
                raw.crc,
                len(raw.payload),
                raw.size,
                len(raw.name),
                0,
                0,
                0,
                0,
                raw.external_attr,
                len(body),
            )
            + raw.name
        )
        body += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                raw.flags,
                raw.method,
                0,
                0x21,
                raw.crc,
                len(raw.payload),
                raw.size,
                len(raw.name),
                0,
            )
            + raw.name
            + raw.payload
        )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(raws), len(raws), len(central), len(body), 0)
    return bytes(body + central + end)


def with_zipfile(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


# --- the case table ----------------------------------------------------------------------------------

PDF = b"%PDF-1.4 hostile test attachment\n"


@dataclass
class Case:
    id: str
    name: str | bytes  # the entry the case is about (bytes: not UTF-8)
    code: str | None  # expected finding code; None = forwarded
    make: Callable[[Path, Path], None]  # (inbox, scratch dir) -> creates the entry (and any partner)
    station: str = "k1237"
    tc: str = TC
    partner: str | None = None  # the TXT of a ZIP case: must reach an outcome too
    receipt: bool = True  # False: no receipt expected (no registered mailbox to answer in)
    distinct: bool = False  # the receipt goes under <stem>_<file_id>_BAD.TXT (it could pass for another's)

    @property
    def fs_name(self) -> bytes:
        return self.name if isinstance(self.name, bytes) else os.fsencode(self.name)

    @property
    def history_name(self) -> str:
        return os.fsdecode(self.fs_name)


def write_raw(name: str | bytes, data: bytes) -> Callable[[Path, Path], None]:
    """The recommended writer (hidden temp name, rename), also for names that are not UTF-8."""

    def make(inbox: Path, _: Path) -> None:
        text = name if isinstance(name, str) else os.fsdecode(name)  # surrogateescape: bytes kept
        tmp = inbox / f".{text[:60]}.part"
        tmp.write_bytes(data)
        tmp.rename(inbox / text)

    return make


def name_case(cid: str, name: str | bytes, code: str = "NAME_INVALID") -> Case:
    return Case(cid, name, code, write_raw(name, d1001_body()))


def text_case(cid: str, n: int, data: bytes, code: str | None) -> Case:
    name = d1001_name(date=day(n))
    return Case(cid, name, code, write_raw(name, data))


def d3006_pair(cid: str, n: int, members: list[str], archive: bytes, code: str | None) -> Case:
    """A valid TXT that names the members (so the ZIP's own problem is the one found) and the ZIP."""
    date = day(n)
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    rows = "".join(f"{ORG}|FJ{i:03d}|A|01|{m}|{len(PDF)}||{date}\n" for i, m in enumerate(members))

    def make(inbox: Path, scratch: Path) -> None:
        drop(inbox, f"{stem}.TXT", rows.encode())
        drop(inbox, f"{stem}.ZIP", archive)

    return Case(cid, f"{stem}.ZIP", code, make, partner=f"{stem}.TXT")


def good_d1001(n: int, rows: int = 1) -> bytes:
    return d1001_body(date=day(n), rows=rows)


def symlink(name: str, dangling: bool = False) -> Callable[[Path, Path], None]:
    def make(inbox: Path, scratch: Path) -> None:
        target = scratch / "secret.txt"
        if not dangling:
            target.write_text("do not read")
        (inbox / name).symlink_to(target if not dangling else scratch / "nowhere")

    return make


def hardlink(name: str, n: int) -> Callable[[Path, Path], None]:
    def make(inbox: Path, scratch: Path) -> None:
        outside = scratch / "hardlink-source.TXT"
        outside.write_bytes(good_d1001(n))
        os.link(outside, inbox / name)

    return make


def fifo(name: str) -> Callable[[Path, Path], None]:
    return lambda inbox, _: os.mkfifo(inbox / name)


def unix_socket(name: str) -> Callable[[Path, Path], None]:
    def make(inbox: Path, _: Path) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        here = Path.cwd()
        os.chdir(inbox)  # a relative bind: the tmp path may be longer than sun_path allows
        try:
            sock.bind(name)
        finally:
            os.chdir(here)
            sock.close()

    return make


def subdir(name: str, n: int) -> Callable[[Path, Path], None]:
    def make(inbox: Path, scratch: Path) -> None:
        built = scratch / name  # built aside, then renamed in whole (the daemon may move it at once)
        built.mkdir()
        (built / d1001_name(date=day(n))).write_bytes(good_d1001(n))
        built.rename(inbox / name)

    return make


def sparse(name: str, size: int) -> Callable[[Path, Path], None]:
    def make(inbox: Path, _: Path) -> None:
        tmp = inbox / f".{name}.part"
        with tmp.open("wb") as out:
            out.write(good_d1001(0)[:10])
            out.truncate(size)
        tmp.rename(inbox / name)

    return make


GROWING: dict[str, Any] = {}


def growing(name: str, n: int) -> Callable[[Path, Path], None]:
    """An in-place writer that keeps appending for ~3 s (longer than settle_seconds between writes)."""
    rows = good_d1001(n, rows=12).splitlines(keepends=True)

    def writer(path: Path) -> None:
        with path.open("ab") as out:
            for row in rows[1:]:
                time.sleep(0.25)
                out.write(row)
                out.flush()

    def make(inbox: Path, _: Path) -> None:
        path = inbox / name
        with path.open("wb") as out:
            out.write(rows[0])
        thread = threading.Thread(target=writer, args=(path,), daemon=True)
        thread.start()
        GROWING[name] = (thread, b"".join(rows))

    return make


def filler(n: int) -> str:
    """A 255-byte (the ext4 maximum) name."""
    base = f"CISP-{ORG}_D1001_V01_1_{day(n)}_01_Q"
    return base + "X" * (255 - len(base) - 4) + ".TXT"


def zip_cases() -> list[Case]:
    gbk_name = "报告.pdf".encode("gbk")
    bomb = with_zipfile([("a.pdf", b"\0" * (8 * 1024 * 1024))])
    good = with_zipfile([("a.pdf", PDF)])
    crc_bad = build(Raw(b"a.pdf", PDF, zlib.crc32(PDF) ^ 1, len(PDF)))
    nested = with_zipfile([("inner.zip", good)])
    return [
        d3006_pair("zip_slip_dotdot", 200, ["../evil.pdf"], build(stored(b"../evil.pdf", PDF)), "ZIP_UNSAFE"),
        d3006_pair(
            "zip_slip_absolute", 201, ["/etc/evil.pdf"], build(stored(b"/etc/evil.pdf", PDF)), "ZIP_UNSAFE"
        ),
        d3006_pair(
            "zip_slip_backslash", 202, ["..\\evil.pdf"], build(stored(b"..\\evil.pdf", PDF)), "ZIP_UNSAFE"
        ),
        d3006_pair("zip_drive_letter", 203, ["C:evil.pdf"], build(stored(b"C:evil.pdf", PDF)), "ZIP_UNSAFE"),
        d3006_pair(
            "zip_directory_member",
            204,
            ["a.pdf"],
            build(stored(b"dir/", b""), stored(b"a.pdf", PDF)),
            "ZIP_UNSAFE",
        ),
        d3006_pair("zip_bomb_ratio", 205, ["a.pdf"], bomb, "ZIP_LIMIT"),
        d3006_pair(
            "zip_gbk_name_unflagged", 206, ["报告.pdf"], build(stored(gbk_name, PDF)), "ZIP_NAME_ENCODING"
        ),
        d3006_pair("zip_encrypted", 207, ["a.pdf"], build(stored(b"a.pdf", PDF, flags=1)), "ZIP_UNSAFE"),
        d3006_pair("zip_truncated", 208, ["a.pdf"], good[: len(good) // 2], "ZIP_CORRUPT"),
        d3006_pair(
            "zip_duplicate_members",
            209,
            ["a.pdf"],
            build(stored(b"a.pdf", PDF), stored(b"a.pdf", PDF)),
            "ZIP_UNSAFE",
        ),
        d3006_pair(
            "zip_symlink_member",
            210,
            ["a.pdf"],
            build(stored(b"a.pdf", b"/etc/passwd", external_attr=SYMLINK)),
            "ZIP_UNSAFE",
        ),
        d3006_pair("zip_bad_crc", 211, ["a.pdf"], crc_bad, "ZIP_CORRUPT"),
        d3006_pair("zip_not_a_zip", 212, ["a.pdf"], b"this is not a zip archive\n" * 20, "ZIP_CORRUPT"),
        d3006_pair("zip_empty_file", 213, ["a.pdf"], b"", "ZIP_CORRUPT"),
        d3006_pair(
            "zip_control_char_member",
            214,
            ["a\x1b[31m.pdf"],
            build(stored(b"a\x1b[31m.pdf", PDF)),
            "ZIP_UNSAFE",
        ),
        _nested(215, nested),
        *(
            d3006_pair(
                f"zip_windows_{cid}", 216 + n, [member], build(stored(member.encode(), PDF)), "ZIP_UNSAFE"
            )
            for n, (cid, member) in enumerate(
                [
                    ("trailing_dot", "a.pdf."),
                    ("trailing_space", "a.pdf "),
                    ("stream", "a.pdf:evil"),
                    ("device_con", "CON.pdf"),
                    ("device_lpt", "lpt1.doc"),
                    ("forbidden_char", "a?.pdf"),
                ]
            )
        ),
    ]


def _nested(n: int, archive: bytes) -> Case:
    """A ZIP inside the ZIP is a flat file member like any other: forwarded, never opened."""
    date = day(n)
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    inner = zipfile.ZipFile(io.BytesIO(archive)).read("inner.zip")
    row = f"{ORG}|FJ001|A|01|inner.zip|{len(inner)}|{hashlib.sha256(inner).hexdigest()}|{date}\n"

    def make(inbox: Path, _: Path) -> None:
        drop(inbox, f"{stem}.TXT", row.encode())
        drop(inbox, f"{stem}.ZIP", archive)

    return Case("zip_nested_forwarded", f"{stem}.ZIP", None, make, partner=f"{stem}.TXT")


def cases() -> list[Case]:
    d = day(1)
    valid = f"CISP-{ORG}_D1001_V01_1_{d}_01_Q"
    table = [
        # -- names ------------------------------------------------------------------------------------
        name_case("name_dotdot_inside", f"CISP-{ORG}_D1001_V01_1_{d}_01_Q..TXT"),
        name_case("name_dotdot_path_like", f"CISP-..%2F..%2F{valid}.TXT"),
        name_case("name_trailing_dotdot", f"{valid}.TXT.."),
        name_case("name_division_slash_2215", f"CISP-{ORG}\u2215D1001_V01_1_{d}_01_Q.TXT"),
        name_case("name_fraction_slash_2044", f"CISP-{ORG}\u2044..\u2044D1001_V01_1_{d}_01_Q.TXT"),
        name_case("name_fullwidth_solidus", f"CISP-{ORG}\uff0fD1001_V01_1_{d}_01_Q.TXT"),
        name_case("name_backslash", f"CISP-{ORG}\\..\\D1001_V01_1_{d}_01_Q.TXT"),
        name_case("name_ctrl_soh", f"CISP-{ORG}_D1001\x01_V01_1_{d}_01_Q.TXT"),
        name_case("name_newline", f"CISP-{ORG}_D1001_V01_1_{d}_01_Q.TXT\nfake.log line"),
        name_case("name_carriage_return", f"CISP-{ORG}_D1001_V01_1_{d}_01_Q\r.TXT"),
        name_case("name_ansi_escape", f"\x1b[31mCISP-{ORG}_D1001_V01_1_{d}_01_Q.TXT\x1b[0m"),
        name_case("name_tab", f"CISP-{ORG}\t_D1001_V01_1_{d}_01_Q.TXT"),
        name_case("name_del_7f", f"CISP-{ORG}_D1001\x7f_V01_1_{d}_01_Q.TXT"),
        name_case("name_c1_nel_0085", f"CISP-{ORG}_D1001\u0085_V01_1_{d}_01_Q.TXT"),
        name_case("name_c1_csi_009b", f"CISP-{ORG}_D1001\u009b31m_V01_1_{d}_01_Q.TXT"),
        name_case("name_line_separator_2028", f"CISP-{ORG}_D1001\u2028_V01_1_{d}_01_Q.TXT"),
        name_case("name_paragraph_separator_2029", f"CISP-{ORG}_D1001_V01_1_{d}\u2029_01_Q.TXT"),
        name_case("name_rlo_202e", f"CISP-{ORG}_D1001_V01_1_{d}_01_Q\u202eTXT.exe"),
        name_case("name_zero_width_space", f"CISP-{ORG}_D1001\u200b_V01_1_{d}_01_Q.TXT"),
        name_case("name_non_utf8_ff", b"CISP-41210000_D1001\xff\xfe_V01_1_" + d.encode() + b"_01_Q.TXT"),
        name_case("name_non_utf8_latin1", b"CISP-41210000_D1001_V01_1_" + d.encode() + b"_01_Q\xe9.TXT"),
        name_case("name_gbk_bytes", "报送文件.TXT".encode("gbk")),
        name_case("name_255_bytes", filler(2)),
        name_case("name_255_bytes_multibyte", "报" * 83 + "XY.TXT"),  # 249 + 6 bytes
        name_case("name_cyrillic_es", f"\u0421ISP-{ORG}_D1001_V01_1_{d}_01_Q.TXT"),
        name_case(
            "name_fullwidth_digits",
            f"CISP-\uff14\uff11\uff12\uff11\uff10\uff10\uff10\uff10_D1001_V01_1_{d}_01_Q.TXT",
        ),
        replace(name_case("name_lowercase_ext", f"{valid}.txt"), distinct=True),
        # -- TXT content --------------------------------------------------------------------------------
        text_case("text_bom", 101, b"\xef\xbb\xbf" + good_d1001(101), "BOM_PRESENT"),
        text_case(
            "text_invalid_utf8",
            102,
            good_d1001(102).replace("示例".encode(), b"\xff\xfe"),
            "ENCODING_INVALID",
        ),
        text_case(
            "text_overlong_utf8", 103, good_d1001(103).replace(b"|01|", b"|0\xc0\xb1|"), "ENCODING_INVALID"
        ),
        text_case(
            "text_utf8_surrogate",
            104,
            good_d1001(104).replace("示例".encode(), b"\xed\xa0\x80"),
            "ENCODING_INVALID",
        ),
        text_case("text_gbk_encoded", 105, good_d1001(105).decode().encode("gbk"), "ENCODING_INVALID"),
        text_case("text_nul", 106, good_d1001(106).replace("示例".encode(), b"\0"), "NUL_BYTE"),
        text_case(
            "text_line_separator_2028",
            107,
            good_d1001(107).replace("示例".encode(), "\u2028".encode()),
            "CONTROL_CHAR",
        ),
        text_case(
            "text_control_soh", 110, good_d1001(110).replace("示例".encode(), b"\x01\x1b[2J"), "CONTROL_CHAR"
        ),
        text_case(
            "text_c1_control",
            111,
            good_d1001(111).replace("示例".encode(), "\u009b".encode()),
            "CONTROL_CHAR",
        ),
        text_case("text_overlong_line", 108, b"4" * (3 * 1024 * 1024 // 2) + b"\n", "FIELD_COUNT"),
        text_case(
            "text_mixed_endings",
            109,
            good_d1001(109, rows=2).replace(b"\n", b"\r\n", 1),
            "LINE_ENDINGS_MIXED",
        ),
        # pathological contents: checked within a small factor of valid rows (bench/adversarial_text.py)
        text_case("text_2mb_of_lines_1", 112, b"1\n" * (MAX_FILE_BYTES // 2 - 8), "FIELD_COUNT"),
        text_case("text_2mb_of_blank_lines", 113, b"\n" * (MAX_FILE_BYTES - 16), "FIELD_COUNT"),
        text_case(
            "text_2mb_of_invalid_utf8_lines", 114, b"\xff\n" * (MAX_FILE_BYTES // 2 - 8), "ENCODING_INVALID"
        ),
        # -- ZIPs (with their valid TXT) ------------------------------------------------------------
        *zip_cases(),
        # -- not regular files, oversize, growing ---------------------------------------------------
        Case("fs_symlink", "LINK.TXT", "NOT_REGULAR_FILE", symlink("LINK.TXT")),
        Case(
            "fs_dangling_symlink",
            d1001_name(date=day(301)),
            "NOT_REGULAR_FILE",
            symlink(d1001_name(date=day(301)), dangling=True),
        ),
        Case("fs_fifo", d1001_name(date=day(302)), "NOT_REGULAR_FILE", fifo(d1001_name(date=day(302)))),
        Case("fs_socket", "S.TXT", "NOT_REGULAR_FILE", unix_socket("S.TXT")),
        Case("fs_subdirectory", "SUBDIR", "NOT_REGULAR_FILE", subdir("SUBDIR", 303)),
        Case(
            "fs_hardlink_regular", d1001_name(date=day(304)), None, hardlink(d1001_name(date=day(304)), 304)
        ),
        Case(
            "fs_too_large_sparse",
            d1001_name(date=day(305)),
            "FILE_TOO_LARGE",
            sparse(d1001_name(date=day(305)), MAX_FILE_BYTES + 1),
        ),
        Case("fs_growing_in_place", d1001_name(date=day(306)), None, growing(d1001_name(date=day(306)), 306)),
        # -- mailboxes ---------------------------------------------------------------------------------
        Case(
            "mailbox_unknown_transfer_code",
            d1001_name(date=day(401)),
            "UNKNOWN_TRANSFER_CODE",
            write_raw(d1001_name(date=day(401)), good_d1001(401)),
            tc="TCNOBODY",
        ),
        Case(
            "mailbox_station_not_allowed",
            d1001_name(date=day(402), org="41220000"),
            "STATION_NOT_ALLOWED",
            write_raw(d1001_name(date=day(402), org="41220000"), good_d1001(402)),
            station="k6666",
            tc="TC41220000",
        ),
    ]
    ids = [c.id for c in table]
    assert len(ids) == len(set(ids))
    return table


CASES = cases()


# --- one daemon run for the whole table ---------------------------------------------------------------


@dataclass
class Run:
    gateway: Gateway
    events: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    log: bytes = b""
    responsive_seconds: float = -1.0


def receipt_path(outbox: Path, name: str, ok: bool) -> Path:
    """Spec 11: ``<stem>_OK.TXT`` / ``<stem>_BAD.TXT``, the stem cut (at a character) to 255 bytes."""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = stem.lstrip(".") or "_"
    suffix = "_OK.TXT" if ok else "_BAD.TXT"
    while len((stem + suffix).encode("utf-8", "surrogateescape")) > 255:
        stem = stem[:-1]
    return outbox / (stem + suffix)


def distinct_receipt_path(outbox: Path, name: str, ok: bool, file_id: str) -> Path:
    """The receipt of a name that could pass for another's: ``<stem>_<file_id>_BAD.TXT``."""
    stem = name.rsplit(".", 1)[0]
    return outbox / f"{stem}_{file_id}_{'OK' if ok else 'BAD'}.TXT"


def outcomes_of(gateway: Gateway) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for event in gateway.events():
        if event["event"] in ("forwarded", "rejected", "duplicate"):
            key = (event.get("station") or "", event.get("transfer_code") or "", event["name"])
            found.setdefault(key, []).append(event)
    return found


def expected_keys(case: Case) -> list[tuple[str, str, str]]:
    names = [case.history_name] + ([case.partner] if case.partner else [])
    return [(case.station, case.tc, n) for n in names]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("hostile")
    gateway = Gateway(root=root, config_path=root / "gateway.yaml")
    gateway.write_config(limits={"max_file_bytes": MAX_FILE_BYTES}, pair_timeout_seconds=20)
    scratch = root / "scratch"
    scratch.mkdir()
    for case in CASES:  # mailboxes exist before the daemon starts
        gateway.inbox(case.station, case.tc)
    gateway.start()
    try:
        for case in CASES:
            case.make(gateway.inbox(case.station, case.tc), scratch)
        pending = [k for c in CASES for k in expected_keys(c)]

        def all_done() -> bool:
            done = outcomes_of(gateway)
            return all(k in done for k in pending)

        with contextlib.suppress(AssertionError):  # the per-case tests say which ones are missing
            wait_for(all_done, timeout=30, what="every hostile case to reach an outcome")
        for thread, _ in GROWING.values():
            thread.join(timeout=10)
        result = Run(gateway, outcomes_of(gateway))
        # responsiveness: a plain valid file after the batch
        name = d1001_name(date=day(3))
        started = time.monotonic()
        drop(gateway.inbox(), name, good_d1001(3))
        try:
            wait_for(lambda: ("k1237", TC, name) in outcomes_of(gateway), timeout=10, what="the valid file")
            result.responsive_seconds = time.monotonic() - started
        except AssertionError:
            result.responsive_seconds = -1.0
        result.events = outcomes_of(gateway)
        time.sleep(0.5)
        result.log = (root / "daemon.log").read_bytes()
        yield result
    finally:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.kill()


# --- per-case assertions --------------------------------------------------------------------------------


def quarantine_reasons(gateway: Gateway, station: str) -> dict[str, dict[str, Any]]:
    root = gateway.spool / station / ".gateway" / "quarantine"
    found: dict[str, dict[str, Any]] = {}
    for path in root.rglob("*.reason.json") if root.is_dir() else []:
        found[path.name.removesuffix(".reason.json")] = json.loads(path.read_text(encoding="utf-8"))
    return found


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(run: Run, case: Case) -> None:
    gateway = run.gateway
    key = (case.station, case.tc, case.history_name)
    assert key in run.events, f"no outcome for {case.name!r}; outcomes: {sorted(run.events)[:5]}..."
    (event,) = run.events[key]
    codes = [f["code"] for f in event.get("findings") or []]
    if case.code is None:
        assert event["event"] == "forwarded", (event["event"], codes)
    else:
        assert event["event"] == "rejected", (event["event"], codes)
        assert case.code in codes, codes
        reasons = quarantine_reasons(gateway, case.station)
        assert event["file_id"] in reasons, f"no {event['file_id']}.reason.json in quarantine"
        assert case.code in json.dumps(reasons[event["file_id"]])
    if case.partner:
        (partner,) = run.events[(case.station, case.tc, case.partner)]
        assert partner["event"] == ("forwarded" if case.code is None else "rejected")
    if case.receipt:
        ok = case.code is None
        path = receipt_path(gateway.outbox(case.station, case.tc), case.history_name, ok)
        if case.distinct:
            path = distinct_receipt_path(path.parent, case.history_name, ok, event["file_id"])
        assert path.exists(), f"no receipt {path.name!r} in {sorted(listing(path.parent))[:3]}..."
        head = path.read_bytes().decode("utf-8").splitlines()[0].split("|")
        assert head[1] == ("OK" if ok else "BAD")
        assert head[5] == event["file_id"] or case.partner  # a pair's TXT and ZIP share the stem
    # nothing stuck
    inbox = gateway.spool / case.station / case.tc / "in"
    assert case.history_name not in listing(inbox)
    if case.name in GROWING:
        assert (gateway.core() / case.history_name).read_bytes() == GROWING[case.name][1]


def test_nothing_left_in_inboxes_or_work(run: Run) -> None:
    leftovers = []
    for station in STATIONS:
        for inbox in (run.gateway.spool / station).glob("*/in"):
            leftovers += listing(inbox)
        leftovers += [
            str(p) for p in (run.gateway.spool / station / ".gateway" / "work").rglob("*") if not p.is_dir()
        ]
    assert leftovers == []


def test_symlink_target_was_not_touched(run: Run) -> None:
    assert (run.gateway.root / "scratch" / "secret.txt").read_text() == "do not read"


def test_daemon_stays_responsive_after_the_batch(run: Run) -> None:
    assert run.gateway.process is not None and run.gateway.process.poll() is None
    assert 0 <= run.responsive_seconds < 10, "a valid file after the hostile batch was not forwarded"


def test_log_has_no_traceback_or_failed_file(run: Run) -> None:
    """A file.failed (an exception while deciding a file; it stays in work/) is a crash in all but name."""
    text = run.log.decode(errors="replace")
    failed = [line[:600] for line in text.splitlines() if "Traceback" in line or '"file.failed"' in line]
    assert failed == [], failed


FORBIDDEN = {chr(c) for c in range(0x20) if c != 0x0A} | {"\x7f"} | {chr(c) for c in range(0x80, 0xA0)}
FORBIDDEN |= {"\u2028", "\u2029", "\u202e", "\u200b"}


def test_log_has_no_raw_control_characters(run: Run) -> None:
    text = run.log.decode("utf-8", errors="replace")
    bad = [
        (n, repr(line[:200]))
        for n, line in enumerate(text.split("\n"), 1)
        if any(c in FORBIDDEN for c in line)
    ]
    assert bad == [], bad[:5]
    assert "\ufffd" not in text, "the log is not valid UTF-8 (a raw undecodable name byte?)"


# --- round two (issue 19): receipts that lie, senders that keep write access, special files in out/ ---


@dataclass
class Run2:
    gateway: Gateway
    scratch: Path
    originals: dict[str, bytes] = field(default_factory=dict)  # name -> the bytes as validated
    specials: dict[str, str] = field(default_factory=dict)  # stem -> what sits at <stem>_OK.TXT in out/
    handles: dict[str, int] = field(default_factory=dict)  # name -> a writable fd the sender kept
    maps: dict[str, mmap.mmap] = field(default_factory=dict)  # name -> a shared writable mapping kept


def _other_institution(data: bytes) -> bytes:
    """The same length, another institution's row: what a sender could make the core hold."""
    return data.replace(ORG.encode(), b"41220000")


SPECIAL_MAKERS: dict[str, Callable[[Path, Path], None]] = {
    "fifo": lambda path, scratch: os.mkfifo(path),
    "symlink": lambda path, scratch: path.symlink_to(scratch / "sender-target.txt"),
    "dangling": lambda path, scratch: path.symlink_to(scratch / "nowhere"),
    "directory": lambda path, scratch: path.mkdir(),
    "socket": lambda path, scratch: unix_socket(path.name)(path.parent, scratch),
}


@pytest.fixture(scope="module")
def run2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run2]:
    root = tmp_path_factory.mktemp("hostile2")
    gateway = Gateway(root=root, config_path=root / "gateway.yaml")
    routes = {
        "core-test": {"type": "directory", "path": str(root / "core" / "k1237"), "hand_off": "link"},
        "core-prod": {"type": "directory", "path": str(root / "core" / "k6666")},
    }
    gateway.write_config(routes=routes, pair_timeout_seconds=3)
    scratch = root / "scratch"
    scratch.mkdir()
    (scratch / "sender-target.txt").write_text("the sender's own file\n")
    inbox, outbox = gateway.inbox(), gateway.outbox()
    outbox.mkdir(parents=True, exist_ok=True)
    result = Run2(gateway, scratch)
    for n, (what, make) in enumerate(SPECIAL_MAKERS.items()):
        stem = d1001_name(date=day(500 + n)).removesuffix(".TXT")
        make(outbox / f"{stem}_OK.TXT", scratch)
        result.specials[stem] = what
    gateway.start()
    try:
        for n, stem in enumerate(result.specials):
            drop(inbox, f"{stem}.TXT", good_d1001(500 + n))
        # a file of the sender's own, hard-linked into in/
        linked = d1001_name(date=day(510))
        outside = scratch / "own-file.TXT"
        outside.write_bytes(good_d1001(510))
        os.link(outside, inbox / linked)
        result.originals[linked] = good_d1001(510)
        # written in place and renamed in, the handle kept: one valid, one rejected (a BOM)
        for n, data in ((511, good_d1001(511)), (512, b"\xef\xbb\xbf" + good_d1001(512))):
            name = d1001_name(date=day(n))
            part = inbox / f".{name}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, data)
            part.rename(inbox / name)
            result.handles[name] = fd
            result.originals[name] = data
        # a shared writable mapping kept, its descriptor closed before the rename
        mapped = d1001_name(date=day(513))
        part = inbox / f".{mapped}.part"
        part.write_bytes(good_d1001(513))
        fd = os.open(part, os.O_RDWR)
        result.maps[mapped] = mmap.mmap(fd, len(good_d1001(513)))
        os.close(fd)
        part.rename(inbox / mapped)
        result.originals[mapped] = good_d1001(513)
        # a valid file first; then names that would have taken or shadowed its receipt
        valid = d1001_name(date=day(520))
        drop(inbox, valid, good_d1001(520))
        wait_for(lambda: valid in gateway.outcomes(), timeout=20, what="the valid file")
        stem = valid.removesuffix(".TXT")
        for liar in (f"{valid} ", valid.lower(), f"{stem}.txt", f"{stem}.ZIP", f"{stem}.TXT.", f"{valid}\t"):
            drop(inbox, liar, good_d1001(520))
        expected = [*(f"{s}.TXT" for s in result.specials), *result.originals, valid]
        wait_for(
            lambda: (
                all(n in gateway.outcomes() for n in expected)
                and len(gateway.outcomes()) >= len(expected) + 6
            ),
            timeout=30,
            what="every round-two file to reach an outcome",
        )
        # now the sender writes through what it kept
        outside.write_bytes(_other_institution(outside.read_bytes()))
        for name, fd in result.handles.items():
            os.pwrite(fd, _other_institution(result.originals[name]), 0)
        for name, mapping in result.maps.items():
            mapping[:] = _other_institution(result.originals[name])
            mapping.flush()
        yield result
    finally:
        for fd in result.handles.values():
            os.close(fd)
        for mapping in result.maps.values():
            mapping.close()
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.kill()


def _kept_copy(gateway: Gateway, state: str, name: str) -> Path:
    (path,) = [p for p in state_files(gateway, state) if p.name.endswith("." + name)]
    return path


def test_a_forwarded_receipt_is_never_replaced_or_shadowed_by_another_name(run2: Run2) -> None:
    gateway, outbox = run2.gateway, run2.gateway.outbox()
    valid = d1001_name(date=day(520))
    stem = valid.removesuffix(".TXT")
    assert gateway.outcomes()[valid] == ["forwarded"]
    ok = outbox / f"{stem}_OK.TXT"
    assert receipt_head(ok)[:2] == [valid, "OK"]
    beside = [
        p.name for p in outbox.iterdir() if p.name.lower() in (f"{stem}_bad.txt".lower(), ok.name.lower())
    ]
    assert beside == [ok.name], beside
    rejected = [e for e in gateway.events() if e["event"] == "rejected" and e["name"] != valid]
    liars = [e for e in rejected if e["name"].upper().startswith(stem)]
    assert len(liars) == 6, [e["name"] for e in liars]
    heads = [receipt_head(p) for p in outbox.iterdir() if p.is_file() and not p.is_symlink()]
    for event in liars:  # each has its own truthful receipt
        assert [h[1] for h in heads if h[5] == event["file_id"]] == ["BAD"], event["name"]


@pytest.mark.parametrize("what", list(SPECIAL_MAKERS))
def test_a_special_file_at_a_receipts_name_neither_blocks_nor_hides_the_receipt(
    run2: Run2, what: str
) -> None:
    gateway, outbox = run2.gateway, run2.gateway.outbox()
    (stem,) = [s for s, w in run2.specials.items() if w == what]
    (event,) = gateway.outcome_events(f"{stem}.TXT")
    assert event["event"] == "forwarded"
    entry = outbox / f"{stem}_OK.TXT"
    assert entry.is_symlink() or not stat.S_ISREG(entry.lstat().st_mode), "the sender's entry was replaced"
    receipt = outbox / f"{stem}_{event['file_id']}_OK.TXT"
    assert receipt_head(receipt)[:2] == [f"{stem}.TXT", "OK"]
    assert (run2.scratch / "sender-target.txt").read_text() == "the sender's own file\n"
    assert '"receipt.distinct_name"' in gateway.log()


def test_a_fifo_in_out_does_not_stop_the_daemon(run2: Run2) -> None:
    """The FIFO case blocked the receipt step for good and then SIGTERM: the daemon must stop cleanly."""
    assert state_files(run2.gateway, "work") == []
    name = d1001_name(date=day(530))
    drop(run2.gateway.inbox(), name, good_d1001(530))
    wait_for(lambda: name in run2.gateway.outcomes(), timeout=10, what="a file after the FIFO")


@pytest.mark.parametrize(
    "name",
    [d1001_name(date=day(n)) for n in (510, 511, 512, 513)],
    ids=["hardlink", "kept", "kept-rejected", "mmap"],
)
def test_what_the_gateway_keeps_or_forwards_cannot_be_changed_by_the_sender(run2: Run2, name: str) -> None:
    gateway = run2.gateway
    original = run2.originals[name]
    (event,) = gateway.outcome_events(name)
    if event["event"] == "forwarded":
        assert (gateway.core() / name).read_bytes() == original, "the core's file was changed"
        kept = _kept_copy(gateway, "archive", name)
    else:
        kept = _kept_copy(gateway, "quarantine", name)
    assert kept.read_bytes() == original, f"the {kept.parent.parent.parent.name} copy was changed"
    assert kept.stat().st_nlink <= 2  # its own inode (and the core's link in link mode)


def test_round_two_daemon_stops_on_sigterm(run2: Run2) -> None:
    assert run2.gateway.process is not None
    assert run2.gateway.stop() == 0


# --- round two: an HTTP core whose answer is lost, a core that redirects --------------------------------


def _kinds(gateway: Gateway, name: str) -> list[str]:
    return [e["event"] for e in gateway.events() if e["name"] == name]


@pytest.mark.parametrize("lost", ["slow", "cut", "killed"])
def test_a_core_that_holds_the_file_but_whose_answer_was_lost_gets_it_forwarded(
    gateway: Gateway, lost: str
) -> None:
    """The core stored the file, its 201 never arrived whole (past the timeout, the connection closed
    mid-body, the daemon killed while the core held its answer back): the repeat with the same file id
    was answered 409 and the file rejected CORE_REJECTED. By the contract the repeat is a success."""
    core = Core()
    try:
        use_http_core(gateway, core.url, timeout_seconds=0.5 if lost == "slow" else 5)
        stored = {"code": "STORED", "message": "stored " * 50}
        first = {"slow": Reply(201, delay=10), "cut": Reply(201, stored, partial=True)}.get(lost)
        core.script(first or Reply(201, delay=30))
        launch(gateway)
        name = d1001_name(date=day(600))
        drop(gateway.inbox(), name, good_d1001(600))
        if lost == "killed":
            wait_for(lambda: core.held, timeout=20, what="the core to hold the file")
            gateway.kill()
            launch(gateway)
        wait_for(lambda: name in gateway.outcomes(), timeout=30, what="the outcome")
        assert gateway.outcomes()[name] == ["forwarded"], _kinds(gateway, name)
        assert len(core.held) == 1 and len({r.path for r in core.requests}) == 1
        assert gateway.stop() == 0
    finally:
        core.stop()


def test_a_bare_409_for_a_repeat_is_never_read_as_a_rejection(gateway: Gateway) -> None:
    """A core that breaks the contract (a bare 409 for a file id it holds): retried, never rejected."""
    core = Core(contract=False)
    try:
        use_http_core(gateway, core.url, timeout_seconds=0.5)
        core.script(Reply(201, delay=10))
        launch(gateway)
        name = d1001_name(date=day(601))
        drop(gateway.inbox(), name, good_d1001(601))
        wait_for(lambda: len(core.requests) >= 4, timeout=30, what="repeats")
        assert name not in gateway.outcomes(), gateway.outcomes().get(name)
        assert "deferred" in _kinds(gateway, name)
        assert "TASK_NOT_IN_PREPARATION" in gateway.log()
        assert gateway.stop() == 0
    finally:
        core.stop()


def test_a_core_that_redirects_is_a_configuration_error_not_an_endless_loop(gateway: Gateway) -> None:
    """An HTTP 301: the file was deferred forever and uploaded again every ~2 s."""
    core = Core()
    try:
        use_http_core(gateway, core.url)
        core.script(then=Reply(301, headers={"Location": "http://elsewhere/files"}))
        launch(gateway)
        name = d1001_name(date=day(602))
        drop(gateway.inbox(), name, good_d1001(602))
        wait_for(lambda: '"forward.route_misconfigured"' in gateway.log(), timeout=30, what="the alert")
        time.sleep(1.5)
        assert len(core.requests) == MISCONFIGURED_TRIES
        line = next(x for x in gateway.log().splitlines() if '"forward.route_misconfigured"' in x)
        assert json.loads(line)["level"] == "error" and "http://elsewhere/files" in line
        assert name not in gateway.outcomes() and _kinds(gateway, name)[-1] == "deferred"
        assert gateway.stop() == 0
    finally:
        core.stop()


# --- round two: the ledger missing or damaged while the daemon was stopped -------------------------------

LEDGER_EXIT = 65


def _serve_one_file(gateway: Gateway) -> str:
    launch(gateway)
    name = d1001_name(date=day(700))
    drop(gateway.inbox(), name, good_d1001(700))
    wait_for(lambda: name in gateway.outcomes(), timeout=20, what="the first file")
    assert gateway.stop() == 0
    return name


def _start_refused(gateway: Gateway) -> tuple[int, str]:
    result = gateway.command("run", "-c", str(gateway.config_path), timeout=60)
    return result.returncode, result.stderr


@pytest.mark.parametrize("harm", ["deleted", "emptied", "header", "garbage"])
def test_a_missing_or_damaged_ledger_refuses_to_start_with_its_own_exit_code(
    gateway: Gateway, harm: str
) -> None:
    """Deleted: a new empty ledger was made silently and a resend of a forwarded file forwarded again.
    A damaged header: a Python traceback and exit 1, restarted by systemd every 5 s for ever."""
    name = _serve_one_file(gateway)
    ledger = gateway.spool / ".gateway-ledger.sqlite"
    for extra in (ledger.with_name(ledger.name + "-wal"), ledger.with_name(ledger.name + "-shm")):
        extra.unlink(missing_ok=True)
    if harm == "deleted":
        ledger.unlink()
    elif harm == "emptied":
        ledger.write_bytes(b"")
    elif harm == "header":
        with ledger.open("r+b") as db:
            db.write(b"not a database!!")
    else:
        ledger.write_bytes(os.urandom(8192))
    code, stderr = _start_refused(gateway)
    assert code == LEDGER_EXIT, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
    refused = [x for x in lines if x.get("event") == "ledger.unusable"]
    assert len(refused) == 1 and refused[0]["level"] == "error", stderr[-2000:]
    assert "restore" in refused[0]["error"]
    if harm == "deleted":
        assert not ledger.exists(), "a new empty ledger was made"
    assert gateway.outcomes()[name] == ["forwarded"]  # nothing else happened: not forwarded again


def test_a_new_spool_gets_a_new_ledger_and_says_so(gateway: Gateway) -> None:
    launch(gateway)
    assert '"ledger.created"' in gateway.log()
    assert gateway.stop() == 0
