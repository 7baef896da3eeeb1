"""Where the rendezvous keeps what must survive a restart.

:class:`Store` is the small interface the domain uses; :class:`SqliteStore`
is the embedded default (one file, WAL journal). Calls are synchronous and
short: single-row reads and writes on an indexed table.

The mailbox (:mod:`rendezvous.mailbox`) keeps its messages and receipts in the
same file, behind :class:`MailStore` (:class:`SqliteMailStore`). Durability:
the connection runs ``synchronous=NORMAL`` (in WAL mode a commit survives a
crash of the process, SIGKILL included, but the last ones may roll back if
the machine loses power); a *durable* transaction -- the one behind a
``Servidor[STORED]`` answer -- switches to ``synchronous=FULL`` for its commit,
which also survives a power cut. Everything else the mailbox writes (acks,
receipts, purges) may be lost that way without harm: the message is then
delivered again, and its id makes the second copy a duplicate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rendezvous.lookalike import skeleton

SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    pw_hash     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    last_ip     TEXT,
    last_port   INTEGER,
    last_seen   REAL,
    pubkey      TEXT,
    skeleton    TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- The mailbox (schema version 3). One row per stored message, in store order
-- (seq is AUTOINCREMENT: never reused, so "seq > cursor" never skips a row).
-- An acknowledged message keeps its row, without its body, until it expires:
-- a sender's retry of the same id is then recognised, and a late "read:" too.
CREATE TABLE IF NOT EXISTS mail (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL COLLATE NOCASE,
    sender     TEXT NOT NULL COLLATE NOCASE,
    msg_id     TEXT NOT NULL,
    stamp      INTEGER NOT NULL,            -- Unix seconds when stored
    size       INTEGER NOT NULL,            -- bytes of body (UTF-8)
    state      INTEGER NOT NULL DEFAULT 0,  -- 0 waiting, 1 delivered, 2 read
    body       TEXT,                        -- NULL once delivered
    UNIQUE (sender, msg_id)
);
CREATE INDEX IF NOT EXISTS mail_waiting ON mail(recipient, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS mail_stamp ON mail(stamp);
-- Waiting messages and bytes per recipient (the quota), kept by triggers in
-- the same transactions as the rows, so they can never disagree.
CREATE TABLE IF NOT EXISTS mail_usage (
    recipient  TEXT PRIMARY KEY COLLATE NOCASE,
    count      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS mail_usage_add AFTER INSERT ON mail WHEN NEW.state = 0 BEGIN
    INSERT INTO mail_usage(recipient, count, bytes) VALUES (NEW.recipient, 1, NEW.size)
        ON CONFLICT(recipient) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS mail_usage_done AFTER UPDATE OF state ON mail
    WHEN OLD.state = 0 AND NEW.state != 0 BEGIN
    UPDATE mail_usage SET count = count - 1, bytes = bytes - OLD.size
        WHERE recipient = OLD.recipient;
END;
CREATE TRIGGER IF NOT EXISTS mail_usage_drop AFTER DELETE ON mail WHEN OLD.state = 0 BEGIN
    UPDATE mail_usage SET count = count - 1, bytes = bytes - OLD.size
        WHERE recipient = OLD.recipient;
END;
-- Receipts for senders (DELIVERED, READ, EXPIRED), kept until acknowledged.
CREATE TABLE IF NOT EXISTS receipts (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    owner   TEXT NOT NULL COLLATE NOCASE,  -- the message's sender: gets the receipt
    peer    TEXT NOT NULL COLLATE NOCASE,  -- the message's recipient
    msg_id  TEXT NOT NULL,
    flag    TEXT NOT NULL,
    stamp   INTEGER NOT NULL,
    UNIQUE (owner, peer, msg_id, flag)
);
CREATE INDEX IF NOT EXISTS receipts_owner ON receipts(owner, seq);
CREATE INDEX IF NOT EXISTS receipts_stamp ON receipts(stamp);

-- Resume tokens kept across a graceful restart (schema version 4): written at
-- shutdown, read back and deleted at start-up. Only BLAKE2b digests of the
-- tokens: the file does not let anyone in.
CREATE TABLE IF NOT EXISTS resume_tokens (
    name     TEXT PRIMARY KEY COLLATE NOCASE,
    digest   BLOB NOT NULL,
    source   TEXT NOT NULL,    -- the address the token is bound to
    expires  REAL NOT NULL     -- Unix seconds
);
-- Prekeys for mail with forward secrecy (chathack/prekeys.py), as their
-- owners published them (public halves, in their wire form): one signed
-- prekey per user, and one-time prekeys, each handed out once and deleted.
CREATE TABLE IF NOT EXISTS signed_prekeys (
    name     TEXT PRIMARY KEY COLLATE NOCASE,
    prekey   TEXT NOT NULL     -- ID:PUBLIC:SIGNATURE
);
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    name     TEXT NOT NULL COLLATE NOCASE,
    id       INTEGER NOT NULL,
    prekey   TEXT NOT NULL,    -- ID:PUBLIC
    PRIMARY KEY (name, id)
);
"""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    pw_hash: str
    created_at: float
    last_ip: str | None = None
    last_port: int | None = None
    last_seen: float | None = None
    pubkey: str | None = None  # the user's identity key (base64 Ed25519), once registered


