"""The peer's own record of its conversations (SQLite in the data dir).

Three jobs:

* ``::history NAME [N]``, and the last lines shown again when a conversation
  reopens — only lines of an *earlier run* (:meth:`History.last` with
  ``before_this_run``): every line recorded in this run was shown when it was
  recorded, and a message is shown at most once (a backlog of mail shown
  on login must not come again as "earlier" when its conversation opens);
* each sent message's **delivery state** — ``sent`` → ``stored`` (on the
  rendezvous, for an offline partner) → ``delivered`` → ``read`` — which only
  ever moves forward and survives restarts;
* **exactly-once display** of offline mail: a message is recorded (its
  ``(partner, mail id)`` is unique) *before* the server is told it arrived, so
  a copy delivered again after a crash is recognised and not shown twice.

And the sender's outbox: mail not yet confirmed stored is sent again, with
the same id, after a restart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

HISTORY_FILE = "history.sqlite3"
#: Delivery states, in the only order they can move.
STATES = ("sent", "stored", "delivered", "read")
#: The largest rowid SQLite can give.
_MAX_ROWID = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    rowid     INTEGER PRIMARY KEY,
    partner   TEXT NOT NULL COLLATE NOCASE,
    outgoing  INTEGER NOT NULL,
    text      TEXT NOT NULL,
    at        REAL NOT NULL,
    msg_id    TEXT,            -- mail id (offline messages) or NULL
    state     TEXT NOT NULL,   -- for outgoing: sent/stored/delivered/read; incoming: shown
    payload   TEXT,            -- outgoing mail not yet stored: the sealed text to resend
    UNIQUE (partner, outgoing, msg_id)
);
CREATE INDEX IF NOT EXISTS messages_by_partner ON messages (partner, rowid);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    partner: str
    outgoing: bool
    text: str
    at: float
    state: str
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class PendingMail:
    partner: str
    msg_id: str
    payload: str  # UNSEALED: not sealed yet (waiting for the partner's prekeys)
    text: str
    at: float


#: The payload of mail kept to send but not sealed yet.
UNSEALED = ""


class History:
    """One user's history; ``None`` path keeps it in memory (library use, tests)."""

    def __init__(self, data_dir: Path | None) -> None:
        path = ":memory:" if data_dir is None else str(data_dir / HISTORY_FILE)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Rows up to this one come from earlier runs; the later ones were shown in
        # this run as they were recorded (rows are never deleted, so rowids grow).
        (self._run_start,) = self._db.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM messages"
        ).fetchone()

    def add_incoming(self, partner: str, text: str, at: float, msg_id: str | None = None) -> bool:
        """Record a received message; False if this mail id was recorded before."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO messages(partner, outgoing, text, at, msg_id, state)"
            " VALUES (?, 0, ?, ?, ?, 'shown')",
            (partner, text, at, msg_id),
        )
        return cur.rowcount == 1

    def knows_incoming(self, partner: str, msg_id: str) -> bool:
        """Whether mail ``msg_id`` from ``partner`` was recorded already."""
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE partner = ? AND outgoing = 0 AND msg_id = ?",
            (partner, msg_id),
        ).fetchone()
        return row is not None

    def set_payload(self, partner: str, msg_id: str, payload: str) -> None:
        """Mail kept :data:`UNSEALED` is sealed now: this is what to (re)send."""
        self._db.execute(
            "UPDATE messages SET payload = ?"
            " WHERE partner = ? AND outgoing = 1 AND msg_id = ? AND state = 'sent'",
            (payload, partner, msg_id),
        )

    def add_outgoing(
        self,
        partner: str,
        text: str,
        at: float,
        msg_id: str | None = None,
        payload: str | None = None,
    ) -> None:
        # A message first sent on a live path may later go to the mailbox under
        # the same id (its partner left): it then gets the payload to resend.
        self._db.execute(
            "INSERT INTO messages(partner, outgoing, text, at, msg_id, state, payload)"
            " VALUES (?, 1, ?, ?, ?, 'sent', ?)"
            " ON CONFLICT(partner, outgoing, msg_id) DO UPDATE SET payload = excluded.payload"
            " WHERE state = 'sent'",
            (partner, text, at, msg_id, payload),
        )

    def advance(self, partner: str, msg_id: str, state: str) -> bool:
        """Move a sent message forward to ``state``; False if it was there already
        (or further, or unknown)."""
        earlier = STATES[: STATES.index(state)]
        if not earlier:
            return False
        # One statement (it runs for every acknowledged message): the row moves
        # only from a state before ``state``.
        cur = self._db.execute(
            "UPDATE messages SET state = ?, payload = NULL"
            " WHERE partner = ? AND outgoing = 1 AND msg_id = ?"
            f" AND state IN ({', '.join('?' * len(earlier))})",
            (state, partner, msg_id, *earlier),
        )
        return cur.rowcount == 1

    def give_up(self, partner: str, msg_id: str) -> None:
        """The server refused this mail for good: stop sending it, and say so."""
        self._db.execute(
            "UPDATE messages SET state = 'refused', payload = NULL"
            " WHERE partner = ? AND outgoing = 1 AND msg_id = ? AND state = 'sent'",
            (partner, msg_id),
        )

    def state_of(self, partner: str, msg_id: str) -> str | None:
        row = self._db.execute(
            "SELECT state FROM messages WHERE partner = ? AND outgoing = 1 AND msg_id = ?",
            (partner, msg_id),
        ).fetchone()
        return row[0] if row else None

    def pending_mail(self) -> list[PendingMail]:
        """Outgoing mail the server has not confirmed storing (to send again)."""
        rows = self._db.execute(
            "SELECT partner, msg_id, payload, text, at FROM messages"
            " WHERE outgoing = 1 AND state = 'sent' AND payload IS NOT NULL ORDER BY rowid"
        ).fetchall()
        return [PendingMail(*r) for r in rows]

    def last(self, partner: str, n: int, before_this_run: bool = False) -> list[Entry]:
        """The last ``n`` messages with ``partner``, oldest first; with
        ``before_this_run``, only those recorded before this History was opened
        (the context for a reopened conversation: nothing this run showed)."""
        rows = self._db.execute(
            "SELECT partner, outgoing, text, at, state, msg_id FROM messages"
            " WHERE partner = ? AND rowid <= ? ORDER BY rowid DESC LIMIT ?",
            (partner, self._run_start if before_this_run else _MAX_ROWID, n),
        ).fetchall()
        return [Entry(p, bool(o), t, a, s, m) for p, o, t, a, s, m in reversed(rows)]

    def close(self) -> None:
        self._db.close()
