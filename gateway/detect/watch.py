"""Bridge from watchdog's inotify reader thread to the asyncio loop that owns the gateway's state.

Events are hints for settle (gateway/detect/settle.py); the reconcile scan is the truth. Whenever events may
have been lost, the sink gets an OVERFLOW event and the daemon should rescan at once:

- the kernel's queue overflowed (IN_Q_OVERFLOW, more than fs.inotify.max_queued_events unread).
  watchdog 7.1 logs a warning and calls ``on_queue_overflow()`` of the callbacks registered with its
  ``InotifyFD`` (7.1.1 then calls ``on_events_lost()`` of each); its observer API (emitters, event
  handlers) never reports it. So this module is such a callback, on that layer;
- more than ``max_pending`` events wait for a stalled loop: the reader thread then drops events and
  posts one OVERFLOW instead of queueing without bound (it would otherwise drain the kernel's queue
  into the loop's memory, and the kernel would never overflow);
- the reader thread died (``alive`` turns False; no more events come: restart the daemon). From 7.1.1
  watchdog reads on one thread and runs the callbacks on a second ("dispatcher") one; either dying ends
  the reader;
- a watched directory was deleted, moved away or unmounted (``directory`` names it; its watch is
  dropped, and watch() re-arms it once the directory is back).

Why ``InotifyFD`` and not ``Observer.schedule()``: the observer starts one emitter thread per watched
directory (2,000 inboxes gave 2,003 threads), holds each emitter's events behind an unpaired
IN_MOVED_FROM for 0.5 s (every claim of the gateway is one), and its unschedule() joins a thread. One
``InotifyFD`` is one inotify instance and one thread (two from 7.1.1), whatever the number of
directories; each ``in/`` is exactly one non-recursive watch,
counted against ``fs.inotify.max_user_watches`` of the daemon's user (watch() fails with ENOSPC when
that is reached). watchdog >= 7.1 is required for this layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 16384
"""As many events as the kernel's default fs.inotify.max_queued_events may hold for a stalled reader."""

_C = InotifyConstants
_MASK = Mask(
    _C.IN_CREATE
    | _C.IN_MODIFY
    | _C.IN_CLOSE_WRITE
    | _C.IN_MOVED_FROM
    | _C.IN_MOVED_TO
    | _C.IN_DELETE
    | _C.IN_DELETE_SELF
    | _C.IN_MOVE_SELF
    | _C.IN_ONLYDIR  # in/ must be a real directory: a symlink or a file fails with ENOTDIR
    | _C.IN_DONT_FOLLOW
    | _C.IN_EXCL_UNLINK
)
_DIRECTORY_LOST = _C.IN_DELETE_SELF | _C.IN_MOVE_SELF | _C.IN_UNMOUNT
_STOP_TIMEOUT = 5.0


class WatchKind(enum.StrEnum):
    RENAMED_IN = "renamed_in"
    """IN_MOVED_TO: a file was renamed into the directory, complete (spec 2)."""
    WRITTEN = "written"
    """IN_CREATE or IN_MODIFY: something is written in place (or a link, FIFO, directory appeared)."""
    CLOSED = "closed"
    """IN_CLOSE_WRITE: a writer closed the file."""
    GONE = "gone"
    """IN_DELETE or IN_MOVED_FROM: the name left the directory."""
    OVERFLOW = "overflow"
    """Events were lost: rescan ``directory``, or everything when it is None."""


_KINDS = (
    (_C.IN_MOVED_TO, WatchKind.RENAMED_IN),
    (_C.IN_CREATE | _C.IN_MODIFY, WatchKind.WRITTEN),
    (_C.IN_CLOSE_WRITE, WatchKind.CLOSED),
    (_C.IN_MOVED_FROM | _C.IN_DELETE, WatchKind.GONE),
)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: WatchKind
    directory: Path | None
    """The watched directory as given to watch(); None only for an OVERFLOW of every directory."""
    name: str = ""
    """The entry's name (undecodable bytes kept as surrogate escapes, like os.listdir)."""
    key_prefix: tuple[str, ...] = ()
    """As given to watch(), e.g. (station, transfer_code)."""

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.key_prefix, self.name)


