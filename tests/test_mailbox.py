"""The mailbox (store-and-forward): grammar, domain and storage.

Synchronous tests of :class:`rendezvous.hub.Hub` and its
:class:`~rendezvous.mailbox.Mailbox`, as in test_hub.py: sessions write into
a :class:`FakeOutbox`, the store is a real :class:`SqliteStore` (in memory,
or in a file when a test reopens it), and ``now`` is a plain number, so
expiry is tested with a fake clock. A few trio tests at the end run the real
I/O layer over memory streams. The restart and SIGKILL proofs with real
processes are in test_mailbox_durability.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    CLIENT_KEYWORDS,
    MAIL_ID_RE,
    MAX_LINE_BYTES,
    MAX_STAMP_DIGITS,
    NAME_RE,
    RECEIPT_FLAGS,
    Command,
    Mail,
    MailAck,
    MailItem,
    MailKey,
    MailRead,
    Receipt,
    ReceiptAck,
    Refusal,
    ServerLine,
    Text,
    UserLine,
    format_client_event,
    format_mail,
    format_refusal,
    parse_client_line,
    parse_mail,
    parse_mail_key,
    parse_refusal,
)
from rendezvous.commands import COMMANDS, help_lines
from rendezvous.hub import Hub, Session
from rendezvous.mailbox import DAY, MailLimits
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Limits, Server
from rendezvous.store import SCHEMA_VERSION, SqliteStore, StoreError
from tests.helpers import LineClient
from tests.test_hub import FakeOutbox

# --------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------


def test_mail_lines_parse() -> None:
    assert parse_client_line("mail: bob m-1 hello  there ") == Mail("bob", "m-1", "hello  there")
    # TEXT is the server's to judge (the refusal can then name NAME and ID).
    assert parse_client_line("mail: bob m1") == Mail("bob", "m1", "")
    assert parse_client_line("ack: alice 1 carol x.y:z") == MailAck(
        (MailKey("alice", "1"), MailKey("carol", "x.y:z"))
    )
    assert parse_client_line("read:alice 1") == MailRead((MailKey("alice", "1"),))
    assert parse_client_line("receipt: DELIVERED bob 1 READ bob 1") == ReceiptAck(
        (Receipt("DELIVERED", "bob", "1"), Receipt("READ", "bob", "1"))
    )
    assert {"mail", "ack", "read", "receipt"} <= set(CLIENT_KEYWORDS)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("mail: bob", "Malformed line"),
        ("mail:", "Malformed line"),
        ("mail: bob b@d hi", "Invalid mail id"),
        ("mail: bob " + "x" * 65 + " hi", "Invalid mail id"),
        ("mail: Servidor m1 hi", "reserved"),
        ("ack: alice", "Malformed line"),
        ("ack:", "Malformed line"),
        ("ack: alice m1 bob", "Malformed line"),
        ("ack: al/ce m1", "Invalid user name"),
        ("read: alice m!", "Invalid mail id"),
        ("receipt: DELIVERED bob", "Malformed line"),
        ("receipt: SEEN bob m1", "Unknown receipt"),
        ("ack: " + "a 1 " * 1025, "at most 1024"),
    ],
)
def test_malformed_mail_lines_are_errors(line: str, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_client_line(line)


def test_other_casings_are_chat_text() -> None:
    assert parse_client_line("Mail: bob m1 hi") == Text("Mail: bob m1 hi")


names = st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: n.lower() != "servidor")
ids = st.from_regex(MAIL_ID_RE, fullmatch=True)
keys = st.builds(MailKey, names, ids)
texts = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=80).filter(
    lambda t: t.strip() == t and t
)
mail_events = st.one_of(
    st.builds(Mail, names, ids, texts),
    st.builds(MailAck, st.lists(keys, min_size=1, max_size=20).map(tuple)),
    st.builds(MailRead, st.lists(keys, min_size=1, max_size=20).map(tuple)),
    st.builds(
        ReceiptAck,
        st.lists(
            st.builds(Receipt, st.sampled_from(RECEIPT_FLAGS), names, ids), min_size=1, max_size=20
        ).map(tuple),
    ),
)


@given(mail_events)
def test_mail_events_round_trip(event: object) -> None:
    line = format_client_event(event).decode("utf-8")  # type: ignore[arg-type]
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert parse_client_line(line[:-1]) == event


@given(names, ids, st.integers(0, 10**MAX_STAMP_DIGITS - 1), texts)
def test_server_mail_payloads_round_trip(origin: str, msg_id: str, stamp: int, text: str) -> None:
    item = MailItem(origin, msg_id, stamp, text)
    assert parse_mail(format_mail(item)) == item
    assert parse_mail_key(f"{origin} {msg_id}") == MailKey(origin, msg_id)
    refusal = Refusal(MailKey(origin, msg_id), "full", text)
    assert parse_refusal(format_refusal(refusal)) == refusal


@pytest.mark.parametrize("text", ["", "alice m1 notanumber hi", "alice m1 5", "al!ce m1 5 hi"])
def test_malformed_mail_payloads(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_mail(text)


# --------------------------------------------------------------------------
# Domain helpers
# --------------------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def hub(store: SqliteStore) -> Hub:
    for name in ("alice", "bob", "carol"):
        store.create_account(name, "hash", 1.0)
    return Hub(store)


def login(hub: Hub, name: str, now: float = 100.0, *, deliver: bool = True) -> Session:
    """Attach a session as the I/O layer does; ``deliver``: and call after_login."""
    account = hub.store.get_account(name) or hub.store.create_account(name, "hash", now)
    session = Session(FakeOutbox(), "198.51.100.1")
    hub.attach(session, account, now)
    if deliver:
        hub.after_login(session, now)
    return session


def take(session: Session) -> list[ServerLine | UserLine]:
    assert isinstance(session.outbox, FakeOutbox)
    return session.outbox.take()


def lines(session: Session) -> list[tuple[str, str]]:
    out = []
    for line in take(session):
        assert isinstance(line, ServerLine), line
        out.append((line.flag, line.text))
    return out


def mails(session: Session) -> list[MailItem]:
    got = lines(session)
    assert all(flag == "MAIL" for flag, _ in got), got
    return [parse_mail(text) for _, text in got]


def mail(hub: Hub, sender: Session, to: str, msg_id: str, text: str, now: float = 100.0) -> str:
    """Send ``mail:``; return the one answer as ``FLAG text``."""
    hub.handle(sender, Mail(to, msg_id, text), now)
    [(flag, answer)] = [x for x in lines(sender) if x[0] in ("STORED", "REFUSED", "ERROR")]
    return f"{flag} {answer}"


def ack(hub: Hub, session: Session, *pairs: str, now: float = 200.0) -> None:
    hub.handle(session, MailAck(tuple(MailKey(*p.split()) for p in pairs)), now)


# --------------------------------------------------------------------------
# Storing and delivering
# --------------------------------------------------------------------------


def test_mail_for_an_offline_user_is_delivered_in_order_at_login(hub: Hub) -> None:
    alice = login(hub, "alice")
    for i in range(5):
        assert mail(hub, alice, "bob", f"m{i}", f"hello {i}", now=100 + i) == f"STORED bob m{i}"
    bob = login(hub, "bob", now=500)
    assert mails(bob) == [MailItem("alice", f"m{i}", 100 + i, f"hello {i}") for i in range(5)]


def test_mail_for_an_online_user_is_delivered_right_away(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    assert mail(hub, alice, "BOB", "m1", "hi") == "STORED BOB m1"  # the name as written
    assert mails(bob) == [MailItem("alice", "m1", 100, "hi")]


def test_no_mail_before_after_login_then_the_first_line_starts_delivery(hub: Hub) -> None:
    """MAIL must never come before the I/O layer's OK: it waits for after_login,
    or (an I/O layer that does not call it) for the session's first line."""
    alice = login(hub, "alice")
    mail(hub, alice, "bob", "m1", "hi")
    bob = login(hub, "bob", deliver=False)
    assert take(bob) == []
    mail(hub, alice, "bob", "m2", "again")
    assert take(bob) == []  # not started: m2 must not overtake m1
    hub.handle(bob, Command("ping", "x"), 200)
    assert lines(bob) == [
        ("MAIL", "alice m1 100 hi"),
        ("MAIL", "alice m2 100 again"),
        ("PONG", "x"),
    ]
    hub.after_login(bob, 200)  # late or twice: nothing more
    assert take(bob) == []


