"""Benchmark accounts, written straight into the server's SQLite file.

Registering 10,000 accounts through the protocol would hash 10,000 passwords;
instead one hash of the shared benchmark password is computed here and stored
for every account, so the benchmark's logins only verify.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from rendezvous.passwords import fast_hasher
from rendezvous.store import SqliteStore

#: The password of every benchmark account.
PASSWORD = "benchmark-password"


@cache
def password_hash(cheap: bool) -> str:
    """One argon2 hash of :data:`PASSWORD`: default parameters, or the cheap ones
    that ``benchmarks.bench_rendezvous --cheap-argon2`` verifies with."""
    from argon2 import PasswordHasher

    hasher = fast_hasher() if cheap else PasswordHasher()
    return hasher.hash(PASSWORD)


def create_accounts(db: Path, names: Iterable[str], *, cheap: bool) -> int:
    """Create the server's schema in ``db`` (via its own store) and the accounts."""
    SqliteStore(db).close()
    pw_hash = password_hash(cheap)
    now = time.time()
    rows = [(name, pw_hash, now, now) for name in names]
    con = sqlite3.connect(db)
    try:
        with con:
            con.executemany(
                "INSERT INTO accounts(name, pw_hash, created_at, last_seen) VALUES (?, ?, ?, ?)",
                rows,
            )
    finally:
        con.close()
    return len(rows)


def rehashed(db: Path, cheap: bool) -> int:
    """How many accounts no longer hold the hash we stored (the server rehashed them)."""
    con = sqlite3.connect(db)
    try:
        (n,) = con.execute(
            "SELECT COUNT(*) FROM accounts WHERE pw_hash != ?", (password_hash(cheap),)
        ).fetchone()
    finally:
        con.close()
    return int(n)