@dataclass(frozen=True, slots=True)
class _Watched:
    path: Path
    key_prefix: tuple[str, ...]
    wd: WatchDescriptor
    callback_id: CallbackId
    identity: tuple[int, int]
    """(st_dev, st_ino) of the directory when it was watched: a watch follows the inode, not the path."""


class _Reader(InotifyFD):
    """watchdog's inotify reader thread, which says so when it ends without being shut down by its owner.

    watchdog's own "should keep running" flag cannot tell: from 7.1.1 a failing dispatcher thread calls
    ``stop()`` itself (which also drops every watch, reporting each as deleted) before the reader
    re-raises its error.
    """

    def __init__(self, on_death: Callable[[], None]) -> None:
        super().__init__()
        self.name = "inotify-reader"
        self._on_death = on_death
        self._shutting_down = False
        self.dying = False
        """Set before watchdog drops the watches of a reader that fails: those are not lost directories."""

    def shut_down(self) -> None:
        self._shutting_down = True
        self.stop()

    def stop(self) -> None:
        if not self._shutting_down:
            self.dying = True
        super().stop()

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            logger.exception("inotify reader thread died; no more file-system events will arrive")
        finally:
            if not self._shutting_down:
                self.dying = True
                self._on_death()


class _Handoff:
    """The reader thread's side: each callback only posts to the loop with call_soon_threadsafe.

    Bounded: with ``max_pending`` events not yet run by the loop, further events are dropped and one
    OVERFLOW is posted; the loop re-opens the gate when it runs that OVERFLOW (before the sink rescans,
    so nothing dropped escapes the scan). Each counter has one writing thread, so there is no lock.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_pending: int,
        *,
        event: Callable[[WatchDescriptor, int, bytes], None],
        overflow: Callable[[], None],
        watch_lost: Callable[[WatchDescriptor], None],
        reader_death: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._max_pending = max_pending
        self._event = event
        self._overflow = overflow
        self._watch_lost = watch_lost
        self._reader_death = reader_death
        self.posted = 0  # written by the reader thread
        self.delivered = 0  # written by the loop
        self.shedding = False  # set by the reader thread, cleared by the loop

    def on_event(self, event: InotifyEvent) -> None:
        if self.shedding:
            return
        if self.posted - self.delivered >= self._max_pending:
            self.shedding = True
            self._post(self._overflow)
            return
        self.posted += 1
        self._post(self._event, event.wd, event.mask, event.name)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        self._post(self._watch_lost, wd)

    def on_queue_overflow(self) -> None:
        self._post(self._overflow)

    def on_events_lost(self) -> None:
        """watchdog 7.1.1 calls this after ``on_queue_overflow()``: the OVERFLOW is posted already.

        The two calls exist for watchdog's own emitters, which re-create their watches in the first;
        a hand-off has nothing to repair, and 7.1.0 calls only the first, so that one posts."""

    def on_reader_death(self) -> None:
        self._post(self._reader_death)

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)


class InboxWatcher:
    """Watches ``in/`` directories and calls ``sink`` with their events on ``loop``'s thread.

    Every method is called on the loop's thread. watch() and unwatch() are one inotify system call each
    (no thread is started or joined), so they are cheap enough for the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[WatchEvent], None],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._sink = sink
        self._handoff = _Handoff(
            loop,
            max_pending,
            event=self._on_event,
            overflow=self._on_overflow,
            watch_lost=self._on_watch_lost,
            reader_death=self._on_reader_death,
        )
        self._callback_ids = itertools.count(1)
        self._reader: _Reader | None = None
        self._by_path: dict[Path, _Watched] = {}
        self._by_wd: dict[WatchDescriptor, _Watched] = {}

    @property
    def alive(self) -> bool:
        """Started, not stopped, and the reader thread still runs."""
        return self._reader is not None and self._reader.is_alive()

    def start(self) -> None:
        if self._reader is not None:
            raise RuntimeError("InboxWatcher is already started")
        reader = _Reader(self._handoff.on_reader_death)
        reader.start()
        self._reader = reader

    def stop(self) -> None:
        """Drop every watch and end the reader thread; the sink is not called any more."""
        reader, self._reader = self._reader, None
        self._by_path.clear()
        self._by_wd.clear()
        if reader is None:
            return
        reader.shut_down()
        reader.join(_STOP_TIMEOUT)
        if reader.is_alive():
            logger.warning("inotify reader thread did not end within %.0f s", _STOP_TIMEOUT)

    def watch(self, path: Path, key_prefix: tuple[str, ...]) -> None:
        """Make sure one directory is watched (not recursively), e.g. for each ``in/`` a scan finds.

        Idempotent: watching it again costs one lstat and updates ``key_prefix``; if the path now names
        another directory (replaced while its events were lost) the stale watch is replaced too.
        Raises OSError: FileNotFoundError, NotADirectoryError (also for a symlink), ENOSPC when
        fs.inotify.max_user_watches is reached.
        """
        if self._reader is None:
            raise RuntimeError("InboxWatcher is not started")
        current = self._by_path.get(path)
        try:
            result = path.lstat()
        except OSError:
            if current is not None:
                self._forget(current)
            raise
        identity = (result.st_dev, result.st_ino)
        if current is not None and current.identity != identity:
            self._forget(current)
            current = None
        if current is None:
            callback_id = CallbackId(next(self._callback_ids))
            wd = self._add_watch(self._reader, path, callback_id)
        else:
            wd, callback_id = current.wd, current.callback_id
        self._by_path[path] = self._by_wd[wd] = _Watched(path, key_prefix, wd, callback_id, identity)

    def unwatch(self, path: Path) -> None:
        """Stop watching a directory; events of it still on their way are dropped."""
        watched = self._by_path.get(path)
        if watched is not None:
            self._forget(watched)

    def _forget(self, watched: _Watched) -> None:
        del self._by_path[watched.path], self._by_wd[watched.wd]
        if self._reader is not None:
            # a moved directory keeps its watch
            self._reader.remove_callbacks([(watched.wd, watched.callback_id)])

    def _add_watch(self, reader: _Reader, path: Path, callback_id: CallbackId) -> WatchDescriptor:
        try:
            wd = reader.add_callback(os.fsencode(path), _MASK, self._handoff, callback_id)
        except OSError as exc:
            reason = exc.strerror
            if exc.errno == errno.ENOSPC:
                reason = "inotify watch limit reached (sysctl fs.inotify.max_user_watches)"
            raise OSError(exc.errno, reason, str(path)) from exc
        if wd < 0:  # watchdog 7.1 swallows EACCES and registers the callback under wd -1
            reader.remove_callbacks([(wd, callback_id)])
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        alias = self._by_wd.get(wd)
        if alias is not None:  # one directory under two paths: its events would name either
            reader.remove_callbacks([(wd, callback_id)])
            raise ValueError(f"{path} is the directory already watched as {alias.path}")
        return wd

    # Run on the loop, posted by _Handoff.

    def _on_event(self, wd: WatchDescriptor, mask: int, name: bytes) -> None:
        self._handoff.delivered += 1
        watched = self._by_wd.get(wd)
        if watched is None:
            return
        if mask & _DIRECTORY_LOST:
            self._lose(watched)
            return
        for bits, kind in _KINDS:
            if mask & bits:
                self._sink(WatchEvent(kind, watched.path, os.fsdecode(name), watched.key_prefix))
                return

    def _on_watch_lost(self, wd: WatchDescriptor) -> None:
        if self._reader is None or self._reader.dying:
            return  # the reader's death is reported on its own, as an OVERFLOW of every directory
        watched = self._by_wd.get(wd)
        if watched is not None:
            self._lose(watched)

    def _on_overflow(self) -> None:
        self._handoff.shedding = False
        if self._reader is not None:
            self._sink(WatchEvent(WatchKind.OVERFLOW, None))

    def _on_reader_death(self) -> None:
        if self._reader is not None:
            self._sink(WatchEvent(WatchKind.OVERFLOW, None))

    def _lose(self, watched: _Watched) -> None:
        self._forget(watched)
        logger.warning("watched directory %s was deleted, moved or unmounted", watched.path)
        self._sink(WatchEvent(WatchKind.OVERFLOW, watched.path, key_prefix=watched.key_prefix))
