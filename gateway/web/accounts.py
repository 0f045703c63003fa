"""Console accounts: operators, and institutions scoped to their own institution's transfer codes.

One SQLite table beside the console's other state. Passwords are argon2id hashes (argon2-cffi, its
defaults follow RFC 9106); a run of failed logins locks the account for a while, as the platform does.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class Role(StrEnum):
    OPERATOR = "operator"
    INSTITUTION = "institution"


class AccountError(Exception):
    """An account cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    institution: str | None  # set for institution accounts only
    generation: int = 0  # sessions carry it; logout and password changes move it on, ending them all


class LoginResult(StrEnum):
    OK = "ok"
    BAD = "bad"  # wrong name or password (never said which)
    LOCKED = "locked"


_DDL = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, institution TEXT, password_hash TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0, locked_until TEXT, created_at TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
)
"""


class Accounts:
    def __init__(
        self, path: Path, *, max_failed: int = 5, lockout: timedelta = timedelta(minutes=15)
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        path.chmod(0o600)  # password hashes: for the console's user only
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_DDL)
        self._lock = threading.Lock()
        self._max_failed = max_failed
        self._lockout = lockout

    def close(self) -> None:
        self._conn.close()

    def add(self, username: str, password: str, role: Role, institution: str | None = None) -> Account:
        if USERNAME.fullmatch(username) is None:
            raise AccountError(f"user names are 1-64 of A-Z a-z 0-9 _ . @ - (got {username!r})")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"passwords have at least {MIN_PASSWORD} characters")
        if (role is Role.INSTITUTION) != (institution is not None):
            raise AccountError("an institution account names its institution; an operator account does not")
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO accounts (username, role, institution, password_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (username, role.value, institution, _HASHER.hash(password), _now().isoformat()),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"user {username!r} exists already") from None
        return Account(username, role, institution)

    def set_password(self, username: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"passwords have at least {MIN_PASSWORD} characters")
        with self._lock:
            changed = self._conn.execute(
                "UPDATE accounts SET password_hash = ?, failed = 0, locked_until = NULL, "
                "generation = generation + 1 WHERE username = ?",
                (_HASHER.hash(password), username),
            ).rowcount
        if not changed:
            raise AccountError(f"no user {username!r}")

    def remove(self, username: str) -> None:
        with self._lock:
            if not self._conn.execute("DELETE FROM accounts WHERE username = ?", (username,)).rowcount:
                raise AccountError(f"no user {username!r}")

    def unlock(self, username: str) -> None:
        with self._lock:
            changed = self._conn.execute(
                "UPDATE accounts SET failed = 0, locked_until = NULL WHERE username = ?", (username,)
            ).rowcount
        if not changed:
            raise AccountError(f"no user {username!r}")

    def end_sessions(self, username: str) -> None:
        """Make every session of the account invalid (signed cookies cannot be taken back otherwise)."""
        with self._lock:
            self._conn.execute(
                "UPDATE accounts SET generation = generation + 1 WHERE username = ?", (username,)
            )

    def all(self) -> list[tuple[Account, bool]]:
        """Every account and whether it is locked now."""
        now = _now().isoformat()
        rows = self._conn.execute(
            "SELECT username, role, institution, locked_until FROM accounts ORDER BY username"
        ).fetchall()
        return [(Account(u, Role(r), i), bool(lock and lock > now)) for u, r, i, lock in rows]

    def get(self, username: str) -> Account | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT role, institution, generation FROM accounts WHERE username = ?", (username,)
            ).fetchone()
        return Account(username, Role(row[0]), row[1], row[2]) if row else None

    def login(self, username: str, password: str) -> tuple[LoginResult, Account | None]:
        """Check a password; count failures and lock the account after ``max_failed`` in a row.

        A locked account is refused even with the right password until the lock expires (or an operator
        runs ``web-user unlock``), so guessing on cannot find the password meanwhile.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT role, institution, password_hash, failed, locked_until, generation FROM accounts "
                "WHERE username = ?",
                (username,),
            ).fetchone()
            if row is None:
                _verify(_DUMMY_HASH, password)
                return LoginResult.BAD, None
            role, institution, stored, failed, locked_until, generation = row
            now = _now()
            if locked_until and datetime.fromisoformat(locked_until) > now:
                return LoginResult.LOCKED, None
            if not _verify(stored, password):
                failed += 1
                lock = (now + self._lockout).isoformat() if failed >= self._max_failed else None
                self._conn.execute(
                    "UPDATE accounts SET failed = ?, locked_until = ? WHERE username = ?",
                    (0 if lock else failed, lock, username),
                )
                return (LoginResult.LOCKED if lock else LoginResult.BAD), None
            if _HASHER.check_needs_rehash(stored):  # argon2-cffi's parameters grew since it was hashed
                stored = _HASHER.hash(password)
            self._conn.execute(
                "UPDATE accounts SET failed = 0, locked_until = NULL, password_hash = ? WHERE username = ?",
                (stored, username),
            )
            return LoginResult.OK, Account(username, Role(role), institution, generation)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _now() -> datetime:
    return datetime.now(UTC)
