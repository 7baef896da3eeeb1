"""Harnesses for the rendezvous: the per-line pipeline of logged-in
sessions into the :class:`~rendezvous.hub.Hub`, and rows read back from its
SQLite store by the mailbox.

Sans-IO, as in ``tests/test_hub.py``: sessions write into recording
outboxes, the store is a real :class:`SqliteStore` in memory, ``now`` is a
number. The login dialogue (argon2 in threads) is the I/O layer's and is
not driven here: sessions are attached as the login code attaches them.
"""

from __future__ import annotations

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    RECEIPT_FLAGS,
    Command,
    LineBuffer,
    MailKey,
    Password,
    ServerLine,
    parse_client_line,
    parse_mail,
    parse_mail_key,
)
from chathack.text import neutralise
from rendezvous.hub import Hub, Session
from rendezvous.store import SqliteStore
from tests.fuzz.contract import Cursor, check_server_output

#: Most operations one input drives (a bound on every harness loop).
MAX_STEPS = 64
#: Registered users: the longest name a user may have is among them, so
#: lines that carry a name run as long as they can.
USERS = ("alice", "bob", "carol", "d" * 32)
KEY = "mSOZnc9v2fqURD+yaLj6K3Xkz0JoPK4vP6hsu1dxMhM="
START = 1_800_000_000.0


class _Outbox:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def send(self, data: bytes, lines: int = 1) -> None:
        assert isinstance(data, bytes)
        self.data += data

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


class _Client:
    """One connection as the server's reader sees it."""

    def __init__(self, hub: Hub, name: str, now: float, n: int) -> None:
        self.outbox = _Outbox()
        self.session = Session(self.outbox, f"198.51.100.{n}", 40000 + n)
        self.buf = LineBuffer()
        self.ended = False
        account = hub.store.get_account(name)
        assert account is not None
        hub.attach(self.session, account, now)
        hub.after_login(self.session, now)


def _hub() -> Hub:
    store = SqliteStore(":memory:", mail_sync="NORMAL")
    for name in USERS:
        store.create_account(name, "hash", START - 1000)
    store.set_pubkey("carol", KEY)
    return Hub(store)


def hub_lines(data: bytes) -> None:
    """Bytes from logged-in clients through the server's per-line pipeline.

    Operations: bytes from a client (a line or a piece of one), the clock
    jumping (mail expiry), a user logging in again from a new connection,
    or the connection ending. Each read is handled as
    :meth:`rendezvous.server.Server._read_lines` handles it: framed, parsed
    (a bad line answered ``Servidor[ERROR]``), handed to :meth:`Hub.handle`,
    the mail of one read committed together.

    Contract: nothing raises; every client only ever receives whole lines
    that it accepts (no longer than MAX_LINE_BYTES), that parse as server
    lines and whose text is neutralised; the hub's bookkeeping stays
    consistent (who is online, who talks to whom).
    """
    cur = Cursor(data)
    hub = _hub()
    now = START
    clients = [_Client(hub, name, now, i) for i, name in enumerate(USERS[:2])]
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        op = cur.below(8)
        if op == 6:
            now += cur.uint(4)
            hub.purge(now)
        elif op == 7:
            n = len(clients)
            clients.append(_Client(hub, cur.pick(USERS), now, n))
        else:
            client = clients[cur.below(len(clients))]
            if client.session.closed:
                continue
            if op == 5:
                _end(hub, client, now)
            elif op == 4:
                _read(hub, client, cur.block(), now)  # long, and maybe not a whole line
            else:
                _read(hub, client, cur.chunk() + b"\n", now)
        for c in clients:
            if c.session.closed and not c.ended:
                _end(hub, c, now)  # kicked by a newer login: its connection ends
            check_server_output(c.outbox.take())
        _check_hub(hub)


def _read(hub: Hub, client: _Client, data: bytes, now: float) -> None:
    """One read's worth of bytes, handled as the server's reader handles it."""
    session = client.session
    client.buf.receive_data(data)
    hub.mailbox.begin_group()
    try:
        for _ in range(len(data) + 1):
            if session.closed:
                break
            try:
                line = client.buf.next_line()
                if line is None:
                    break
                event = parse_client_line(line)
            except RemoteProtocolError as e:
                session.say("ERROR", str(e))
                continue
            if session.passwd_step is not None and isinstance(event, Password):
                session.passwd_step = None  # the login code answers (argon2: not driven here)
                continue
            hub.handle(session, event, now)
    finally:
        hub.mailbox.commit_group()
    if session.closed:
        _end(hub, client, now)


def _end(hub: Hub, client: _Client, now: float) -> None:
    """The connection ends, as the server ends it (``finally`` in _serve_transport)."""
    client.ended = True
    client.session.close()
    hub.detach(client.session, now)


