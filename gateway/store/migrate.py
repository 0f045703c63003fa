"""Versioned SQL migrations for the PostgreSQL store, run at start.

``migrations/NNN_name.sql`` are applied in order, each in its own transaction with its ``schema_version``
row, under an advisory lock so that nodes starting together apply each once. A database whose schema is
newer than this gateway knows is refused: an older node must not write a layout it does not understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from gateway.store.rules import LedgerError

_LOCK = 0x66646570  # "fdep": one advisory lock for migrations
_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this gateway, oldest first."""
    found = []
    for entry in resources.files("gateway.store").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest() -> int:
    return migrations()[-1].version


def migrate(conn: psycopg.Connection[object]) -> int:
    """Bring the schema up to this gateway's version; returns the version. ``conn`` is in autocommit."""
    known = migrations()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0  # type: ignore[index]
        if current > known[-1].version:
            raise LedgerError(
                f"the database's schema is version {current}; this gateway knows up to {known[-1].version}: "
                "upgrade this node before starting it"
            )
        for migration in known:
            if migration.version > current:
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                current = migration.version
    return current