class Store(Protocol):
    mail: MailStore

    def get_account(self, name: str) -> Account | None: ...
    def create_account(self, name: str, pw_hash: str, now: float) -> Account: ...
    def find_lookalike(self, name: str) -> str | None: ...
    def set_password_hash(self, name: str, pw_hash: str) -> None: ...
    def record_login(self, name: str, ip: str, now: float) -> None: ...
    def record_port(self, name: str, port: int) -> None: ...
    def record_seen(self, name: str, now: float) -> None: ...
    def set_pubkey(self, name: str, pubkey: str) -> None: ...
    def list_accounts(self, limit: int) -> list[Account]: ...
    def count_accounts(self) -> int: ...
    def save_tokens(self, tokens: list[SavedToken]) -> None: ...
    def take_tokens(self) -> list[SavedToken]: ...
    def set_signed_prekey(self, name: str, prekey: str) -> None: ...
    def signed_prekey(self, name: str) -> str | None: ...
    def add_one_time_prekeys(self, name: str, prekeys: list[tuple[int, str]], cap: int) -> int: ...
    def take_one_time_prekeys(self, name: str, n: int) -> tuple[list[str], int]: ...
    def drop_prekeys(self, name: str) -> None: ...
    def close(self) -> None: ...


#: A resume token as kept across a restart: (name, digest, source, expires in Unix seconds).
SavedToken = tuple[str, bytes, str, float]


class StoreError(Exception):
    """The database could not be opened or written: check the --db path and its permissions."""