def test_a_replaced_or_closed_session_never_starts(hub: Hub) -> None:
    alice = login(hub, "alice")
    mail(hub, alice, "bob", "m1", "hi")
    old = login(hub, "bob", deliver=False)
    take(old)
    new = login(hub, "bob")
    hub.after_login(old, 300)  # too late: old was replaced (and closed)
    assert lines(old) == [("BYE", "You logged in again from 198.51.100.1; this session is closed")]
    assert not hub.mailbox.started(old)
    assert [m.msg_id for m in mails(new)] == ["m1"]


def test_storing_the_same_id_again_is_a_no_op_answered_stored(hub: Hub) -> None:
    alice = login(hub, "alice")
    assert mail(hub, alice, "bob", "m1", "once") == "STORED bob m1"
    assert mail(hub, alice, "bob", "m1", "once") == "STORED bob m1"
    bob = login(hub, "bob")
    assert [m.msg_id for m in mails(bob)] == ["m1"]
    ack(hub, bob, "alice m1")
    # Still recognised after delivery (the row is kept, without its text, until it expires).
    assert mail(hub, alice, "bob", "m1", "once") == "STORED bob m1"
    assert take(bob) == []
    # Ids are the sender's: bob may use m1 too.
    assert mail(hub, bob, "alice", "m1", "mine") == "STORED alice m1"


