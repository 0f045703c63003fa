"""Table interface specs: the declarative catalogue of spec section 5, loaded and checked at start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time
from enum import StrEnum
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codes.fieldtypes import FieldType, parse_field_type


class Frequency(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


class Deadline(BaseModel):
    """When a period's report is due (spec 8): daily, ``days`` trading days after the data date, by ``at``
    (None: the end of that day); monthly, the ``days``-th working day of the next month, by ``at`` (None:
    11:30)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(ge=1, le=23)
    at: time | None = None


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")
    type: FieldType
    required: bool = False

    @field_validator("type", mode="before")
    @classmethod
    def _parse_type(cls, value: object) -> FieldType:
        if isinstance(value, FieldType):
            return value
        if not isinstance(value, str):
            raise ValueError("a field type is written as text, e.g. C(8)")
        return parse_field_type(value)


class TableSpec(BaseModel):
    """One interface table: its fields in order and the rules that depend on the table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-Z]\d{4}$")
    title: str
    versions: tuple[str, ...] = ("V01",)
    incremental: bool = False  # True: Q first, then Z; False: Q only
    frequency: Frequency
    restricted: bool = False  # content never appears in any output
    attachments: bool = False  # comes as TXT + ZIP of the same stem
    fields: tuple[FieldSpec, ...]
    deadline: Deadline | None = None  # None: the platform's rule for the frequency (spec 8)

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.fullmatch(r"V\d{2}", v)]
        if bad or not value:
            raise ValueError(f"versions are written V01, V02, ... (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _fields_unique(self) -> TableSpec:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names repeat: {', '.join(dupes)}")
        if not names:
            raise ValueError("a table needs at least one field")
        if self.attachments:
            needed = {"FJMC", "WJDX", "BGLX"}
            if not needed <= set(names):
                raise ValueError(f"an attachment table needs the fields {sorted(needed)}")
        return self

    def __hash__(self) -> int:
        """By the code alone (equal tables have equal codes): the validators' grammar cache hashes a table
        for every file, and pydantic's own hash of a frozen model hashes every field spec in it."""
        return hash(self.code)

    @property
    def modes(self) -> tuple[str, ...]:
        return ("Q", "Z") if self.incremental else ("Q",)

    def index_of(self, name: str) -> int | None:
        for i, spec in enumerate(self.fields):
            if spec.name == name:
                return i
        return None


class CatalogueError(ValueError):
    """A table definition is malformed; the message names where."""


def parse_table(data: Mapping[str, Any], where: str) -> TableSpec:
    try:
        return TableSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(table)'}: {err['msg']}" for err in exc.errors()
        )
        raise CatalogueError(f"{where}: {problems}") from None


def bundled_tables() -> dict[str, TableSpec]:
    """The catalogue shipped in ``codes/tables``, keyed by table code."""
    tables: dict[str, TableSpec] = {}
    folder = resources.files("codes") / "tables"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
        if not isinstance(data, Mapping):
            raise CatalogueError(f"codes/tables/{entry.name}: a table definition is a mapping")
        table = parse_table(data, f"codes/tables/{entry.name}")
        tables[table.code] = table
    return tables


def merge_tables(base: Mapping[str, TableSpec], extra: Mapping[str, TableSpec]) -> dict[str, TableSpec]:
    """A deployment's tables add to or replace the bundled ones, by code."""
    merged = dict(base)
    merged.update(extra)
    return merged
