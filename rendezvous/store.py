"""Where the rendezvous keeps what must survive a restart.

:class:`Store` is the small interface the domain uses; :class:`SqliteStore`
is the embedded default (one file, WAL journal). Calls are synchronous and
short: single-row reads and writes on an indexed table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    pw_hash     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    last_ip     TEXT,
    last_port   INTEGER,
    last_seen   REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    pw_hash: str
    created_at: float
    last_ip: str | None = None
    last_port: int | None = None
    last_seen: float | None = None


class Store(Protocol):
    def get_account(self, name: str) -> Account | None: ...
    def create_account(self, name: str, pw_hash: str, now: float) -> Account: ...
    def set_password_hash(self, name: str, pw_hash: str) -> None: ...
    def record_login(self, name: str, ip: str, now: float) -> None: ...
    def record_port(self, name: str, port: int) -> None: ...
    def record_seen(self, name: str, now: float) -> None: ...
    def list_accounts(self, limit: int) -> list[Account]: ...
    def count_accounts(self) -> int: ...
    def close(self) -> None: ...


class StoreError(Exception):
    """The database could not be opened or written: check the --db path and its permissions."""


class SqliteStore:
    """The embedded default :class:`Store`: one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
        except sqlite3.Error as e:
            raise StoreError(f"Cannot open the database {self.path}: {e}") from e

    def _row(self, row: tuple | None) -> Account | None:
        return Account(*row) if row else None

    def get_account(self, name: str) -> Account | None:
        cur = self._db.execute(
            "SELECT name, pw_hash, created_at, last_ip, last_port, last_seen"
            " FROM accounts WHERE name = ?",
            (name,),
        )
        return self._row(cur.fetchone())

    def create_account(self, name: str, pw_hash: str, now: float) -> Account:
        self._db.execute(
            "INSERT INTO accounts(name, pw_hash, created_at, last_seen) VALUES (?, ?, ?, ?)",
            (name, pw_hash, now, now),
        )
        return Account(name, pw_hash, now, last_seen=now)

    def set_password_hash(self, name: str, pw_hash: str) -> None:
        self._db.execute("UPDATE accounts SET pw_hash = ? WHERE name = ?", (pw_hash, name))

    def record_login(self, name: str, ip: str, now: float) -> None:
        self._db.execute(
            "UPDATE accounts SET last_ip = ?, last_seen = ? WHERE name = ?", (ip, now, name)
        )

    def record_port(self, name: str, port: int) -> None:
        self._db.execute("UPDATE accounts SET last_port = ? WHERE name = ?", (port, name))

    def record_seen(self, name: str, now: float) -> None:
        self._db.execute("UPDATE accounts SET last_seen = ? WHERE name = ?", (now, name))

    def list_accounts(self, limit: int) -> list[Account]:
        cur = self._db.execute(
            "SELECT name, pw_hash, created_at, last_ip, last_port, last_seen"
            " FROM accounts ORDER BY last_seen DESC, name LIMIT ?",
            (limit,),
        )
        return [Account(*r) for r in cur.fetchall()]

    def count_accounts(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    def close(self) -> None:
        self._db.close()