@pytest.mark.parametrize(
    ("to", "text", "answer"),
    [
        ("alice", "hi", "REFUSED alice m1 self: you cannot send mail to yourself"),
        ("zed", "hi", "REFUSED zed m1 unknown: there is no user named zed"),
        ("bob", "", "REFUSED bob m1 bad-text: empty message: there is nothing to store"),
        ("bob", "a\x1bb", "REFUSED bob m1 bad-text: control characters are not allowed"),
        ("bob", "x" * 12001, "REFUSED bob m1 too-big: the limit is 12000 characters"),
        ("bob", "\U0001f600" * 4090, "REFUSED bob m1 too-big: the MAIL line would exceed 16384"),
    ],
)
def test_refusals_name_the_message_and_why(hub: Hub, to: str, text: str, answer: str) -> None:
    alice = login(hub, "alice")
    assert mail(hub, alice, to, "m1", text).startswith(answer)
    assert hub.store.mail.find("alice", "m1") is None


def test_the_longest_mail_line_still_fits_a_peer_line_buffer(hub: Hub) -> None:
    alice = login(hub, "alice")
    text = "x" * 12000
    assert mail(hub, alice, "bob", "m" * 64, text) == f"STORED bob {'m' * 64}"
    bob = login(hub, "bob")
    assert isinstance(bob.outbox, FakeOutbox)
    assert len(bob.outbox.data) <= MAX_LINE_BYTES
    assert mails(bob)[0].text == text


def test_an_id_reused_for_another_recipient_is_refused(hub: Hub) -> None:
    alice = login(hub, "alice")
    mail(hub, alice, "bob", "m1", "for bob")
    assert mail(hub, alice, "carol", "m1", "for carol") == (
        "REFUSED carol m1 id-used: you used the id m1 for a message to bob"
    )


