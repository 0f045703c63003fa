"""A reconcile scan's look at the inboxes, bounded: every tracked name checked, at most ``room`` new ones.

The inbox is the queue. Each in/ is streamed with os.scandir, one entry at a time, so a million waiting
names are never held at once: the names the detector tracks are stat'ed (the scan is the truth of them),
each mailbox takes its share of the room, and every other name is only counted and stays in in/ for a
later scan. A name that a claimed TXT or ZIP waits for as its partner is taken beyond the room: a long
queue must not part a pair for longer than ``pair_timeout_seconds``.

Fair between mailboxes: the room is shared out in order of what each left behind at the last scan, the
smallest first, each taking at most an equal part of what is still free (ceil(room left / mailboxes
left)), so one institution's backlog of 500,000 files gets what the others leave and never starves them.
Fair within a mailbox: names are taken round a ring (the names' hashes), each share the names next after
where the last one stopped. The directory's own order (a hash order on ext4, newest first on tmpfs) would
serve the same early names at every scan while new ones keep coming, and starve the rest.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.detect.settle import Snapshot
from spool.entries import is_temp_name

Key = tuple[str, str, str]  # station, transfer code, name
Box = tuple[str, str]  # station, transfer code
Found = list[tuple[Key, Snapshot | None]]  # None: not a regular file
_RING = 2**64


@dataclass(slots=True)
class Listing:
    seen: Found = field(default_factory=list)
    """Names tracked before the scan and listed again, with their stat."""
    taken: Found = field(default_factory=list)
    """Names not tracked before, to be tracked now: the mailboxes' shares and the awaited partners."""
    left: dict[Box, int] = field(default_factory=dict)
    """Per mailbox, the names it listed and left untracked in in/ (mailboxes that left none are absent)."""

    @property
    def found(self) -> int:
        return len(self.seen) + len(self.taken) + sum(self.left.values())


class InboxLister:
    """Lists inboxes for the detector's scans (on a thread, one scan at a time); remembers per mailbox what
    it left (which orders the next shares) and where on the ring its last share ended."""

    def __init__(self) -> None:
        self._left: dict[Box, int] = {}
        self._mark: dict[Box, int] = {}

    def list(
        self,
        inboxes: Sequence[tuple[Box, Path]],
        tracked: Container[Key],
        wanted: Container[Key],
        room: int,
    ) -> Listing:
        """Every inbox streamed once; ``tracked`` names are reported as seen, ``wanted`` ones taken, and up
        to ``room`` other names taken, shared out fairly."""
        listing = Listing()
        order = sorted(inboxes, key=lambda inbox: self._left.get(inbox[0], 0))
        for done, (box, path) in enumerate(order):
            share = -(-room // (len(order) - done))
            try:
                room -= self._list_box(box, path, tracked, wanted, share, listing)
            except OSError:  # gone or unreadable: its tracked names count as not listed, as before
                continue
        self._left = dict(listing.left)
        self._mark = {box: mark for box, mark in self._mark.items() if box in self._left}
        return listing

    def _list_box(
        self,
        box: Box,
        path: Path,
        tracked: Container[Key],
        wanted: Container[Key],
        share: int,
        listing: Listing,
    ) -> int:
        """List one inbox into ``listing``; how many names of its share it took."""
        mark = self._mark.get(box, 0)
        nearest: list[tuple[int, str]] = []  # the share's candidates: (-distance after the mark, name)
        untracked = 0
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if is_temp_name(name):
                    continue
                key = (box[0], box[1], name)
                if key in tracked:
                    _add(listing.seen, key, path / name)
                elif key in wanted:
                    _add(listing.taken, key, path / name)
                else:
                    untracked += 1
                    distance = (hash(name) - mark - 1) % _RING
                    if len(nearest) < share:
                        heapq.heappush(nearest, (-distance, name))
                    elif share and distance < -nearest[0][0]:
                        heapq.heapreplace(nearest, (-distance, name))
        taken = 0
        for _, name in sorted(nearest, reverse=True):  # nearest first: the order they are claimed in
            if _add(listing.taken, (box[0], box[1], name), path / name):
                taken += 1
                self._mark[box] = hash(name) % _RING
        if untracked > len(nearest):
            listing.left[box] = untracked - len(nearest)
        return taken


def _add(found: Found, key: Key, path: Path) -> bool:
    """Append the key with its lstat; False when it vanished meanwhile."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    found.append((key, Snapshot.from_stat(st) if stat.S_ISREG(st.st_mode) else None))
    return True
