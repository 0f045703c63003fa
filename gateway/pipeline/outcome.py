"""What became of a unit of files: the value the flow hands the recorder, once per outcome.

Forwarded, Rejected and Duplicate are final (the file leaves work/ for archive/ or quarantine/); Held
and Deferred are where a file waits (held/, deferred/) until the flow takes it on again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Forwarded:
    where: Mapping[str, str]  # per file_id, where the core took the file


@dataclass(frozen=True, slots=True)
class Rejected:
    """Quarantined with the findings the files carry."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    of: str  # the file_id of the file already received


@dataclass(frozen=True, slots=True)
class Held:
    until: datetime  # when the reporting window lets it go


@dataclass(frozen=True, slots=True)
class Deferred:
    reason: str  # why the core cannot take it now


Outcome = Forwarded | Rejected | Duplicate | Held | Deferred