def _check_hub(hub: Hub) -> None:
    for key, session in hub.online.items():
        assert session.name is not None and session.name.lower() == key
        assert not session.closed, f"{key} is online on a closed session"
        for partner in session.partners:
            assert partner == partner.lower()
        if session.current is not None:
            assert session.current.lower() in session.partners, (
                f"{key} talks to {session.current}, not a partner {sorted(session.partners)}"
            )


# --------------------------------------------------------------------------
# Stored rows
# --------------------------------------------------------------------------


def stored_rows(data: bytes) -> None:
    """What the mailbox stores, read back from SQLite and delivered.

    First, mail as the network stores it: ``mail:`` lines from alice for
    bob (offline) with any id and text, handled by the hub; bob then logs
    in, gets ``Servidor[MAIL]`` lines and acknowledges some; alice gets the
    receipts. Contract: bob receives exactly the mails alice was told were
    STORED, each once, with the same id and text (round trip through SQLite
    and the MAIL line); alice's receipts name only mails bob acknowledged.

    Then hostile rows written straight into the tables: any names, ids,
    texts (control characters, line breaks, bidi overrides) and stamps,
    within what the code itself keeps true of a row (its declared types, a
    waiting row has a body, a receipt flag is a receipt flag) -- rows an
    older version, a restore or a hand edit could leave. Contract: logging
    in, delivery, expiry, ``::mailbox`` and ``::users`` raise nothing and
    every line sent is well formed and neutralised.
    """
    cur = Cursor(data)
    hub = _hub()
    now = START
    alice = _Client(hub, "alice", now, 1)
    stored: dict[str, str] = {}
    for _ in range(cur.below(6)):
        msg_id, text = cur.text(), cur.text()
        try:
            event = parse_client_line(f"mail: {cur.pick(('bob', 'BOB', 'eve'))} {msg_id} {text}")
        except RemoteProtocolError:
            continue
        hub.mailbox.begin_group()
        hub.handle(alice.session, event, now)
        hub.mailbox.commit_group()
        for line in check_server_output(alice.outbox.take()):
            if isinstance(line, ServerLine) and line.flag == "STORED":
                key = parse_mail_key(line.text)
                stored.setdefault(key.msg_id, event.text)  # type: ignore[union-attr]
    now += 60
    bob = _Client(hub, "bob", now, 2)
    got: dict[str, str] = {}
    for line in check_server_output(bob.outbox.take()):
        assert isinstance(line, ServerLine) and line.flag == "MAIL", f"unexpected {line!r}"
        item = parse_mail(line.text)
        assert item.origin == "alice" and item.msg_id not in got
        got[item.msg_id] = item.text
    # What the server stored comes back as it was, neutralised by the MAIL line.
    expected = {msg_id: neutralise(text) for msg_id, text in stored.items()}
    assert got == expected, f"stored {expected!r}, delivered {got!r}"
    acked = [MailKey("alice", i) for i in got if cur.flag()]
    if acked:
        hub.mailbox.ack(bob.session, acked, now)
    receipts = set()
    for line in check_server_output(alice.outbox.take()):
        assert isinstance(line, ServerLine) and line.flag == "DELIVERED", f"unexpected {line!r}"
        receipts.add(parse_mail_key(line.text))
    assert receipts == {MailKey("bob", k.msg_id) for k in acked}
    _hostile_rows(cur, hub, now)


def _hostile_rows(cur: Cursor, hub: Hub, now: float) -> None:
    db = hub.store._db  # type: ignore[attr-defined]
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        match cur.below(3):
            case 0:
                state = cur.below(3)
                db.execute(
                    "INSERT OR IGNORE INTO mail"
                    "(recipient, sender, msg_id, stamp, size, state, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        cur.pick(("carol", "CAROL", "d" * 32, cur.text())),
                        cur.text(),
                        cur.text(),
                        int(now) - cur.uint(5),
                        cur.uint(3),
                        state,
                        cur.text() if state == 0 else None,
                    ),
                )
            case 1:
                db.execute(
                    "INSERT OR IGNORE INTO receipts(owner, peer, msg_id, flag, stamp)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        cur.pick(("carol", "alice", cur.text())),
                        cur.text(),
                        cur.text(),
                        cur.pick(RECEIPT_FLAGS),
                        int(now) - cur.uint(5),
                    ),
                )
            case _:
                db.execute(
                    "INSERT OR IGNORE INTO accounts(name, pw_hash, created_at, last_seen, pubkey)"
                    " VALUES (?, 'hash', ?, ?, ?)",
                    (cur.text(), now, now - cur.uint(4), cur.text() if cur.flag() else None),
                )
    carol = _Client(hub, "carol", now, 3)
    for name in ("mailbox", "users"):
        hub.handle(carol.session, Command(name), now)
    check_server_output(carol.outbox.take())
    long_named = _Client(hub, "d" * 32, now, 4)
    check_server_output(long_named.outbox.take())
    now += 400 * 86400.0  # past every expiry: EXPIRED receipts to whoever is online
    hub.purge(now)
    hub.handle(carol.session, Command("mailbox"), now)
    for client in (carol, long_named):
        check_server_output(client.outbox.take())