def test_quota_by_count_and_by_bytes(store: SqliteStore) -> None:
    for name in ("alice", "bob", "carol"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(quota_count=3, quota_bytes=10))
    alice, carol = login(hub, "alice"), login(hub, "carol")
    assert mail(hub, alice, "bob", "a1", "1234") == "STORED bob a1"
    assert mail(hub, carol, "bob", "c1", "123456") == "STORED bob c1"  # 10 bytes
    assert mail(hub, alice, "bob", "a2", "x").startswith(
        "REFUSED bob a2 full: the mailbox of bob is full (2 messages, 10 B)"
    )
    assert mail(hub, alice, "bob", "a1", "1234") == "STORED bob a1"  # a retry always succeeds
    bob = login(hub, "bob")
    assert len(mails(bob)) == 2
    ack(hub, bob, "carol c1")  # 4 bytes left
    assert mail(hub, alice, "bob", "a2", "x") == "STORED bob a2"
    assert mail(hub, alice, "bob", "a3", "y") == "STORED bob a3"
    assert mail(hub, alice, "bob", "a4", "z").startswith("REFUSED bob a4 full: ")  # 3 messages
    assert hub.store.mail.usage("bob") == (3, 6)


def test_flow_control_keeps_at_most_window_mail_lines_in_flight(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(window=3))
    alice = login(hub, "alice")
    for i in range(10):
        mail(hub, alice, "bob", f"m{i}", f"t{i}")
    bob = login(hub, "bob")
    assert [m.msg_id for m in mails(bob)] == ["m0", "m1", "m2"]
    ack(hub, bob, "alice m1")  # out of order is fine
    assert [m.msg_id for m in mails(bob)] == ["m3"]
    ack(hub, bob, "alice m0", "alice m2", "alice m3")  # several in one line
    assert [m.msg_id for m in mails(bob)] == ["m4", "m5", "m6"]
    mail(hub, alice, "bob", "new", "x")  # the window is full: it waits its turn
    assert take(bob) == []
    ack(hub, bob, "alice m4", "alice m5", "alice m6", "alice m7")  # m7: not sent yet, still fine
    assert [m.msg_id for m in mails(bob)] == ["m8", "m9", "new"]


def test_the_default_window_never_overflows_the_outbox(hub: Hub, store: SqliteStore) -> None:
    with store.mail.transaction():
        for i in range(2000):
            store.mail.add("bob", "alice", f"m{i}", "x", 100)
    bob = login(hub, "bob")
    got = mails(bob)
    assert len(got) == MailLimits().window == 256 and got[-1].msg_id == "m255"


def test_a_new_session_gets_every_unacknowledged_message_again_in_order(hub: Hub) -> None:
    alice = login(hub, "alice")
    for i in range(6):
        mail(hub, alice, "bob", f"m{i}", f"t{i}")
    bob = login(hub, "bob")
    assert len(mails(bob)) == 6
    ack(hub, bob, "alice m0", "alice m2", "alice m4")
    hub.detach(bob, 300)
    bob2 = login(hub, "bob", now=400)
    assert [m.msg_id for m in mails(bob2)] == ["m1", "m3", "m5"]
    # A second login while the first is still attached (roaming): same thing.
    bob3 = login(hub, "bob", now=500)
    assert [m.msg_id for m in mails(bob3)] == ["m1", "m3", "m5"]
    assert lines(bob2)[0][0] == "BYE"


def test_acks_for_unknown_or_other_peoples_messages_change_nothing(hub: Hub) -> None:
    alice, carol = login(hub, "alice"), login(hub, "carol")
    mail(hub, alice, "bob", "m1", "for bob")
    take(carol)
    ack(hub, carol, "alice m1", "alice nope", "zed m1")
    assert lines(carol) == []  # acks repeat; unknown ones are ignored silently
    bob = login(hub, "bob")
    assert [m.msg_id for m in mails(bob)] == ["m1"]
    ack(hub, bob, "alice m1")
    ack(hub, bob, "alice m1")  # twice: one DELIVERED
    assert lines(alice) == [("DELIVERED", "bob m1")]


