"""The directory core: each file appears there under its own name, complete, and only once.

Copy to a hidden temp name, fsync (in a burst, a small file's together with the others in flight),
rename without replacing, fsync the directory. The name and sha256 make it idempotent: if the core
already holds the name with the same content, an earlier attempt got there (perhaps just before a
crash) and this one is done; other content under the name is a rejection.
Failures of the core directory (missing, not a directory, not writable, full, I/O errors) are
``Transient``: the file stays deferred until the operator fixes the core, never rejected for it.

With ``hand_off: link`` the temp name is a hard link of the spool file instead of a copy: the same steps,
no byte read or written, so a GB-sized file costs what a small one does (a durable copy is bound by the
disk's write speed). The file must still be what was validated (size and mtime); otherwise it is copied.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.batch.commit import GroupSync
from gateway.batch.each import each
from gateway.config import DirectoryRoute
from gateway.forward.base import CHUNK_BYTES, Digest, ForwardError, Outbound, Rejected, Transient
from spool.fsio import fsync_dir, rename_noreplace, temp_name

log = structlog.get_logger("gateway.forward.directory")

_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what spool.fsio.temp_name makes
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_FULL = (errno.ENOSPC, errno.EDQUOT)
_CANNOT_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP)


@dataclass(frozen=True, slots=True)
class _Staged:
    tmp: Path
    how: str  # "linked" or "copied"
    synced: bool


class DirectoryForwarder:
    """Forwards by durable copy into ``route.path``; blocking I/O runs in a worker thread. Small copies,
    and the core directory, are synced many files at once by the forwarder's own group (a core may be a
    mount that hangs: one core's trouble must not hold up other files' steps, as a shared group or a
    shared offload job would)."""

    def __init__(self, route: DirectoryRoute) -> None:
        self.root = route.path
        self._syncs = GroupSync()
        self._link = route.hand_off == "link"
        self._warned = False  # about files copied because they could not be linked

    async def send(self, item: Outbound) -> str:
        self._syncs.start()
        done = await asyncio.to_thread(self._deliver, item)
        if isinstance(done, _Staged):  # a burst: its bytes are synced with other files' first
            try:
                await self._synced(done.tmp)
            except Exception:  # (if cancelled at shutdown, the next start removes the temp file)
                await asyncio.to_thread(_remove, done.tmp)
                raise
            done = await asyncio.to_thread(self._published, done, item)
        await self._synced(self.root)  # also when it was there already: that try may have died
        return done

    async def send_many(self, items: Sequence[Outbound]) -> list[str | Exception]:
        """``send`` for a burst's small files, each step once for all: staged in one thread job, their
        bytes synced together, published in one more, the core directory synced once."""
        self._syncs.start()
        staged = await asyncio.to_thread(each, self._stage, items)
        temps = [done.tmp for done in staged if isinstance(done, _Staged)]
        try:
            await self._synced(*temps)
        except Transient as exc:  # each is sent alone again: one found at the core has its directory synced
            await asyncio.to_thread(_remove_all, temps)
            return [done if isinstance(done, Exception) else exc for done in staged]
        sent = await asyncio.to_thread(each, self._publish_staged, list(zip(staged, items, strict=True)))
        if any(isinstance(done, str) for done in sent):
            try:
                await self._synced(self.root)
            except Transient as exc:
                return [exc if isinstance(done, str) else done for done in sent]
        return sent

    def _publish_staged(self, pair: tuple[_Staged | str | Exception, Outbound]) -> str:
        done, item = pair
        if isinstance(done, Exception):
            raise done
        return done if isinstance(done, str) else self._published(done, item)

    def _deliver(self, item: Outbound) -> _Staged | str:
        """Where the core has the file now; or, when its bytes are left to be synced with other files',
        the staged copy to publish once they are."""
        staged = self._stage(item)
        if isinstance(staged, str) or not staged.synced:
            return staged
        return self._published(staged, item)

    def _published(self, staged: _Staged, item: Outbound) -> str:
        """The durable ``staged`` copy at its name in the core (removed if that fails): where it is now."""
        try:
            self._publish(staged.tmp, self.root / item.name, item)
        except BaseException:
            _remove(staged.tmp)
            raise
        return f"{staged.how} to {self.root / item.name}"

    async def _synced(self, *paths: Path) -> None:
        try:
            await self._syncs.sync(*paths)
        except OSError as exc:
            raise Transient(_explain(self.root, "syncing", exc)) from exc

    async def aclose(self) -> None:
        """Stop the group sync once what it holds is synced; every send opens and closes its own files."""
        await self._syncs.stop()

    async def cleanup(self) -> list[Path]:
        """Remove temp files a crash left in the core directory; call at start-up, before any send."""
        return await asyncio.to_thread(self._cleanup)

    def _stage(self, item: Outbound) -> _Staged | str:
        """The file under a temp name in the core (durable already unless it is to be synced with
        others), or where the core has it already."""
        if item.name != Path(item.name).name or item.name.startswith("."):
            raise ForwardError(f"{item.name!r} is not a plain file name; it could land outside the core")
        final = self.root / item.name
        if self._holds(final, item):
            return f"already at the core as {final}"
        tmp = temp_name(final)
        sync = not item.sync_together
        try:
            if self._link and not item.private and self._link_to(tmp, item, sync=sync):
                return _Staged(tmp, "linked", sync)
            src = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW)  # our own spool file: errors are ours
            try:
                self._copy(src, tmp, item, sync=sync)
            finally:
                os.close(src)
        except BaseException:
            _remove(tmp)
            raise
        return _Staged(tmp, "copied", sync)

    def _link_to(self, tmp: Path, item: Outbound, *, sync: bool) -> bool:
        """Hard-link the spool file to ``tmp`` (and with ``sync`` make that durable); False when it cannot
        be linked here (another filesystem, not allowed, too many links) or may have changed since it
        was validated."""
        if not item.mtime_ns:
            return False  # nothing to check it against: copy, which verifies the bytes
        try:
            os.link(item.path, tmp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _CANNOT_LINK:
                self._cannot_link(exc)
                return False
            if not os.path.lexists(item.path):
                raise  # the spool's own file is gone: not the core's fault
            raise Transient(_explain(self.root, "linking", exc)) from exc
        with self._core("syncing"):
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                info = os.fstat(fd)
                if (info.st_size, info.st_mtime_ns) != (item.size, item.mtime_ns):
                    tmp.unlink()  # written since it was validated: copy, which verifies the bytes
                    return False
                if sync:
                    os.fsync(fd)  # its new link count (its bytes were made durable before the decision)
            finally:
                os.close(fd)
        return True

    def _cannot_link(self, exc: OSError) -> None:
        """Say once per route that files are copied after all: link mode silently copying everything
        (another filesystem, protected_hardlinks and senders' own files) would puzzle an operator."""
        if not self._warned:
            self._warned = True
            log.warning("forward.copying_instead_of_linking", core=str(self.root), reason=exc.strerror)

    def _copy(self, src: int, tmp: Path, item: Outbound, *, sync: bool) -> None:
        digest = Digest(item)
        with self._core("creating a file"):
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            buf = bytearray(min(CHUNK_BYTES, item.size + 1))  # a small file: one read, no 1 MiB buffer
            view = memoryview(buf)
            while count := os.readv(src, [buf]):
                digest.update(view[:count])
                with self._core("writing"):
                    _write_all(dst, view[:count])
            digest.verify()
            if sync:
                with self._core("syncing"):
                    os.fsync(dst)
        finally:
            os.close(dst)

    def _publish(self, tmp: Path, final: Path, item: Outbound) -> None:
        with self._core("renaming"):
            try:
                rename_noreplace(tmp, final)
            except FileExistsError:  # a concurrent attempt won the race: same content is success
                tmp.unlink()
                if not self._holds(final, item):
                    raise Transient(f"{final} appeared and vanished while delivering; retrying") from None

    def _holds(self, final: Path, item: Outbound) -> bool:
        """Whether the core already has this file; raise ``Rejected`` if it has other content there."""
        with self._core("checking"):
            try:
                info = os.lstat(final)
            except FileNotFoundError:
                return False
            same = (
                stat.S_ISREG(info.st_mode)
                and info.st_size == item.size
                and (_linked(info, item.path) or _sha256(final) == item.sha256.lower())
            )
        if same:
            return True
        raise Rejected(
            "CORE_REJECTED",
            f"the core directory already holds a different file named {item.name}; "
            "the core keeps the first one, send a new batch number to re-report",
        )

    def _cleanup(self) -> list[Path]:
        removed: list[Path] = []
        with self._core("cleaning"):
            try:
                entries = list(os.scandir(self.root))
            except (FileNotFoundError, NotADirectoryError):
                return removed  # no core directory, nothing left behind in it
            for entry in entries:
                if _TEMP.match(entry.name) and entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)
                    removed.append(Path(entry.path))
            if removed:
                fsync_dir(self.root)
        return removed

    @contextmanager
    def _core(self, action: str) -> Iterator[None]:
        """Turn a failure of the core directory into a ``Transient`` that says what to fix."""
        try:
            yield
        except OSError as exc:
            raise Transient(_explain(self.root, action, exc)) from exc


def _explain(root: Path, action: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and not root.exists():
        return f"core directory {root} does not exist; create it or fix the route's path"
    if exc.errno == errno.ENOTDIR:
        return f"core directory {root} is not a directory; fix the route's path"
    if exc.errno in _UNWRITABLE:
        return f"core directory {root} is not writable ({exc.strerror}); fix its permissions or mount"
    if exc.errno in _FULL:
        return f"core directory {root} is full ({exc.strerror}); free space there"
    return f"core directory {root}: {action} failed: {exc.strerror or exc}"


def _linked(info: os.stat_result, path: Path) -> bool:
    """``info`` is the spool file itself (an earlier attempt linked it): nothing to read."""
    with suppress(OSError):
        return os.path.samestat(info, os.lstat(path))
    return False


def _remove_all(temps: Sequence[Path]) -> None:
    for tmp in temps:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    with suppress(OSError):  # a read-only core refuses even this (EROFS); start-up cleans up
        tmp.unlink(missing_ok=True)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
