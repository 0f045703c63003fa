"""What a forwarder is given, what it may raise, and the shape every forwarder has.

The exceptions are the whole contract between a forwarder and the pipeline: ``Transient`` and
``TaskNotReady`` keep the file (deferred, retried), ``Rejected`` ends it with a finding, and a plain
``ForwardError`` means the outbound file itself is not what was validated (never retried, never blamed
on the core).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from validators import findings

CHUNK_BYTES = 1024 * 1024
"""Read and write unit of every copy: memory stays bounded whatever the file's size."""


@dataclass(frozen=True)
class Outbound:
    """One validated file on its way to the core; ``sha256`` and ``size`` are what was validated."""

    file_id: str
    path: Path  # the spool copy to send (in work/ or deferred/)
    name: str  # the original file name, kept at the core
    sha256: str  # lower-case hex
    size: int
    station: str
    transfer_code: str
    institution: str
    table: str
    data_date: str  # YYYYMMDD, as in the name
    batch: str  # "01".."99"
    mode: str  # "Q" or "Z"
    mtime_ns: int = 0  # the spool file's mtime when it was validated; 0: unknown
    private: bool = False  # a restricted table's file: owner-only, never shares its inode with the core
    sync_together: bool = False  # a small file in a burst: synced with others at once, not in its step


class ForwardError(Exception):
    """Base of the forwarders' errors; raised as such when the outbound file changed since validation."""


class Transient(ForwardError):  # noqa: N818 - the agreed API names outcomes, not errors
    """The core cannot take the file now (down, slow, full, broken): keep it and retry later."""


class Misconfigured(Transient):
    """The core's answer says the route itself is wrong (a redirect: the url moved). Retried a few
    times (a core being moved may answer so briefly), then ``deliver`` raises ``RouteBroken``."""


class TaskNotReady(ForwardError):  # noqa: N818 - the agreed API names outcomes, not errors
    """The core's reporting task is not in the data-preparation state (HTTP 409): retry for a while."""

    def __init__(self, core_message: str) -> None:
        self.core_message = core_message
        super().__init__(f"the core's task is not in the data-preparation state: {core_message}")


class Rejected(ForwardError):  # noqa: N818 - the agreed API names outcomes, not errors
    """The core refused the file for good; ``code`` is the finding code the file is rejected with."""

    def __init__(self, code: str, core_message: str, **params: object) -> None:
        self.code = code
        self.core_message = core_message
        self.params: dict[str, Any] = {"core_message": core_message, **params}  # template fields
        super().__init__(code, core_message)

    def finding(self) -> findings.Finding:
        """The finding for the receipt and history (catalogue text filled with this rejection)."""
        return findings.make(self.code, **self.params)

    def __str__(self) -> str:
        finding = self.finding()
        return f"{self.code}: {finding.message_en} ({self.core_message}); {finding.hint_en}"


class Forwarder(Protocol):
    async def send(self, item: Outbound) -> str:
        """Make one attempt to hand ``item`` to the core; return where it went (for history and logs)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchForwarder(Forwarder, Protocol):
    async def send_many(self, items: Sequence[Outbound]) -> list[str | Exception]:
        """One attempt for each of a burst's small files, made together; per item where it went or what
        ``send`` would have raised (the pipeline retries those one by one, through ``deliver``)."""
        ...


class Digest:
    """Sha256 and size of the bytes actually sent, so a file changed since validation is never delivered."""

    def __init__(self, item: Outbound) -> None:
        self._item = item
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.size > self._item.size:
            raise self._changed()

    def verify(self) -> None:
        if self.size != self._item.size or self._hash.hexdigest() != self._item.sha256.lower():
            raise self._changed()

    def _changed(self) -> ForwardError:
        return ForwardError(
            f"{self._item.path} no longer matches what was validated (size {self._item.size}, "
            f"sha256 {self._item.sha256}); not sent"
        )