# --------------------------------------------------------------------------
# Receipts
# --------------------------------------------------------------------------


def test_delivered_and_read_receipts_reach_an_online_sender(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    mail(hub, alice, "bob", "m1", "one")
    mail(hub, alice, "bob", "m2", "two")
    assert len(mails(bob)) == 2
    ack(hub, bob, "alice m1")
    assert lines(alice) == [("DELIVERED", "bob m1")]
    hub.handle(bob, MailRead((MailKey("alice", "m1"),)), 300)
    assert lines(alice) == [("READ", "bob m1")]
    # read: before ack: both receipts, in order.
    hub.handle(bob, MailRead((MailKey("alice", "m2"),)), 300)
    assert lines(alice) == [("DELIVERED", "bob m2"), ("READ", "bob m2")]
    hub.handle(bob, MailRead((MailKey("alice", "m2"),)), 300)  # again: nothing
    assert lines(alice) == []
    assert take(bob) == []  # read: and ack: get no answer


def test_receipts_wait_for_an_offline_sender_and_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    store = SqliteStore(db)
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store)
    alice = login(hub, "alice")
    mail(hub, alice, "bob", "m1", "one")
    mail(hub, alice, "bob", "m2", "two")
    hub.detach(alice, 150)
    bob = login(hub, "bob")
    mails(bob)
    ack(hub, bob, "alice m1", "alice m2")
    hub.handle(bob, MailRead((MailKey("alice", "m1"),)), 300)
    store.close()

    store = SqliteStore(db)  # a restart
    hub = Hub(store)
    alice = login(hub, "alice", now=400)
    expected = [("DELIVERED", "bob m1"), ("DELIVERED", "bob m2"), ("READ", "bob m1")]
    assert lines(alice) == expected
    # Not acknowledged: sent again at the next login ...
    hub.detach(alice, 410)
    alice = login(hub, "alice", now=420)
    assert lines(alice) == expected
    # ... until they are.
    hub.handle(
        alice,
        ReceiptAck((Receipt("DELIVERED", "bob", "m1"), Receipt("READ", "bob", "m1"))),
        430,
    )
    assert take(alice) == []
    hub.detach(alice, 440)
    alice = login(hub, "alice", now=450)
    assert lines(alice) == [("DELIVERED", "bob m2")]
    store.close()


def test_receipts_have_their_own_window(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(receipt_window=2))
    alice = login(hub, "alice")
    for i in range(4):
        mail(hub, alice, "bob", f"m{i}", "x")
    hub.detach(alice, 150)
    bob = login(hub, "bob")
    mails(bob)
    ack(hub, bob, *(f"alice m{i}" for i in range(4)))
    alice = login(hub, "alice", now=300)
    assert lines(alice) == [("DELIVERED", "bob m0"), ("DELIVERED", "bob m1")]
    hub.handle(alice, ReceiptAck((Receipt("DELIVERED", "bob", "m1"),)), 310)
    assert lines(alice) == [("DELIVERED", "bob m2")]


# --------------------------------------------------------------------------
# Expiry (a fake clock: now is a number)
# --------------------------------------------------------------------------


def test_expired_messages_are_dropped_and_their_senders_told(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(expiry=10 * DAY))
    t0 = 1_000_000.0
    alice = login(hub, "alice", now=t0)
    mail(hub, alice, "bob", "old", "x", now=t0)
    mail(hub, alice, "bob", "new", "y", now=t0 + 5 * DAY)
    hub.purge(t0 + 10 * DAY)  # exactly 10 days: not yet
    assert take(alice) == []
    hub.purge(t0 + 10 * DAY + 1)
    assert lines(alice) == [("EXPIRED", "bob old")]
    assert hub.store.mail.usage("bob") == (1, 1)
    bob = login(hub, "bob", now=t0 + 11 * DAY)
    assert [m.msg_id for m in mails(bob)] == ["new"]
    ack(hub, bob, "alice old")  # too late: ignored
    assert take(alice) == []


