"""The mailbox's contract, run against both implementations of the hub's
``MailService``: the single-instance :class:`~rendezvous.mailbox.Mailbox`
(SQLite) and the cluster's :class:`~rendezvous.shared_mailbox.SharedMailbox`
(Redis of the test's own: two instances' mailboxes, each with its own
connection). STORED once per id however often and wherever it is retried,
delivered by whichever instance the recipient is on, in order, receipts back
to the sender wherever that is, the quota and expiry the service's; and for
Redis, nothing acknowledged lost when it is SIGKILLed, never a STORED while
it is away. (SQLite's crash behaviour: tests/test_mailbox_durability.py.)

``settle()`` waits (with a deadline) until a mailbox's worker has done all
it was asked: no test waits on a clock.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from chathack.protocol import MailKey, Receipt, ServerLine
from rendezvous.hub import Session
from rendezvous.mailbox import Mailbox, MailLimits
from rendezvous.redis_mail import RedisMailStore
from rendezvous.shared_mailbox import SharedMailbox
from rendezvous.store import SqliteStore
from tests.redis_lab import RedisServer, clients
from tests.test_hub import FakeOutbox, take

DEADLINE = 10.0


@dataclass
class Instance:
    mailbox: SharedMailbox | Mailbox
    sessions: dict[str, Session]

    def login(self, name: str) -> Session:
        session = Session(FakeOutbox(), "198.51.100.1", name=name)
        self.sessions[name.lower()] = session
        self.mailbox.start(session)
        return session

    def logout(self, session: Session) -> None:
        assert session.name is not None
        self.mailbox.stop(session)
        del self.sessions[session.name.lower()]


@dataclass
class Two:
    one: Instance
    two: Instance
    redis: RedisServer | None  # None: the single-instance mailbox, both "instances" one

    async def settle(self) -> None:
        with trio.fail_after(DEADLINE):
            for _ in range(4):  # a nudge from one may give the other work, and back
                for inst in (self.one, self.two):
                    if isinstance(inst.mailbox, SharedMailbox):
                        await inst.mailbox.settle()

    def need_redis(self) -> RedisServer:
        assert self.redis is not None
        return self.redis


@pytest.fixture(params=["sqlite", "redis"])
async def two(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Two]:
    """Both implementations, each test run on each."""
    async with _two(request, tmp_path, request.param) as made:
        yield made


@pytest.fixture
async def two_on_redis(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Two]:
    """Redis only: its crashes and outages (SQLite's: tests/test_mailbox_durability.py)."""
    async with _two(request, tmp_path, "redis") as made:
        yield made


@asynccontextmanager
async def _two(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> AsyncIterator[Two]:
    accounts = SqliteStore(tmp_path / "accounts.sqlite3")
    for name in ("alice", "bob", "carol"):
        accounts.create_account(name, "h", 1.0)
    limits = MailLimits(quota_count=5)
    if kind == "sqlite":
        sessions: dict[str, Session] = {}
        mailbox = Mailbox(accounts, accounts.mail, lambda n: sessions.get(n.lower()), limits)
        yield Two(Instance(mailbox, sessions), Instance(mailbox, sessions), None)
        accounts.close()
        return
    redis: RedisServer = request.getfixturevalue("redis")
    async with clients(redis) as connected:
        instances: list[Instance] = []

        def nudge_other(me: int) -> object:
            return lambda name: instances[1 - me].mailbox.nudge(name)

        for i, client in enumerate(connected):
            sessions: dict[str, Session] = {}
            mailbox = SharedMailbox(
                RedisMailStore(client), accounts, sessions.get, nudge_other(i), limits
            )
            mailbox.online = lambda name, s=sessions: s.get(name.lower())
            instances.append(Instance(mailbox, sessions))
        async with trio.open_nursery() as nursery:
            for inst in instances:
                nursery.start_soon(inst.mailbox.run)
            yield Two(instances[0], instances[1], redis)
            nursery.cancel_scope.cancel()
    accounts.close()


def flags(session: Session) -> list[tuple[str, str]]:
    out = []
    for line in take(session):
        assert isinstance(line, ServerLine)
        out.append((line.flag, line.text))
    return out


async def test_mail_stored_on_one_instance_is_delivered_by_another_once_and_in_order(
    two: Two,
) -> None:
    alice = two.one.login("alice")
    for i in range(3):
        two.one.mailbox.store_mail(alice, "bob", f"m{i}", f"hello {i}", 1000.0 + i)
    two.one.mailbox.commit_group()
    await two.settle()
    assert flags(alice) == [("STORED", f"bob m{i}") for i in range(3)]

    bob = two.two.login("bob")
    await two.settle()
    got = flags(bob)
    assert [f for f, _ in got] == ["MAIL"] * 3
    assert [t.split()[1] for _, t in got] == ["m0", "m1", "m2"]
    assert got[0][1].endswith("hello 0")

    two.two.mailbox.ack(bob, [MailKey("alice", f"m{i}") for i in range(3)], 2000.0)
    await two.settle()
    assert flags(alice) == [("DELIVERED", f"bob m{i}") for i in range(3)]
    # bob logs in again (the other instance): nothing is delivered twice.
    two.two.logout(bob)
    bob = two.one.login("bob")
    await two.settle()
    assert flags(bob) == []


async def test_a_retried_id_is_stored_once_and_a_reused_one_refused(two: Two) -> None:
    alice = two.one.login("alice")
    for box in (two.one.mailbox, two.two.mailbox, two.one.mailbox):
        box.store_mail(alice, "bob", "same", "only once", 1000.0)
        box.commit_group()
        await two.settle()
    assert flags(alice) == [("STORED", "bob same")] * 3
    two.two.mailbox.store_mail(alice, "carol", "same", "another", 1000.0)
    await two.settle()
    [(flag, text)] = flags(alice)
    assert flag == "REFUSED" and "id-used" in text
    bob = two.two.login("bob")
    await two.settle()
    assert [f for f, _ in flags(bob)] == ["MAIL"]


async def test_the_quota_holds_across_instances(two: Two) -> None:
    alice = two.one.login("alice")
    for i in range(7):
        box = (two.one.mailbox, two.two.mailbox)[i % 2]
        box.store_mail(alice, "carol", f"q{i}", "x", 1000.0)
        box.commit_group()
    await two.settle()
    answers = flags(alice)
    assert sum(f == "STORED" for f, _ in answers) == 5
    assert sum(f == "REFUSED" and "full" in t for f, t in answers) == 2


async def test_read_receipts_and_their_acknowledgement(two: Two) -> None:
    alice = two.one.login("alice")
    two.one.mailbox.store_mail(alice, "bob", "r1", "read me", 1000.0)
    two.one.mailbox.commit_group()
    bob = two.two.login("bob")
    await two.settle()
    take(alice), take(bob)
    two.two.mailbox.read(bob, [MailKey("alice", "r1")], 1100.0)
    await two.settle()
    assert flags(alice) == [("DELIVERED", "bob r1"), ("READ", "bob r1")]
    two.one.mailbox.receipt_ack(alice, [Receipt("DELIVERED", "bob", "r1")])
    await two.settle()  # (a receipt acknowledged at the moment of a move may come again)
    two.one.logout(alice)
    alice = two.two.login("alice")  # the READ receipt is still owed; DELIVERED is not
    await two.settle()
    assert flags(alice) == [("READ", "bob r1")]


async def test_expired_mail_tells_its_sender(two: Two) -> None:
    alice = two.one.login("alice")
    two.one.mailbox.store_mail(alice, "carol", "old", "too late", 1000.0)
    two.one.mailbox.commit_group()
    await two.settle()
    take(alice)
    two.two.mailbox.purge(1000.0 + two.two.mailbox.limits.expiry + 1)
    await two.settle()
    assert flags(alice) == [("EXPIRED", "carol old")]
    carol = two.two.login("carol")
    await two.settle()
    assert flags(carol) == []


async def test_a_redis_crash_loses_no_stored_mail(two_on_redis: Two) -> None:
    two = two_on_redis
    redis = two.need_redis()
    alice = two.one.login("alice")
    for i in range(5):  # the quota in these tests
        two.one.mailbox.store_mail(alice, "bob", f"k{i}", f"kept {i}", 1000.0)
    two.one.mailbox.commit_group()
    await two.settle()
    assert [f for f, _ in flags(alice)] == ["STORED"] * 5
    redis.kill(signal.SIGKILL)
    redis.start()
    bob = two.two.login("bob")
    await two.settle()  # the first reads may fail while the client reconnects: retried
    got = flags(bob)
    assert [t.split()[1] for _, t in got] == [f"k{i}" for i in range(5)]


async def test_while_redis_is_away_mail_is_refused_never_stored(two_on_redis: Two) -> None:
    two = two_on_redis
    redis = two.need_redis()
    alice = two.one.login("alice")
    await two.settle()  # her (empty) delivery done before Redis goes
    redis.kill(signal.SIGKILL)
    try:
        two.one.mailbox.store_mail(alice, "bob", "lost?", "no", 1000.0)
        two.one.mailbox.commit_group()
        await two.settle()
        [(flag, text)] = flags(alice)
        assert flag == "REFUSED" and "unavailable" in text
    finally:
        redis.start()
