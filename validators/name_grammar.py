"""The exact file-name grammar of spec 3 and the parsed name; shared by the checks and the repair."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EXTENSIONS", "ReportName", "parse_name"]

_GRAMMAR = re.compile(
    r"(?P<system>[A-Z]{2,8})-(?P<org>[0-9]{8})_(?P<table>[A-Z][0-9]{4})_(?P<version>V[0-9]{2})"
    r"_(?P<part>[1-9])_(?P<date>[0-9]{8})_(?P<batch>[0-9]{2})_(?P<mode>[QZ])\.(?P<ext>TXT|ZIP)"
)
EXTENSIONS = ("TXT", "ZIP")


@dataclass(frozen=True, slots=True)
class ReportName:
    """The parts of a valid file name; ``name`` rebuilds it exactly."""

    system: str
    org: str
    table: str
    version: str
    part: int
    date: str
    batch: int
    mode: str
    ext: str

    @property
    def stem(self) -> str:
        return (
            f"{self.system}-{self.org}_{self.table}_{self.version}_{self.part}_{self.date}"
            f"_{self.batch:02d}_{self.mode}"
        )

    @property
    def name(self) -> str:
        return f"{self.stem}.{self.ext}"

    @property
    def is_zip(self) -> bool:
        return self.ext == "ZIP"

    @property
    def partner(self) -> str:
        """The other half of a TXT + ZIP pair: same stem, other extension."""
        return f"{self.stem}.{'TXT' if self.is_zip else 'ZIP'}"

    @property
    def report_key(self) -> tuple[str, str, str, int]:
        """(institution, table, date, part): what batches and re-reports are counted against (spec 7)."""
        return (self.org, self.table, self.date, self.part)


def parse_name(name: str) -> ReportName | None:
    """The grammar of spec 3, exactly: ASCII only, the whole string, no trailing newline."""
    match = _GRAMMAR.fullmatch(name)
    if match is None:
        return None
    return ReportName(
        system=match["system"],
        org=match["org"],
        table=match["table"],
        version=match["version"],
        part=int(match["part"]),
        date=match["date"],
        batch=int(match["batch"]),
        mode=match["mode"],
        ext=match["ext"],
    )
