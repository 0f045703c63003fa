"""Feedback path: the core's OK/BAD files, handed to the ``out/`` of the transfer code they belong to.

A route may name a ``feedback`` directory where the core drops the platform's feedback on the files it was
sent, named like the gateway's own receipts: ``<stem>_OK.TXT`` / ``<stem>_BAD.TXT``, where ``<stem>`` is a
report file name without its extension (``CISP-41210000_D1001_V01_1_20240115_01_Q``). The institution in
the stem picks the mailbox:

- the candidates are the registered transfer codes of that institution on the route's stations (and, when
  the route is given, only codes whose files that route carries);
- one candidate: the file is delivered into that code's ``out/``;
- several (an institution with more than one code on the station): ``sender`` (the code the gateway
  forwarded that report from, when the caller can tell) narrows them to one; otherwise the file goes to
  every candidate. They are all the same institution's mailboxes, so nothing crosses institutions (spec
  14), and a copy too many is better than the institution never seeing the platform's verdict;
- none, or a name that is not a feedback name: quarantined in
  ``<station>/.gateway/quarantine/<yyyymmdd>/_feedback/<file_id>.<NAME>`` beside a
  ``<file_id>.reason.json`` saying why (station: the route's first).

Delivery is a copy (temp name in ``out/``, fsync, rename, fsync ``out/``), then the history events
(``record``), then the source is removed and its directory fsynced. A copy rather than a rename because
the feedback directory may be on another filesystem (it is the core's), a file may go to several mailboxes,
and the copy is the gateway's own file with the receipts' mode (0644) rather than whatever owner and mode
the core gave it. Killed anywhere, the next scan finds the source again: a mailbox that already holds the
same bytes under the name counts as delivered (``present``), so nothing is written twice.

Same name, other content already in ``out/``: replaced atomically (rename over it), never silently: the
event says what was replaced (the gateway's own receipt, or an earlier feedback) and its sha256. The
platform's feedback is the later and final word on the file, and an institution's client reads ``out/`` by
name. A directory in the way is not replaced: the feedback is quarantined (``FEEDBACK_OUTBOX_BLOCKED``).
An OK feedback never removes a ``_BAD`` receipt of the same stem, nor the other way round (as receipts).

Blocking functions throughout: the service runs them in a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from codes.registry import TransferCode
from gateway.config import FEEDBACK_DIR
from gateway.pipeline.receipts import OWN_RECEIPT, receipt_lock
from gateway.store.history import HistoryEvent
from gateway.text import visible
from spool.entries import NotRegularFileError, is_temp_name, open_regular
from spool.fsio import fsync_dir, makedirs_durable, publish, rename_noreplace, temp_name, write_atomic
from spool.ids import new_file_id
from spool.layout import SpoolLayout, State, StationLayout
from validators import findings
from validators.findings import Finding
from validators.name_grammar import ReportName, parse_name

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = structlog.get_logger("gateway.feedback")

"""The quarantine sub-folder of a day (where a transfer code's folder would be) for feedback files."""

_NAME = re.compile(r"(?P<stem>.+)_(?P<verdict>OK|BAD)\.TXT")
_CHUNK = 1024 * 1024
_HEAD = 4096
# Line 1 of a receipt the gateway wrote (receipts.render): name|OK|records|findings|time|id|status

Reason = Literal["FEEDBACK_NAME_INVALID", "FEEDBACK_NO_MAILBOX", "FEEDBACK_OUTBOX_BLOCKED"]
Action = Literal["written", "present", "replaced"]
Outcome = Literal["delivered", "quarantined", "skipped"]


@dataclass(frozen=True, slots=True)
class FeedbackName:
    """A feedback file name: the report it is about and the verdict."""

    name: str
    stem: str
    ok: bool
    report: ReportName  # the stem parsed as ``<stem>.TXT``


def parse_feedback_name(name: str) -> FeedbackName | None:
    """``<stem>_OK.TXT`` / ``<stem>_BAD.TXT``, the stem a valid report name's (spec 3); else None."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    report = parse_name(match["stem"] + ".TXT")
    if report is None:
        return None
    return FeedbackName(name=name, stem=match["stem"], ok=match["verdict"] == "OK", report=report)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One copy in one mailbox's ``out/``."""

    station: str
    transfer_code: str
    path: Path
    action: Action  # written: new; present: already there, same bytes; replaced: other bytes were there
    replaced_sha256: str | None = None
    replaced_own_receipt: bool | None = None  # what was replaced: the gateway's receipt, or not


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What became of one feedback file; ``events()`` are what the history records of it."""

    outcome: Outcome  # skipped: gone or still changing; nothing done, the next scan sees it again
    source: Path
    name: str
    file_id: str | None = None  # None when skipped
    feedback: FeedbackName | None = None
    size: int | None = None
    sha256: str | None = None
    route: str | None = None
    deliveries: tuple[Delivery, ...] = ()
    quarantine_station: str | None = None
    quarantined: Path | None = None
    reason: Reason | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # quarantine: what was looked for
    message: str = ""  # zh / en, for the log when skipped or quarantined

    def events(self) -> list[HistoryEvent]:
        """One ``feedback`` event a mailbox delivered to, or one for the quarantine; none when skipped."""
        if self.outcome == "skipped" or self.file_id is None:
            return []
        report = self.feedback.report if self.feedback else None
        common: dict[str, Any] = {
            "event": "feedback",
            "file_id": self.file_id,
            "institution": report.org if report else None,
            "table": report.table if report else None,
            "date": report.date if report else None,
            "batch": f"{report.batch:02d}" if report else None,
            "mode": report.mode if report else None,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
        }
        base = {"verdict": _verdict(self.feedback), "route": self.route, "source": str(self.source)}
        if self.outcome == "quarantined":
            detail = {**base, "reason": self.reason, "quarantined": str(self.quarantined), **self.detail}
            return [
                HistoryEvent(**common, station=self.quarantine_station, message=self.message, detail=detail)
            ]
        events = []
        for d in self.deliveries:
            others = [f"{o.station}/{o.transfer_code}" for o in self.deliveries if o is not d]
            detail = {**base, "outbox": str(d.path.parent), "action": d.action}
            if d.replaced_sha256 is not None:
                detail["replaced_sha256"] = d.replaced_sha256
                detail["replaced"] = "gateway_receipt" if d.replaced_own_receipt else "other"
            if others:
                detail["also_delivered_to"] = others
            events.append(
                HistoryEvent(
                    **common,
                    station=d.station,
                    transfer_code=d.transfer_code,
                    message=_delivered_message(self.feedback, d, len(self.deliveries)),
                    detail=detail,
                )
            )
        return events


Record = Callable[[Sequence[HistoryEvent]], None]
Sender = Callable[[str], tuple[str, str] | None]


def scan_feedback_dir(path: Path, *, quiet_seconds: float = 0.0, now: float | None = None) -> list[Path]:
    """Regular files in ``path`` to deliver, sorted by name; a missing directory is empty.

    Left out: writers' temporary names (spec 2: ``.*``, ``*.tmp``, ``*.part``), anything that is not a
    regular file (never followed nor opened: not ours to judge, it stays where the core put it), and files
    changed (mtime or ctime, which no copy tool can set back) less than ``quiet_seconds`` ago, for a core
    that writes in place.
    """
    now = time.time() if now is None else now
    found: list[Path] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if is_temp_name(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                if quiet_seconds > 0 and now - max(info.st_mtime, info.st_ctime) < quiet_seconds:
                    continue
                found.append(Path(entry.path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found.sort(key=lambda p: p.name)
    return found


def deliver_feedback(
    path: Path,
    *,
    stations: str | Sequence[str],
    registry: Mapping[str, TransferCode],
    layout: SpoolLayout,
    now: datetime,
    route: str | None = None,
    route_of: Callable[[str, TransferCode], str] | None = None,
    sender: Sender | None = None,
    record: Record | None = None,
) -> FeedbackResult:
    """Deliver one feedback file (see the module docstring), or quarantine it; blocking.

    ``stations``: the stations of the route whose feedback directory this is (the first one holds the
    quarantine). ``route`` with ``route_of`` (``GatewayConfig.route_for``) keeps only the codes whose
    files that route carries. ``sender(stem)`` may name the (station, transfer code) the report was sent
    from, to pick one of several candidates. ``record`` gets the history events once the copies (or the
    reason file) are durable and before the source is removed: if it raises, the source stays and the
    next scan does it again. ``now`` (aware, the gateway's zone) dates the file_id and the quarantine day.
    OSErrors of the spool or the feedback directory are raised: nothing half-done is left visible, the
    source stays, and the next scan tries again.
    """
    station_list = [stations] if isinstance(stations, str) else list(stations)
    if not station_list:
        raise ValueError("deliver_feedback needs the route's stations")
    if (route is None) != (route_of is None):
        raise ValueError("route and route_of go together")
    name = path.name
    try:
        fd = open_regular(path)
    except (FileNotFoundError, NotRegularFileError) as exc:
        return FeedbackResult("skipped", path, name, route=route, message=f"not taken: {exc}")
    try:
        before = os.fstat(fd)
        size, sha256 = _hash_fd(fd)
        file_id = new_file_id(now)
        known = FeedbackResult("skipped", path, name, file_id, None, size, sha256, route)
        parsed = parse_feedback_name(name)
        if parsed is None:
            return _quarantine(
                known, fd, layout.station(station_list[0]), now, record, "FEEDBACK_NAME_INVALID", {}
            )
        known = _with(known, feedback=parsed)
        wanted = _candidates(parsed, station_list, registry, route, route_of)
        if len(wanted) > 1 and sender is not None:
            sent_from = sender(parsed.stem)
            if sent_from in wanted:
                wanted = [sent_from]
        looked_for = {"institution": parsed.report.org, "stations": station_list}
        if not wanted:
            return _quarantine(
                known, fd, layout.station(station_list[0]), now, record, "FEEDBACK_NO_MAILBOX", looked_for
            )
        finals = [(st, tc, layout.station(st).outbox(tc) / name) for st, tc in wanted]
        blocked = [str(final) for *_, final in finals if final.is_dir() and not final.is_symlink()]
        if blocked:
            return _quarantine(
                known,
                fd,
                layout.station(station_list[0]),
                now,
                record,
                "FEEDBACK_OUTBOX_BLOCKED",
                {"blocked_by": blocked},
            )
        deliveries = []
        for st, tc, final in finals:
            delivery = _deliver_one(fd, before, size, sha256, st, tc, final)
            if delivery is None:
                return _with(
                    known, file_id=None, message="changed while being delivered; taken at the next scan"
                )
            deliveries.append(delivery)
        result = _with(known, outcome="delivered", deliveries=tuple(deliveries))
        if record is not None:
            record(result.events())
        _remove_source(path)
        return result
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class FeedbackSource:
    """A route's feedback directory and the stations whose files the route carries."""

    route: str
    path: Path
    stations: tuple[str, ...]


def feedback_sources(config: GatewayConfig) -> list[FeedbackSource]:
    """Every route with a ``feedback`` directory, with its stations (the station's route, or a code's)."""
    found = []
    for name, route in sorted(config.routes.items()):
        if route.feedback is None:
            continue
        stations = {st for st, settings in config.stations.items() if settings.route == name}
        stations |= {
            st for code in config.transfer_codes.values() if code.route == name for st in code.stations
        }
        if stations:
            found.append(FeedbackSource(name, route.feedback, tuple(sorted(stations))))
    return found


def deliver_all(
    source: FeedbackSource,
    *,
    config: GatewayConfig,
    layout: SpoolLayout,
    now: Callable[[], datetime],
    record: Record | None = None,
    sender: Sender | None = None,
    quiet_seconds: float | None = None,
) -> list[FeedbackResult]:
    """Scan one feedback directory and deliver what is there; one file's error never stops the others.

    ``quiet_seconds`` defaults to the config's ``settle_seconds``. Returns the results of the files
    handled; a file that raised is logged and left for the next scan.
    """
    quiet = config.settle_seconds if quiet_seconds is None else quiet_seconds
    results = []
    for path in scan_feedback_dir(source.path, quiet_seconds=quiet):
        try:
            result = deliver_feedback(
                path,
                stations=source.stations,
                registry=config.transfer_codes,
                layout=layout,
                now=now(),
                route=source.route,
                route_of=config.route_for,
                sender=sender,
                record=record,
            )
        except OSError as exc:
            log.warning(
                "feedback.failed",
                name=visible(path.name),
                route=source.route,
                error=str(exc),
                note="left in the feedback directory; tried again at the next scan",
            )
            continue
        _log(result)
        results.append(result)
    return results


def _log(result: FeedbackResult) -> None:
    fields: dict[str, Any] = {"name": visible(result.name), "route": result.route, "file_id": result.file_id}
    if result.outcome == "delivered":
        log.info(
            "feedback.delivered",
            **fields,
            to=[f"{d.station}/{d.transfer_code}:{d.action}" for d in result.deliveries],
        )
    elif result.outcome == "quarantined":
        log.warning("feedback.quarantined", **fields, reason=result.reason, path=str(result.quarantined))
    else:
        log.info("feedback.skipped", **fields, why=result.message)


def _candidates(
    parsed: FeedbackName,
    stations: Sequence[str],
    registry: Mapping[str, TransferCode],
    route: str | None,
    route_of: Callable[[str, TransferCode], str] | None,
) -> list[tuple[str, str]]:
    """(station, transfer code) of the named institution's mailboxes on these stations (and route)."""
    found = []
    for st in stations:
        for tc, code in sorted(registry.items()):
            if code.institution != parsed.report.org or st not in code.stations:
                continue
            if route is not None and route_of is not None and route_of(st, code) != route:
                continue
            found.append((st, tc))
    return found


def _deliver_one(
    fd: int, before: os.stat_result, size: int, sha256: str, station: str, tc: str, final: Path
) -> Delivery | None:
    """Put the bytes at ``final`` unless they are there already; None if the source changed meanwhile."""
    makedirs_durable(final.parent)
    with receipt_lock(final.parent, final.name):  # the gateway's receipt of the stem waits meanwhile
        return _deliver_locked(fd, before, size, sha256, station, tc, final)


def _deliver_locked(
    fd: int, before: os.stat_result, size: int, sha256: str, station: str, tc: str, final: Path
) -> Delivery | None:
    for _attempt in range(2):
        existing = _existing(final)
        if existing is not None and existing[0] == size and existing[1] == sha256:
            fsync_dir(final.parent)  # the earlier attempt may have died before its directory fsync
            return Delivery(station, tc, final, "present")
        try:
            if not _copy_verified(fd, before, size, sha256, final, replace=existing is not None):
                return None
        except FileExistsError:
            continue  # appeared meanwhile (the gateway's own receipt writer): look again
        if existing is None:
            return Delivery(station, tc, final, "written")
        return Delivery(station, tc, final, "replaced", existing[1], existing[2])
    raise OSError(errno.EEXIST, f"{final} keeps changing while the feedback is delivered")


def _existing(final: Path) -> tuple[int, str, bool] | None:
    """(size, sha256, is the gateway's own receipt) of what is at ``final``; None if nothing."""
    try:
        fd = open_regular(final)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        return (-1, "", False)  # a symlink or such in out/: replaced, never followed
    try:
        head = os.pread(fd, _HEAD, 0)
        size, sha256 = _hash_fd(fd)
    finally:
        os.close(fd)
    return size, sha256, OWN_RECEIPT.match(head) is not None


def _copy_verified(
    fd: int, before: os.stat_result, size: int, sha256: str, final: Path, *, replace: bool
) -> bool:
    """Copy the source into ``final`` via a temp name; False (nothing left) if the bytes differ now."""
    tmp = temp_name(final)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            copied, digest = _copy_fd(fd, out)
            os.fsync(out)
        finally:
            os.close(out)
        if copied != size or digest != sha256 or _changed(before, os.fstat(fd)):
            tmp.unlink()
            return False
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, final, replace=replace)
    fsync_dir(final.parent)
    return True


def _quarantine(
    known: FeedbackResult,
    fd: int,
    station: StationLayout,
    now: datetime,
    record: Record | None,
    reason: Reason,
    looked_for: dict[str, Any],
) -> FeedbackResult:
    """Reason file, history event, then the move (rename, or copy and remove across filesystems)."""
    file_id = known.file_id or new_file_id(now)
    day = now.strftime("%Y%m%d")
    target = station.state_path(State.QUARANTINE, FEEDBACK_DIR, file_id, known.name, day)
    makedirs_durable(target.parent)
    result = _with(
        known,
        outcome="quarantined",
        file_id=file_id,
        quarantine_station=station.name,
        quarantined=target,
        reason=reason,
        detail=looked_for,
        message=_quarantine_message(reason, known, looked_for),
    )
    write_atomic(
        station.reason_path(FEEDBACK_DIR, file_id, day),
        json.dumps(
            {
                "file_id": file_id,
                "kind": "feedback",
                "name": known.name,
                "source": str(known.source),
                "route": known.route,
                "station": station.name,
                "reason": reason,
                "finding": quarantine_finding(reason, known, looked_for).to_dict(),
                "message": result.message,
                "size": known.size,
                "sha256": known.sha256,
                **looked_for,
            },
            ensure_ascii=False,
            indent=2,
        ).encode("utf-8", "backslashreplace"),  # a lone surrogate (undecodable name) as its \u escape
    )
    if record is not None:
        record(result.events())
    _move_or_copy(known.source, fd, target)
    return result


def _move_or_copy(src: Path, fd: int, dst: Path) -> None:
    """Hand the source over to ``dst``: a rename on one filesystem, else a durable copy, then removal."""
    try:
        rename_noreplace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = temp_name(dst)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            try:
                _copy_fd(fd, out)
                os.fsync(out)
            finally:
                os.close(out)
            rename_noreplace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(dst.parent)
        _remove_source(src)
        return
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def _remove_source(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _hash_fd(fd: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return offset, digest.hexdigest()


def _copy_fd(src: int, dst: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(src, _CHUNK, offset):
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(chunk)
    return offset, digest.hexdigest()


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )


def _with(result: FeedbackResult, **changes: Any) -> FeedbackResult:
    return replace(result, **changes)


def _verdict(parsed: FeedbackName | None) -> str | None:
    if parsed is None:
        return None
    return "OK" if parsed.ok else "BAD"


def _delivered_message(parsed: FeedbackName | None, d: Delivery, count: int) -> str:
    verdict = _verdict(parsed) or "?"
    stem = visible(parsed.stem) if parsed else "?"
    if parsed is not None and parsed.ok:
        zh = f"报送平台对 {stem} 的回执（OK）已投递至 {d.transfer_code} 的 out/ 目录"
        en = f"The core's feedback (OK) on {stem} was delivered to out/ of {d.transfer_code}"
    else:
        zh = (
            f"报送平台对 {stem} 的回执（{verdict}）已投递至 {d.transfer_code} 的 out/ 目录，"
            "请按回执内容修改后以下一批次号重报"
        )
        en = (
            f"The core's feedback ({verdict}) on {stem} was delivered to out/ of {d.transfer_code}; "
            "fix what it lists and re-report with the next batch number"
        )
    if d.action == "present":
        zh += "（此前已投递）"
        en += " (it was already there from an earlier attempt)"
    elif d.action == "replaced":
        zh += "，替换了同名的网关回执" if d.replaced_own_receipt else "，替换了同名的旧文件"
        en += (
            ", replacing the gateway's own receipt of the same name"
            if d.replaced_own_receipt
            else ", replacing an earlier file of the same name"
        )
    if count > 1:
        zh += f"；该机构在本站点有 {count} 个传输编码，已分别投递"
        en += f"; the institution has {count} transfer codes on the station, each got a copy"
    return f"{zh} / {en}"


def quarantine_finding(reason: Reason, known: FeedbackResult, looked_for: Mapping[str, Any]) -> Finding:
    """Why a feedback file was quarantined, from the findings catalogue (zh/en message and hint)."""
    if reason == "FEEDBACK_NAME_INVALID":
        return findings.make(reason, name=visible(known.name))
    if reason == "FEEDBACK_NO_MAILBOX":
        stations = ", ".join(looked_for.get("stations", ()))
        return findings.make(reason, institution=looked_for.get("institution"), stations=stations)
    return findings.make(reason, blocked=", ".join(looked_for.get("blocked_by", ())))


def _quarantine_message(reason: Reason, known: FeedbackResult, looked_for: Mapping[str, Any]) -> str:
    found = quarantine_finding(reason, known, looked_for)
    return f"{found.message_zh}；{found.hint_zh} / {found.message_en}: {found.hint_en}"
