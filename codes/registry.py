"""The transfer-code registry model: which institution a channel speaks for, and where."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

TEST_CODE_DAYS = 30
"""A code on a test station is valid this many days from ``valid_from`` (the platform's rule)."""

TRANSFER_CODE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
STATION_PATTERN = r"^k[0-9]{4}$"


class TransferCode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    institution: str = Field(pattern=r"^[0-9]{8}$")
    name: str = ""
    stations: tuple[str, ...] = Field(min_length=1)
    tables: tuple[str, ...] | None = None  # None: every table in the catalogue
    route: str | None = None  # None: the station's route
    owes: tuple[str, ...] | None = None  # tables the institution must report; None: ``tables``, else all
    valid_from: date | None = None  # first data date the code reports for; None: always
    valid_until: date | None = None  # last data date; None: open (a test station: valid_from + 30 days)

    @model_validator(mode="after")
    def _valid_range(self) -> TransferCode:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError(f"valid_until {self.valid_until} is before valid_from {self.valid_from}")
        unreported = sorted(set(self.owes or ()) - set(self.tables or self.owes or ()))
        if unreported:
            raise ValueError(f"owes tables the code may not send (not in tables): {', '.join(unreported)}")
        return self

    def allows_table(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def owed_tables(self, catalogue: tuple[str, ...]) -> tuple[str, ...]:
        """What the institution must report on this code: ``owes``, else ``tables``, else every table."""
        if self.owes is not None:
            return self.owes
        return self.tables if self.tables is not None else catalogue

    def valid_on(self, day: date, *, test_station: bool) -> bool:
        """Whether the code reports for data date ``day``; on a test station it expires after 30 days."""
        if self.valid_from is not None and day < self.valid_from:
            return False
        if self.valid_until is not None and day > self.valid_until:
            return False
        if test_station and self.valid_from is not None:
            return day < self.valid_from + timedelta(days=TEST_CODE_DAYS)
        return True