class SqliteStore:
    """The embedded default :class:`Store`: one SQLite file.

    ``mail_sync`` is the ``synchronous`` level of a durable mailbox commit:
    ``"FULL"`` (the default; survives a power cut) or ``"NORMAL"`` (survives
    a crash of the process only; several times faster).
    """

    def __init__(self, path: str | Path, *, mail_sync: str = "FULL") -> None:
        if mail_sync not in ("FULL", "NORMAL"):
            raise ValueError(f"mail_sync must be FULL or NORMAL, not {mail_sync!r}")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"Cannot open the database {self.path}: {e}") from e
        if self.path != ":memory:":
            # One made by an older version under umask 022 was readable by all.
            for suffix in ("", "-wal", "-shm"):
                with suppress(OSError):
                    Path(self.path + suffix).chmod(0o600)
        self.mail = SqliteMailStore(self._db, durable_sync=mail_sync, base_sync="NORMAL")

    def _migrate(self) -> None:
        """Bring a database from an older version up to :data:`SCHEMA_VERSION`."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(accounts)")}
        if "pubkey" not in columns:  # version 1 -> 2
            self._db.execute("ALTER TABLE accounts ADD COLUMN pubkey TEXT")
        if "skeleton" not in columns:  # version 4 -> 5: look-alike names
            self._db.execute("ALTER TABLE accounts ADD COLUMN skeleton TEXT")
        names = [r[0] for r in self._db.execute("SELECT name FROM accounts WHERE skeleton IS NULL")]
        for name in names:
            self._db.execute(
                "UPDATE accounts SET skeleton = ? WHERE name = ?", (skeleton(name), name)
            )
        self._db.execute("CREATE INDEX IF NOT EXISTS accounts_skeleton ON accounts(skeleton)")
        # 2 -> 3: the mailbox tables, 3 -> 4: resume_tokens, 5 -> 6: the prekey
        # tables; all created by _SCHEMA (CREATE ... IF NOT EXISTS).
        self._db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )

    def _row(self, row: tuple | None) -> Account | None:
        return Account(*row) if row else None

    def get_account(self, name: str) -> Account | None:
        cur = self._db.execute(
            "SELECT name, pw_hash, created_at, last_ip, last_port, last_seen, pubkey"
            " FROM accounts WHERE name = ?",
            (name,),
        )
        return self._row(cur.fetchone())

    def create_account(self, name: str, pw_hash: str, now: float) -> Account:
        self._db.execute(
            "INSERT INTO accounts(name, pw_hash, created_at, last_seen, skeleton)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, pw_hash, now, now, skeleton(name)),
        )
        return Account(name, pw_hash, now, last_seen=now)

    def find_lookalike(self, name: str) -> str | None:
        """A registered name that reads like ``name`` (and is not it), if any."""
        row = self._db.execute(
            "SELECT name FROM accounts WHERE skeleton = ? AND name != ? LIMIT 1",
            (skeleton(name), name),
        ).fetchone()
        return str(row[0]) if row else None

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

    def set_pubkey(self, name: str, pubkey: str) -> None:
        self._db.execute("UPDATE accounts SET pubkey = ? WHERE name = ?", (pubkey, name))

    def list_accounts(self, limit: int) -> list[Account]:
        cur = self._db.execute(
            "SELECT name, pw_hash, created_at, last_ip, last_port, last_seen, pubkey"
            " FROM accounts ORDER BY last_seen DESC, name LIMIT ?",
            (limit,),
        )
        return [Account(*r) for r in cur.fetchall()]

    def count_accounts(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    def save_tokens(self, tokens: list[SavedToken]) -> None:
        """Keep these resume tokens for the next start (replacing any kept before)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM resume_tokens")
            self._db.executemany(
                "INSERT OR REPLACE INTO resume_tokens(name, digest, source, expires)"
                " VALUES (?, ?, ?, ?)",
                tokens,
            )

    def take_tokens(self) -> list[SavedToken]:
        """The kept resume tokens, forgotten by the database as they are read."""
        with self._db:
            self._db.execute("BEGIN")
            rows = self._db.execute(
                "SELECT name, digest, source, expires FROM resume_tokens"
            ).fetchall()
            self._db.execute("DELETE FROM resume_tokens")
        return [(str(n), bytes(d), str(src), float(e)) for n, d, src, e in rows]

    # ------------------------------------------------------------ prekeys
    def set_signed_prekey(self, name: str, prekey: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO signed_prekeys(name, prekey) VALUES (?, ?)", (name, prekey)
        )

    def signed_prekey(self, name: str) -> str | None:
        row = self._db.execute("SELECT prekey FROM signed_prekeys WHERE name = ?", (name,))
        found = row.fetchone()
        return str(found[0]) if found else None

    def add_one_time_prekeys(self, name: str, prekeys: list[tuple[int, str]], cap: int) -> int:
        """Keep ``prekeys`` (id, wire form) for ``name`` up to ``cap`` in all (an
        id already held is kept as it was); how many are held now."""
        with self._db:
            self._db.execute("BEGIN")
            held = self._count_one_time(name)
            for prekey_id, prekey in prekeys[: max(0, cap - held)]:
                self._db.execute(
                    "INSERT OR IGNORE INTO one_time_prekeys(name, id, prekey) VALUES (?, ?, ?)",
                    (name, prekey_id, prekey),
                )
            return self._count_one_time(name)

    def take_one_time_prekeys(self, name: str, n: int) -> tuple[list[str], int]:
        """Up to ``n`` of ``name``'s one-time prekeys, deleted as they are
        handed out (each goes to one sender only); and how many are left."""
        with self._db:
            self._db.execute("BEGIN")
            rows = self._db.execute(
                "SELECT id, prekey FROM one_time_prekeys WHERE name = ? ORDER BY id LIMIT ?",
                (name, n),
            ).fetchall()
            self._db.executemany(
                "DELETE FROM one_time_prekeys WHERE name = ? AND id = ?",
                [(name, r[0]) for r in rows],
            )
            return [str(r[1]) for r in rows], self._count_one_time(name)

    def _count_one_time(self, name: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM one_time_prekeys WHERE name = ?", (name,))
        return int(row.fetchone()[0])

    def drop_prekeys(self, name: str) -> None:
        """A new identity key: prekeys signed by the old one are worthless."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM signed_prekeys WHERE name = ?", (name,))
            self._db.execute("DELETE FROM one_time_prekeys WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------
# The mailbox's storage
# --------------------------------------------------------------------------

#: ``mail.state`` values.
WAITING, DELIVERED, READ = 0, 1, 2


@dataclass(frozen=True, slots=True)
class StoredMail:
    seq: int
    recipient: str
    sender: str
    msg_id: str
    stamp: int
    state: int
    body: str | None = None  # only filled in by :meth:`MailStore.waiting`


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    seq: int
    owner: str
    peer: str
    msg_id: str
    flag: str
    stamp: int


class MailStore(Protocol):
    """What the mailbox needs from storage. Writes happen inside
    :meth:`transaction`; names are canonical account names."""

    def transaction(self, durable: bool = False) -> AbstractContextManager[None]: ...
    def find(self, sender: str, msg_id: str) -> StoredMail | None: ...
    def usage(self, recipient: str) -> tuple[int, int]: ...
    def add(self, recipient: str, sender: str, msg_id: str, body: str, stamp: int) -> int: ...
    def waiting(self, recipient: str, after: int, limit: int) -> list[StoredMail]: ...
    def set_state(self, seq: int, state: int) -> None: ...
    def add_receipt(self, owner: str, peer: str, msg_id: str, flag: str, stamp: int) -> None: ...
    def receipts(self, owner: str, after: int, limit: int) -> list[StoredReceipt]: ...
    def drop_receipt(self, owner: str, peer: str, msg_id: str, flag: str) -> None: ...
    def expired(self, before: int, limit: int) -> list[StoredMail]: ...
    def delete(self, seq: int) -> None: ...
    def forget_before(self, before: int, limit: int) -> int: ...
    def waiting_from(self, sender: str) -> list[tuple[str, int]]: ...


_MAIL_COLS = "seq, recipient, sender, msg_id, stamp, state"


class SqliteMailStore:
    """:class:`MailStore` on the :class:`SqliteStore`'s connection (same file)."""

    def __init__(
        self, db: sqlite3.Connection, *, durable_sync: str = "FULL", base_sync: str = "NORMAL"
    ) -> None:
        self._db = db
        self.durable_sync = durable_sync
        self.base_sync = base_sync

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if
        it raises. ``durable``: the commit is ``synchronous=FULL`` (or whatever
        ``durable_sync`` says) -- when this returns, the rows are on disk.
        """
        db = self._db
        try:
            if durable:
                self._set_sync(True)
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            self._abandon()
            raise StoreError(f"The mailbox could not be written: {e}") from e
        finally:
            if durable:
                self._set_sync(False)

    def _abandon(self) -> None:
        if self._db.in_transaction:
            with suppress(sqlite3.Error):  # SQLite may have rolled back by itself
                self._db.execute("ROLLBACK")

    def _set_sync(self, durable: bool) -> None:
        if self.durable_sync != self.base_sync:
            level = self.durable_sync if durable else self.base_sync
            self._db.execute(f"PRAGMA synchronous={level}")

    def find(self, sender: str, msg_id: str) -> StoredMail | None:
        row = self._db.execute(
            f"SELECT {_MAIL_COLS} FROM mail WHERE sender = ? AND msg_id = ?", (sender, msg_id)
        ).fetchone()
        return StoredMail(*row) if row else None

    def usage(self, recipient: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT count, bytes FROM mail_usage WHERE recipient = ?", (recipient,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def depth(self) -> tuple[int, int]:
        """Messages waiting for their recipients, and their bytes, in all."""
        row = self._db.execute("SELECT SUM(count), SUM(bytes) FROM mail_usage").fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def add(self, recipient: str, sender: str, msg_id: str, body: str, stamp: int) -> int:
        cur = self._db.execute(
            "INSERT INTO mail(recipient, sender, msg_id, stamp, size, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (recipient, sender, msg_id, stamp, len(body.encode("utf-8")), body),
        )
        return int(cur.lastrowid or 0)

    def waiting(self, recipient: str, after: int, limit: int) -> list[StoredMail]:
        cur = self._db.execute(
            f"SELECT {_MAIL_COLS}, body FROM mail"
            " WHERE recipient = ? AND state = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (recipient, after, limit),
        )
        return [StoredMail(*r) for r in cur.fetchall()]

    def set_state(self, seq: int, state: int) -> None:
        self._db.execute("UPDATE mail SET state = ?, body = NULL WHERE seq = ?", (state, seq))

    def add_receipt(self, owner: str, peer: str, msg_id: str, flag: str, stamp: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO receipts(owner, peer, msg_id, flag, stamp)"
            " VALUES (?, ?, ?, ?, ?)",
            (owner, peer, msg_id, flag, stamp),
        )

    def receipts(self, owner: str, after: int, limit: int) -> list[StoredReceipt]:
        cur = self._db.execute(
            "SELECT seq, owner, peer, msg_id, flag, stamp FROM receipts"
            " WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?",
            (owner, after, limit),
        )
        return [StoredReceipt(*r) for r in cur.fetchall()]

    def drop_receipt(self, owner: str, peer: str, msg_id: str, flag: str) -> None:
        self._db.execute(
            "DELETE FROM receipts WHERE owner = ? AND peer = ? AND msg_id = ? AND flag = ?",
            (owner, peer, msg_id, flag),
        )

    def expired(self, before: int, limit: int) -> list[StoredMail]:
        cur = self._db.execute(
            f"SELECT {_MAIL_COLS} FROM mail WHERE stamp < ? AND state = 0 ORDER BY stamp LIMIT ?",
            (before, limit),
        )
        return [StoredMail(*r) for r in cur.fetchall()]

    def delete(self, seq: int) -> None:
        self._db.execute("DELETE FROM mail WHERE seq = ?", (seq,))

    def forget_before(self, before: int, limit: int) -> int:
        """Drop up to ``limit`` delivered messages' rows, and as many receipts,
        older than ``before``; return how many rows went."""
        n = self._db.execute(
            "DELETE FROM mail WHERE seq IN"
            " (SELECT seq FROM mail WHERE stamp < ? AND state != 0 LIMIT ?)",
            (before, limit),
        ).rowcount
        n += self._db.execute(
            "DELETE FROM receipts WHERE seq IN (SELECT seq FROM receipts WHERE stamp < ? LIMIT ?)",
            (before, limit),
        ).rowcount
        return n

    def waiting_from(self, sender: str) -> list[tuple[str, int]]:
        """(recipient, messages) for the messages ``sender`` has waiting."""
        cur = self._db.execute(
            "SELECT recipient, COUNT(*) FROM mail WHERE sender = ? AND state = 0"
            " GROUP BY recipient ORDER BY COUNT(*) DESC, recipient",
            (sender,),
        )
        return [(str(r[0]), int(r[1])) for r in cur.fetchall()]
