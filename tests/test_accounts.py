"""Account hardening: growing delays after wrong passwords, resume tokens, ::passwd."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from rendezvous.accounts import FailedLogins, ResumeTokens
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from tests.test_server import InstantPasswords, running

# ---------------------------------------------------------------- sans-IO


def test_delays_grow_per_account_and_per_address_then_are_forgotten() -> None:
    f = FailedLogins(base=0.5, cap=30, forget_after=900)
    assert f.delay("alice", "198.51.100.1", 0) == 0
    for n in range(1, 9):
        f.failed("alice", "198.51.100.1", 0)
        assert f.delay("alice", "198.51.100.1", 0) == min(30, 0.5 * 2 ** (n - 1))
    # Another address guessing alice's password waits just as long...
    assert f.delay("alice", "203.0.113.9", 0) == 30
    # ...and the guessing address is slowed for other accounts too.
    assert f.delay("bob", "198.51.100.1", 0) == 30
    assert f.delay("bob", "203.0.113.9", 0) == 0
    assert f.delay("alice", "203.0.113.9", 901) == 0  # quiet long enough: forgotten


def test_a_success_clears_the_account_but_not_the_address() -> None:
    f = FailedLogins()
    for _ in range(3):
        f.failed("alice", "198.51.100.1", 0)
    f.succeeded("alice", "198.51.100.1")
    assert f.delay("alice", "203.0.113.9", 0) == 0
    assert f.delay("carol", "198.51.100.1", 0) > 0


def test_tokens_work_once_from_the_same_address_before_they_expire() -> None:
    t = ResumeTokens(ttl=600)
    tok = t.issue("alice", "198.51.100.1", 0)
    assert t.redeem("Alice", tok, "198.51.100.1", 10)
    assert not t.redeem("alice", tok, "198.51.100.1", 11)  # used up
    tok = t.issue("alice", "198.51.100.1", 0)
    assert not t.redeem("alice", tok, "203.0.113.9", 1)  # stolen: another address
    assert not t.redeem("alice", tok, "198.51.100.1", 2)  # and it is burnt now
    tok = t.issue("alice", "198.51.100.1", 0)
    assert not t.redeem("alice", tok, "198.51.100.1", 600)  # expired
    tok = t.issue("alice", "198.51.100.1", 0)
    assert not t.redeem("bob", tok, "198.51.100.1", 1)  # someone else's name
    t.revoke("alice")
    assert not t.redeem("alice", tok, "198.51.100.1", 1)


def test_tokens_carried_to_the_next_run_keep_their_time_left() -> None:
    old = ResumeTokens(ttl=600)
    alice = old.issue("alice", "198.51.100.1", 100.0)  # this clock: 100 -> expires at 700
    old.issue("bob", "198.51.100.2", 0.0)  # expires at 600 of this clock
    carol = old.issue("carol", "198.51.100.3", 150.0)
    saved = old.export(now=200.0, wall=5_000.0)  # alice has 500 s left, bob 400
    assert {name: expires for name, _, _, expires in saved} == {
        "alice": 5_500.0,
        "bob": 5_400.0,
        "carol": 5_550.0,
    }
    assert alice not in repr(saved) and carol not in repr(saved)  # digests only
    new = ResumeTokens(ttl=600)
    fresh = new.issue("carol", "198.51.100.3", 3.0)  # issued by the new run: it wins
    # The new run's clock starts near 0; 450 s of wall time passed in between.
    # Only alice's: bob's ran out, and carol has a newer token.
    assert new.restore(saved, now=10.0, wall=5_450.0) == 1
    assert not new.redeem("bob", "anything", "198.51.100.2", 11.0)
    assert not new.redeem("carol", carol, "198.51.100.3", 11.0)
    assert new.redeem("carol", fresh, "198.51.100.3", 11.0)
    assert not new.redeem("alice", alice, "198.51.100.1", 60.0)  # alice had 50 s: past
    again = ResumeTokens(ttl=600)
    again.restore(saved, now=10.0, wall=5_450.0)
    assert again.redeem("alice", alice, "198.51.100.1", 59.0)  # within its 50 s
    assert not again.redeem("alice", alice, "198.51.100.1", 59.5)  # single use still


def test_the_store_keeps_tokens_until_they_are_taken(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    store = SqliteStore(db)
    store.save_tokens([("alice", b"\x01" * 32, "198.51.100.1", 5_500.0)])
    store.close()
    store = SqliteStore(db)
    assert store.take_tokens() == [("alice", b"\x01" * 32, "198.51.100.1", 5_500.0)]
    assert store.take_tokens() == []  # taken: a second start does not get them again
    store.close()


# ---------------------------------------------------------------- server


def clocked() -> Server:
    return Server(
        SqliteStore(":memory:"),
        passwords=InstantPasswords(),
        limits=Limits(max_login_tries=100, max_login_rate=0, login_timeout=1000),
    )


async def test_brute_force_is_slowed_down(autojump_clock: trio.testing.MockClock) -> None:
    server = clocked()
    async with running(server) as connect:
        await (await connect("192.0.2.50")).login("victim", "right-password")
        guesser = await connect("198.51.100.7")
        guesser.deadline = 10_000
        await guesser.expect("USERNAME")
        await guesser.send_line("username: victim")
        await guesser.expect("PASSWORD")
        start = trio.current_time()
        for i in range(10):
            await guesser.send_line(f"password: guess-{i}")
            assert await guesser.expect("ERROR") == "Wrong password for victim"
            await guesser.expect("PASSWORD")
        waited = trio.current_time() - start
        # 0 + 0.5 + 1 + 2 + 4 + 8 + 16 + 30 + 30 + 30 seconds before the answers.
        assert waited == pytest.approx(121.5)
        # The owner, from home, is slowed too (the account is under attack)...
        owner = await connect("192.0.2.50")
        owner.deadline = 10_000
        t0 = trio.current_time()
        await owner.login("victim", "right-password")
        assert trio.current_time() - t0 == pytest.approx(30)
        # ...but after that success the account's counter starts again.
        t1 = trio.current_time()
        await (await connect("192.0.2.50")).login("victim", "right-password")
        assert trio.current_time() - t1 == pytest.approx(0)


async def test_resume_with_a_token_then_it_cannot_be_replayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = clocked()
    async with running(server) as connect:
        first = await connect("198.51.100.1")
        await first.login("alice", "pw-alice")
        token = first.token
        await first.send_line("::quit")
        again = await connect("198.51.100.1")
        await again.expect("USERNAME")
        await again.send_line(f"resume: alice {token}")
        assert (await again.expect("OK")).startswith("Welcome back alice")
        await again.expect("SEEN")
        fresh = (await again.expect("TOKEN")).split()[0]
        assert fresh != token
        # The old token again, and the new one from another address: refused.
        for ip, tok in (("198.51.100.1", token), ("203.0.113.66", fresh)):
            thief = await connect(ip)
            await thief.expect("USERNAME")
            await thief.send_line(f"resume: alice {tok}")
            assert "resume token was refused" in await thief.expect("ERROR")
            await thief.expect("USERNAME")


async def test_resume_tokens_expire(autojump_clock: trio.testing.MockClock) -> None:
    server = clocked()
    async with running(server) as connect:
        first = await connect("198.51.100.1")
        await first.login("alice", "pw-alice")
        await trio.sleep(server.logins.tokens.ttl + 1)
        again = await connect("198.51.100.1")
        await again.expect("USERNAME")
        await again.send_line(f"resume: alice {first.token}")
        assert "resume token was refused" in await again.expect("ERROR")


@pytest.mark.parametrize("tcp", [False, True], ids=["memory", "tcp"])
async def test_passwd_changes_the_password(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    """Over TCP the logged-in client is read by the reactor, and each password
    check is a wait done in a task of its own (rendezvous/reactor.py)."""
    server = clocked()
    async with running(server, tcp=tcp) as connect:
        alice = await connect("198.51.100.1")
        await alice.login("alice", "old-secret")
        await alice.send_line("::passwd")
        assert await alice.expect("PASSWORD") == "Current password for alice"
        await alice.send_line("password: not-it")
        assert await alice.expect("PASSWD") == "unchanged Wrong password"
        await alice.send_line("::passwd")
        await alice.expect("PASSWORD")
        await alice.send_line("password: old-secret")
        assert await alice.expect("PASSWORD") == "New password for alice"
        await alice.send_line("password: new-secret")
        assert await alice.expect("PASSWD") == "changed"
        old_token = alice.token
        again = await connect("198.51.100.1")
        await again.expect("USERNAME")
        await again.send_line(f"resume: alice {old_token}")  # revoked with the change
        await again.expect("ERROR")
        await again.expect("USERNAME")
        await again.send_line("username: alice")
        await again.expect("PASSWORD")
        await again.send_line("password: old-secret")
        assert await again.expect("ERROR") == "Wrong password for alice"
        await again.expect("PASSWORD")
        await again.send_line("password: new-secret")
        assert (await again.expect("OK")).startswith("Welcome back alice")