def test_expiry_spares_a_message_in_flight(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(expiry=DAY))
    alice = login(hub, "alice", now=0)
    mail(hub, alice, "bob", "m1", "x", now=0)
    bob = login(hub, "bob", now=10)
    assert len(mails(bob)) == 1  # in flight
    hub.purge(2 * DAY)
    assert take(alice) == []
    ack(hub, bob, "alice m1", now=2 * DAY)
    assert lines(alice) == [("DELIVERED", "bob m1")]


def test_purge_runs_by_itself_with_events_at_most_every_purge_every(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(expiry=100, purge_every=50))
    alice = login(hub, "alice", now=0)  # the first event purges (startup): nothing yet
    mail(hub, alice, "bob", "m1", "x", now=1)
    hub.handle(alice, Command("ping"), 102)  # the last purge was at 0: due since 50
    assert [f for f, _ in lines(alice)] == ["EXPIRED", "PONG"]
    mail(hub, alice, "bob", "m2", "x", now=103)
    hub.handle(alice, Command("ping"), 150)  # not due before 152
    assert [f for f, _ in lines(alice)] == ["PONG"]
    hub.handle(alice, Command("ping"), 204)
    assert [f for f, _ in lines(alice)] == ["EXPIRED", "PONG"]


def test_purge_works_off_a_large_backlog_in_batches(store: SqliteStore) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(expiry=10, purge_batch=100))
    with store.mail.transaction():
        for i in range(250):
            store.mail.add("bob", "alice", f"m{i}", "x", 0)
    assert hub.mailbox.purge(20) is True
    assert store.mail.usage("bob") == (150, 150)
    hub.purge(20)  # until done
    assert store.mail.usage("bob") == (0, 0)
    alice = login(hub, "alice", now=30)
    assert {t for f, t in lines(alice) if f == "EXPIRED"} == {f"bob m{i}" for i in range(128)}


def test_delivered_rows_are_forgotten_after_expiry_and_the_id_is_free_again(
    store: SqliteStore,
) -> None:
    for name in ("alice", "bob"):
        store.create_account(name, "hash", 1.0)
    hub = Hub(store, MailLimits(expiry=100))
    alice, bob = login(hub, "alice", now=0), login(hub, "bob", now=0)
    mail(hub, alice, "bob", "m1", "x", now=0)
    ack(hub, bob, "alice m1", now=1)
    hub.purge(50)
    assert store.mail.find("alice", "m1") is not None
    hub.purge(101)
    assert store.mail.find("alice", "m1") is None


# --------------------------------------------------------------------------
# ::mailbox, help, storage
# --------------------------------------------------------------------------


def test_mailbox_command_counts_both_ways(hub: Hub) -> None:
    alice, carol = login(hub, "alice"), login(hub, "carol")
    for i in range(3):
        mail(hub, alice, "bob", f"a{i}", "hello")
    mail(hub, alice, "carol", "a9", "hi")
    mail(hub, carol, "alice", "c1", "x" * 2000)
    take(carol)
    hub.handle(alice, Command("mailbox"), 200)
    assert lines(alice)[-1] == (
        "MAILBOX",
        "1 waiting for you (2.0 KiB); 4 of yours waiting: bob 3, carol 1",
    )
    assert "mailbox" in COMMANDS
    assert any(line.startswith("mail: NAME ID TEXT") for line in help_lines())


class BrokenMailStore:
    """Every write fails, as with a full disk."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def transaction(self, durable: bool = False) -> object:
        raise StoreError("disk I/O error")


def test_a_failed_write_is_refused_not_answered_stored(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    mail(hub, alice, "bob", "m1", "x")
    mails(bob)
    hub.mailbox.store = BrokenMailStore(hub.mailbox.store)  # type: ignore[assignment]
    assert mail(hub, alice, "bob", "m2", "x") == (
        "REFUSED bob m2 unavailable: the server could not store it; try again later"
    )
    ack(hub, bob, "alice m1")
    assert lines(bob) == [("ERROR", "The server could not record that; send it again later")]


class CountingMailStore:
    """The real store, counting its write transactions."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.transactions: list[bool] = []  # durable?

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def transaction(self, durable: bool = False) -> object:
        self.transactions.append(durable)
        return self._real.transaction(durable)  # type: ignore[attr-defined]


