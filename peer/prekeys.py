"""The private halves of this user's prekeys (:mod:`chathack.prekeys`), in
``prekeys.sqlite3`` in the data folder (0600, like everything there).

* the **signed prekey** in use is replaced after :data:`SIGNED_ROTATE`; the
  replaced ones are kept :data:`SIGNED_KEEP` (mail sealed to them may still
  be on its way or in the mailbox, which keeps mail 30 days), then deleted;
* a **one-time prekey** is deleted as soon as the mail sealed to it has been
  opened and recorded, so that mail cannot be opened again, by anyone, with
  any key stolen later. At most :data:`MAX_ONE_TIME` are kept (those handed
  out but never used add up); the oldest go first.

Deleted rows are overwritten (``secure_delete``), and the database uses a
rollback journal rather than a write-ahead log, so no old copy of a page
lingers in a ``-wal`` file. Synchronous calls, like the history's: the
peer's core calls them while it handles one input.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nacl.signing import SigningKey

from chathack.prekeys import (
    MAX_PREKEY_ID,
    OneTimePrekey,
    SignedPrekey,
    new_prekey,
    sign_prekey,
)

PREKEYS_FILE = "prekeys.sqlite3"
#: Seconds a signed prekey is in use before a new one replaces it.
SIGNED_ROTATE = 7 * 86400
#: Seconds a replaced signed prekey is still kept for mail on its way.
SIGNED_KEEP = 35 * 86400
#: One-time prekeys kept at most (handed out, not used yet).
MAX_ONE_TIME = 400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prekeys (
    kind     TEXT NOT NULL,      -- 'spk' or 'opk'
    id       INTEGER NOT NULL,
    private  BLOB NOT NULL,
    public   BLOB NOT NULL,
    created  REAL NOT NULL,      -- Unix seconds
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS counter (one INTEGER PRIMARY KEY CHECK (one = 1), next INTEGER);
"""


class PrekeyVault:
    """``data_dir`` None keeps them in memory (library use, tests)."""

    def __init__(self, data_dir: Path | None, identity: SigningKey) -> None:
        path = ":memory:" if data_dir is None else str(data_dir / PREKEYS_FILE)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.executescript(_SCHEMA)
        if data_dir is not None:
            Path(path).chmod(0o600)
        self._identity = identity

    def _next_id(self) -> int:
        row = self._db.execute("SELECT next FROM counter WHERE one = 1").fetchone()
        current = int(row[0]) if row else 1
        following = current % MAX_PREKEY_ID + 1
        self._db.execute("INSERT OR REPLACE INTO counter(one, next) VALUES (1, ?)", (following,))
        return current

    def _add(self, kind: str, now: float) -> tuple[int, bytes]:
        private, public = new_prekey()
        prekey_id = self._next_id()
        self._db.execute(
            "INSERT OR REPLACE INTO prekeys(kind, id, private, public, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, prekey_id, private, public, now),
        )
        return prekey_id, public

    def signed(self, now: float) -> SignedPrekey:
        """The signed prekey to publish: the newest, or a new one once it is
        :data:`SIGNED_ROTATE` old (and those past :data:`SIGNED_KEEP`, gone)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM prekeys WHERE kind = 'spk' AND created < ?", (now - SIGNED_KEEP,)
            )
            row = self._db.execute(
                "SELECT id, public, created FROM prekeys WHERE kind = 'spk'"
                " ORDER BY created DESC, id DESC LIMIT 1"
            ).fetchone()
            if row is None or row[2] < now - SIGNED_ROTATE:
                prekey_id, public = self._add("spk", now)
            else:
                prekey_id, public = int(row[0]), bytes(row[1])
        return sign_prekey(self._identity, prekey_id, public)

    def fresh_one_time(self, n: int, now: float) -> tuple[OneTimePrekey, ...]:
        """``n`` new one-time prekeys (kept privately) to publish."""
        with self._db:
            self._db.execute("BEGIN")
            made = [OneTimePrekey(*self._add("opk", now)) for _ in range(n)]
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM prekeys WHERE kind = 'opk'"
            ).fetchone()
            if count > MAX_ONE_TIME:
                self._db.execute(
                    "DELETE FROM prekeys WHERE kind = 'opk' AND rowid IN (SELECT rowid"
                    " FROM prekeys WHERE kind = 'opk' ORDER BY created, rowid LIMIT ?)",
                    (count - MAX_ONE_TIME,),
                )
        return tuple(made)

    def private(self, kind: str, prekey_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT private FROM prekeys WHERE kind = ? AND id = ?", (kind, prekey_id)
        ).fetchone()
        return bytes(row[0]) if row else None

    def used(self, prekey_id: int) -> None:
        """A one-time prekey opened its mail, now recorded: gone for good."""
        self._db.execute("DELETE FROM prekeys WHERE kind = 'opk' AND id = ?", (prekey_id,))

    def count(self, kind: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM prekeys WHERE kind = ?", (kind,))
        return int(row.fetchone()[0])

    def close(self) -> None:
        self._db.close()
