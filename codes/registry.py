"""The transfer-code registry model: which institution a channel speaks for, and where."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

TRANSFER_CODE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
STATION_PATTERN = r"^k[0-9]{4}$"


class TransferCode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    institution: str = Field(pattern=r"^[0-9]{8}$")
    name: str = ""
    stations: tuple[str, ...] = Field(min_length=1)
    tables: tuple[str, ...] | None = None  # None: every table in the catalogue
    route: str | None = None  # None: the station's route

    def allows_table(self, table: str) -> bool:
        return self.tables is None or table in self.tables
