"""The field types of the interface spec (C, V, N, D, T, E), parsed from their written form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    CODE = "C"  # fixed length code
    TEXT = "V"  # bounded text
    DECIMAL = "N"
    DATE = "D"
    TIME = "T"
    ENUM = "E"


@dataclass(frozen=True, slots=True)
class FieldType:
    kind: Kind
    length: int = 0  # C(n), V(n)
    precision: int = 0  # N(p,s)
    scale: int = 0
    choices: tuple[str, ...] = ()  # E(a,b,...)

    def __str__(self) -> str:
        if self.kind in (Kind.CODE, Kind.TEXT):
            return f"{self.kind}({self.length})"
        if self.kind is Kind.DECIMAL:
            return f"N({self.precision},{self.scale})"
        if self.kind is Kind.ENUM:
            return f"E({','.join(self.choices)})"
        return str(self.kind)


_FORM = re.compile(r"^(?P<kind>[CVNDTE])(?:\((?P<args>[^()]*)\))?$")


def parse_field_type(text: str) -> FieldType:
    """Parse ``C(8)``, ``V(200)``, ``N(18,2)``, ``D``, ``T`` or ``E(01,02)``; ValueError says what's wrong."""
    match = _FORM.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a field type (C(n), V(n), N(p,s), D, T or E(a,b,...))")
    kind = Kind(match["kind"])
    args = [a.strip() for a in match["args"].split(",")] if match["args"] is not None else []
    if kind in (Kind.DATE, Kind.TIME):
        if args:
            raise ValueError(f"{text!r}: {kind} takes no arguments")
        return FieldType(kind)
    if kind in (Kind.CODE, Kind.TEXT):
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
            raise ValueError(f"{text!r}: {kind} takes one positive length, e.g. {kind}(8)")
        return FieldType(kind, length=int(args[0]))
    if kind is Kind.DECIMAL:
        if len(args) != 2 or not all(a.isdigit() for a in args):
            raise ValueError(f"{text!r}: N takes precision and scale, e.g. N(18,2)")
        precision, scale = int(args[0]), int(args[1])
        if precision < 1 or scale > precision:
            raise ValueError(f"{text!r}: N needs 1 <= precision and scale <= precision")
        return FieldType(kind, precision=precision, scale=scale)
    choices = tuple(args)
    if not choices or any(not c or "|" in c for c in choices) or len(set(choices)) != len(choices):
        raise ValueError(f"{text!r}: E takes distinct, non-empty values, e.g. E(01,02)")
    return FieldType(kind, choices=choices)
