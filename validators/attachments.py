"""The two sides of the TXT <-> ZIP cross-check, shared by the text, archive and pair validators."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """One row of an attachment table (D3006) as the pair check needs it."""

    line: int
    kind: str  # BGLX: A add, U update, D delete
    name: str  # FJMC
    size: str  # WJDX, as written
    sha256: str  # SHA256, as written ("" when not given)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of an attachment ZIP, as actually read (not as its headers claim)."""

    name: str
    size: int
    sha256: str