def test_a_group_of_mail_shares_one_durable_commit_and_answers_after_it(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob", deliver=False)
    counting = CountingMailStore(hub.mailbox.store)
    hub.mailbox.store = counting  # type: ignore[assignment]
    hub.mailbox.begin_group()
    for i in range(5):
        hub.handle(alice, Mail("bob", f"m{i}", f"text {i}"), 100.0)
    hub.handle(alice, Mail("bob", "m2", "text 2"), 100.0)  # a retry within the group
    hub.handle(alice, Mail("carol", "m3", "other"), 100.0)  # an id already used, in the group
    assert lines(alice) == [
        ("REFUSED", "carol m3 id-used: you used the id m3 for a message to bob")
    ]
    assert counting.transactions == []  # nothing committed, nothing promised yet
    assert hub.mailbox.store.find("alice", "m0") is None
    hub.mailbox.commit_group()
    assert counting.transactions == [True]  # one durable commit for the five
    assert lines(alice) == [("STORED", f"bob m{i}") for i in (0, 1, 2, 3, 4, 2)]
    hub.after_login(bob, 101.0)
    assert [m.msg_id for m in mails(bob)] == ["m0", "m1", "m2", "m3", "m4"]
    hub.mailbox.commit_group()  # no group open: nothing happens
    assert counting.transactions == [True]


def test_a_group_counts_its_own_mail_against_the_quota(store: SqliteStore) -> None:
    hub = Hub(store, MailLimits(quota_count=2))
    alice = login(hub, "alice")
    login(hub, "bob", deliver=False)
    hub.mailbox.begin_group()
    for i in range(3):
        hub.handle(alice, Mail("bob", f"m{i}", "x"), 100.0)
    refused = lines(alice)
    assert [flag for flag, _ in refused] == ["REFUSED"]
    assert refused[0][1].startswith("bob m2 full: the mailbox of bob is full (2 messages")
    hub.mailbox.commit_group()
    assert lines(alice) == [("STORED", "bob m0"), ("STORED", "bob m1")]
    assert store.mail.usage("bob") == (2, 2)


def test_a_failed_group_commit_refuses_every_mail_in_it(hub: Hub) -> None:
    alice = login(hub, "alice")
    hub.mailbox.store = BrokenMailStore(hub.mailbox.store)  # type: ignore[assignment]
    hub.mailbox.begin_group()
    hub.handle(alice, Mail("bob", "m1", "x"), 100.0)
    hub.handle(alice, Mail("bob", "m2", "y"), 100.0)
    hub.mailbox.commit_group()
    assert lines(alice) == [
        ("REFUSED", f"bob {i} unavailable: the server could not store it; try again later")
        for i in ("m1", "m2")
    ]


def test_a_rolled_back_transaction_leaves_nothing(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError), store.mail.transaction(durable=True):
        store.mail.add("bob", "alice", "m1", "x", 1)
        raise RuntimeError("boom")
    assert store.mail.find("alice", "m1") is None and store.mail.usage("bob") == (0, 0)
    with store.mail.transaction():  # and the connection is usable afterwards
        store.mail.add("bob", "alice", "m1", "x", 1)
    assert store.mail.usage("bob") == (1, 1)


def test_a_version_2_database_gains_the_mailbox(tmp_path: Path) -> None:
    db = tmp_path / "v2.sqlite3"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE accounts (name TEXT PRIMARY KEY COLLATE NOCASE, pw_hash TEXT NOT NULL,
            created_at REAL NOT NULL, last_ip TEXT, last_port INTEGER, last_seen REAL,
            pubkey TEXT);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '2');
        INSERT INTO accounts(name, pw_hash, created_at) VALUES ('bob', 'h', 1);
        """
    )
    con.close()
    store = SqliteStore(db)
    try:
        assert store.get_account("bob") is not None
        with store.mail.transaction(durable=True):
            store.mail.add("bob", "alice", "m1", "hi", 5)
        assert store.mail.usage("BOB") == (1, 2)
        [(version,)] = store._db.execute("SELECT value FROM meta WHERE key = 'schema'")
        assert int(version) == SCHEMA_VERSION == 6
        assert store.take_tokens() == []  # and version 4's table
    finally:
        store.close()


def test_mail_sync_must_be_full_or_normal() -> None:
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        SqliteStore(":memory:", mail_sync="OFF")


# --------------------------------------------------------------------------
# Through the real I/O layer (memory streams)
# --------------------------------------------------------------------------


async def test_mail_through_the_server_over_memory_streams() -> None:
    server = Server(SqliteStore(":memory:"), passwords=Passwords(fast_hasher()))
    async with trio.open_nursery() as nursery:

        async def connect() -> LineClient:
            client_stream, server_stream = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_connection, server_stream, "198.51.100.1")
            return LineClient(client_stream)

        bob = await connect()
        await bob.login("bob", "bob-secret")
        await bob.send_line("::quit")
        await bob.read_until_eof()
        alice = await connect()
        await alice.login("alice", "alice-secret")
        await alice.send_line("mail: bob m1 hello while you were out")
        assert await alice.expect("STORED") == "bob m1"
        await alice.send_line("mail: bob m2 #ch1:ciphertextwouldgohere")
        assert await alice.expect("STORED") == "bob m2"

        bob = await connect()
        await bob.login("bob", "bob-secret")  # OK and SEEN first, always
        await bob.send_line("::mailbox")
        got = [await bob.read_event() for _ in range(3)]
        assert [e.text.split(" ", 3)[1] for e in got[:2]] == ["m1", "m2"]  # type: ignore[union-attr]
        assert got[2] == ServerLine("MAILBOX", "2 waiting for you (50 B); 0 of yours waiting")
        await bob.send_line("ack: alice m1 alice m2")
        assert await alice.expect("DELIVERED") == "bob m1"
        assert await alice.expect("DELIVERED") == "bob m2"
        await alice.send_line("receipt: DELIVERED bob m1 DELIVERED bob m2")
        await alice.send_line("::mailbox")
        assert await alice.expect("MAILBOX") == "0 waiting for you (0 B); 0 of yours waiting"
        nursery.cancel_scope.cancel()


async def test_pipelined_mail_through_the_server_is_committed_as_a_group() -> None:
    """Many ``mail:`` lines in one write: every one STORED, in order, with far
    fewer durable commits than lines (the lines of one read share one). The
    rate limit is lifted: a paced line waits, and what came before it is
    committed first."""
    server = Server(
        SqliteStore(":memory:"), passwords=Passwords(fast_hasher()), limits=Limits(max_msg_rate=0)
    )
    counting = CountingMailStore(server.hub.mailbox.store)
    server.hub.mailbox.store = counting  # type: ignore[assignment]
    server.hub.store.create_account("bob", "hash", 1.0)
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_connection, server_stream, "198.51.100.1")
        alice = LineClient(client_stream)
        await alice.login("alice", "alice-secret")
        n = 200
        await client_stream.send_all(
            b"".join(b"mail: bob m%d text %d\n" % (i, i) for i in range(n))
        )
        for i in range(n):
            assert await alice.expect("STORED") == f"bob m{i}"
        assert 1 <= counting.transactions.count(True) < n // 10
        nursery.cancel_scope.cancel()
    assert server.hub.store.mail.usage("bob") == (n, sum(len(f"text {i}") for i in range(n)))
