"""Login work that junk cannot monopolise: the whole server under a password
attack and junk registrations (memory streams, so each client's address is
whatever the test says).

* Virtual time (``autojump_clock``, hashes that take no time) for what the
  back-off allows: how many guesses one account gets in 35 s from 4
  addresses x 16 connections at once.
* Real time and the real argon2id hasher (64 MiB, about 0.2 s a hash here)
  for the one figure the issue asks in seconds: a newcomer registers in under
  1 s while junk keeps the hash queue full. The claim is checked in queue
  terms first (no other hash started between the newcomer joining the line
  and its own start), which a loaded machine cannot upset; in seconds only
  where a single hash is fast enough for the figure to mean anything.

Every wait is bounded (``trio.fail_after``); every load loop is bounded in
count and in time.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import pytest
import trio
import trio.testing

from rendezvous.hashqueue import NEW_ACCOUNTS, Kind, Refusal, State, Ticket
from rendezvous.passwords import Passwords
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from tests.helpers import LineClient
from tests.test_server import Connect, InstantPasswords, running

#: The attack: source addresses, and connections from each (the per-address cap).
SOURCES = 4
CONNS_PER_SOURCE = 16
#: Virtual seconds of guessing counted, as in the issue's measurement.
GUESS_WINDOW = 35.0
#: When guess n+1 may come after guess n at the earliest (accounts.py: 0.5 s
#: doubling up to 30 s): by 35 s, guesses 1-7 (at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s).
BACKOFF_GUESSES_IN_WINDOW = 7
#: Password lines one attacking connection sends at most (a bound on the loop).
MAX_LINES_PER_CONN = 400


class TimedPasswords(InstantPasswords):
    """Instant hashes that note when each password check ran (virtual time)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[tuple[float, str]] = []  # (when, the account's hash)

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        self.checks.append((trio.current_time(), pw_hash))
        return await super().verify(pw_hash, secret)


async def guess(
    connect: Connect, ip: str, victim: str, until: float, tally: list[int], pause: float
) -> None:
    """Guess ``victim``'s password as fast as the server lets us, reconnecting
    whenever it closes the connection, until ``until``; ``pause`` virtual seconds
    after a refusal (0: at once)."""
    sent = 0
    for _ in range(MAX_LINES_PER_CONN):
        if trio.current_time() >= until or sent >= MAX_LINES_PER_CONN:
            return
        client = await connect(ip)
        client.deadline = 10_000  # virtual seconds
        try:
            if not (await client.read_line() or "").startswith("Servidor[USERNAME]"):
                continue  # over the per-address cap while the last one closes
            await client.send_line(f"username: {victim}")
            while sent < MAX_LINES_PER_CONN and trio.current_time() < until:
                line = await client.read_line()
                if line is None:
                    break
                if line.startswith("Servidor[PASSWORD]"):
                    sent += 1
                    await client.send_line(f"password: guess-{ip}-{sent}")
                elif line == f"Servidor[ERROR]: Wrong password for {victim}":
                    tally[0] += 1
                elif line.startswith("Servidor[RETRY]"):
                    tally[1] += 1  # refused before any hashing
                    await trio.sleep(pause)  # virtual time: the attacker's pace
                assert not line.startswith("Servidor[OK]")
        finally:
            await client.aclose()


async def at_password(connect: Connect, ip: str, name: str, deadline: float) -> LineClient:
    """A client from ``ip`` that sent ``username: NAME`` and was asked for its password."""
    client = await connect(ip)
    client.deadline = deadline
    await client.expect("USERNAME")
    await client.send_line(f"username: {name}")
    await client.expect("PASSWORD")
    return client


def watch_holds(server: Server) -> dict[str, trio.Event]:
    """An event per account, set when a ticket for it is reserved from now on:
    a test knows the server holds an attempt without sleeping or polling."""
    queue = server.logins.hash_queue
    reserve = queue.reserve
    held: dict[str, trio.Event] = defaultdict(trio.Event)

    def watched(kind: Kind, account: str | None, source: str, now: float) -> Ticket | Refusal:
        got = reserve(kind, account, source, now)
        if isinstance(got, Ticket) and got.account is not None:
            held[got.account].set()
        return got

    queue.reserve = watched  # type: ignore[method-assign]
    return held


@pytest.mark.parametrize(
    ("login_rate", "pause"),
    [(Limits().max_login_rate, 0.0), (0, 0.5)],
    ids=["default-limits", "no-address-rate"],
)
async def test_guesses_sent_at_once_from_many_addresses_get_the_back_off_of_one(
    autojump_clock: trio.testing.MockClock, login_rate: float, pause: float
) -> None:
    """With the default limits; and with no per-address rate at all, so nothing
    but the back-off and the one-attempt-per-account rule holds back 64
    connections trying twice a second each (128 attempts a second in all; a
    shorter pause only costs the test more lines, the server refuses them alike)."""
    passwords = TimedPasswords()
    server = Server(
        SqliteStore(":memory:"), passwords=passwords, limits=Limits(max_login_rate=login_rate)
    )
    async with running(server) as connect:
        await (await connect("192.0.2.50")).login("victim", "the-right-one")
        await (await connect("192.0.2.51")).login("bob", "bobs-password")
        victim_hash = server.hub.store.get_account("victim").pw_hash  # type: ignore[union-attr]
        tally = [0, 0]  # wrong passwords, refusals
        start = trio.current_time()
        with trio.fail_after(10 * GUESS_WINDOW):
            async with trio.open_nursery() as attack:
                for s in range(SOURCES):
                    for _ in range(CONNS_PER_SOURCE):
                        ip = f"198.51.100.{10 + s}"
                        attack.start_soon(
                            guess, connect, ip, "victim", start + GUESS_WINDOW, tally, pause
                        )
                # In the thick of it, others are not slowed: bob logs in, a newcomer
                # registers, from their own addresses, with no wait at all.
                await trio.sleep(GUESS_WINDOW / 2)
                t0 = trio.current_time()
                await (await connect("192.0.2.51")).login("bob", "bobs-password")
                await (await connect("203.0.113.9")).login("newcomer", "newcomer-password")
                assert trio.current_time() == t0
        guesses = [when - start for when, h in passwords.checks if h == victim_hash]
        in_window = [t for t in guesses if t <= GUESS_WINDOW]
    print(
        f"\nfairness: {len(in_window)} guesses at one account in {GUESS_WINDOW:g} s from "
        f"{SOURCES} addresses x {CONNS_PER_SOURCE} connections (at {in_window}); "
        f"{tally[1]} attempts refused before hashing"
    )
    # The issue saw 65 in the first second and 133 in 35 s.
    assert len(in_window) == BACKOFF_GUESSES_IN_WINDOW
    # Each a full delay after the one before (later when the attackers' attempts,
    # paced by --max-login-rate, come in after the delay is over).
    gaps = [b - a for a, b in itertools.pairwise(guesses)]
    assert all(gap >= min(30, 0.5 * 2**n) for n, gap in enumerate(gaps))
    assert tally[0] >= BACKOFF_GUESSES_IN_WINDOW and tally[1] > 0


async def test_a_second_attempt_at_an_account_is_refused_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(
        SqliteStore(":memory:"),
        passwords=InstantPasswords(),
        limits=Limits(max_login_tries=1, login_timeout=1000),
    )
    async with running(server) as connect:
        alice = await connect("192.0.2.1")
        alice.deadline = 1000
        await alice.login("alice", "alice-password")
        server.logins.failed_logins.failed("alice", "198.51.100.66", trio.current_time())
        server.logins.failed_logins.failed("alice", "198.51.100.66", trio.current_time())
        held = watch_holds(server)
        # A guesser's attempt now waits out the account's 1 s back-off, holding it...
        guesser = await at_password(connect, "198.51.100.66", "alice", 1000)
        t0 = trio.current_time()
        await guesser.send_line("password: guess")
        await held["alice"].wait()
        assert server.logins.hash_queue.holder("alice") is not None
        # ...so the owner's ::passwd and another login are refused at once, unhashed,
        # and the refusal is not a failed try (max_login_tries=1 would close it).
        await alice.send_line("::passwd")
        await alice.expect("PASSWORD")
        await alice.send_line("password: alice-password")
        assert await alice.expect("PASSWD") == (
            "unchanged Another password attempt for alice is pending; try again in a few seconds"
        )
        other = await at_password(connect, "203.0.113.5", "alice", 1000)
        await other.send_line("password: alice-password")
        assert "Another password attempt for alice is pending" in await other.expect("RETRY")
        assert await other.expect("PASSWORD") == "Password for alice"
        # The guess is checked when its back-off is over; then the owner's turn.
        assert await guesser.expect("ERROR") == "Wrong password for alice"
        assert trio.current_time() - t0 == pytest.approx(1.0)
        await guesser.expect("BYE")
        await other.send_line("password: alice-password")
        assert (await other.expect("OK")).startswith("Welcome back alice")
        assert trio.current_time() - t0 == pytest.approx(1.0 + 2.0)  # the third delay


async def test_registrations_past_the_global_rate_are_refused_and_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(
        SqliteStore(":memory:"),
        passwords=InstantPasswords(),
        limits=Limits(max_new_accounts=2, max_login_tries=1),
    )
    async with running(server) as connect:
        for n in range(2):
            await (await connect(f"192.0.2.{n}")).login(f"user{n}", "a-password")
        late = await at_password(connect, "192.0.2.9", "user2", 100)
        await late.send_line("password: a-password")
        assert await late.expect("RETRY") == NEW_ACCOUNTS
        assert await late.expect("PASSWORD") == "Password for user2"
        await trio.sleep(30)  # virtual: one new account per 30 s at 2 a minute
        await late.send_line("password: a-password")
        assert (await late.expect("OK")).startswith("Registered user2")


async def test_shutdown_interrupts_an_attempt_waiting_out_its_back_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    passwords = TimedPasswords()
    server = Server(SqliteStore(":memory:"), passwords=passwords, limits=Limits())
    async with running(server) as connect:
        await (await connect("192.0.2.1")).login("alice", "alice-password")
        for _ in range(8):  # the account's delay is 30 s now
            server.logins.failed_logins.failed("alice", "198.51.100.1", trio.current_time())
        held = watch_holds(server)
        guesser = await connect("198.51.100.66")
        await guesser.expect("USERNAME")
        await guesser.send_line("username: alice")
        await guesser.expect("PASSWORD")
        await guesser.send_line("password: guess")
        await held["alice"].wait()  # it waits out the 30 s now
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.shut_down, 2.0)
            assert await guesser.expect("RETRY") == (
                "The server is shutting down; the password was not checked"
            )
            await guesser.expect("PASSWORD")
            assert await guesser.expect("BYE") == "The server is shutting down; try again later"
        assert trio.current_time() - t0 < 2.0
        assert passwords.checks == []  # not hashed, not let through early
        assert server.logins.hash_queue.holder("alice") is None


class GatedPasswords(InstantPasswords):
    """One worker, and checks that wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        self.entered.set()
        await self.gate.wait()
        return await super().verify(pw_hash, secret)


async def test_a_connection_that_gives_up_in_line_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    passwords = GatedPasswords()
    server = Server(SqliteStore(":memory:"), passwords=passwords, limits=Limits(login_timeout=30))
    queue = server.logins.hash_queue
    async with running(server) as connect:
        for name in ("alice", "bob"):  # registrations hash; they do not verify
            await (await connect(f"192.0.2.{len(name)}")).login(name, f"{name}-password")
        second = await connect("198.51.100.2")  # bob's login deadline comes first
        second.deadline = 100
        await second.expect("USERNAME")
        await second.send_line("username: bob")
        await second.expect("PASSWORD")
        await trio.sleep(10)  # virtual time: the scenario, not synchronisation
        first = await at_password(connect, "192.0.2.1", "alice", 100)
        await first.send_line("password: alice-password")
        await passwords.entered.wait()  # alice's check holds the one worker
        held = watch_holds(server)
        await second.send_line("password: bob-password")
        await held["bob"].wait()
        bobs = queue.holder("bob")
        assert bobs is not None and bobs.state is State.QUEUED and queue.queued == 1
        # bob waits in line until his login deadline ends the connection...
        assert await second.expect("BYE") == "Login timed out; connect again and log in"
        await second.expect_eof()
        # ...which takes his ticket out of the line: nothing waits, bob is free.
        assert (queue.queued, queue.running, queue.holder("bob")) == (0, 1, None)
        assert queue.stats().sources == 0
        passwords.gate.set()
        assert (await first.expect("OK")).startswith("Welcome back alice")
        assert (queue.queued, queue.running, queue.reserved) == (0, 0, 0)


# ---------------------------------------------------------------- real argon2id

#: Junk registrations per connection at most, and seconds the load runs at most.
MAX_JUNK_PER_CONN = 200
LOAD_SECONDS = 30.0
#: Hashes started before the newcomer comes: the line is full by then.
WARM_UP_HASHES = 6
NEWCOMER_PASSWORD = "newcomer-password"


class WatchedPasswords(Passwords):
    """The real default hasher, noting how long each hash takes, and what the
    queue looked like when the newcomer's hash started."""

    def __init__(self) -> None:
        super().__init__()  # argon2id, 64 MiB, 2 workers: what the server ships with
        self.started = 0
        self.durations: list[float] = []
        self.warm = trio.Event()
        self.server: Server | None = None
        self.newcomer: dict[str, float] = {}

    def _starting(self, secret: str) -> float:
        self.started += 1
        if self.started >= WARM_UP_HASHES:
            self.warm.set()
        if secret == NEWCOMER_PASSWORD and self.server is not None:
            ticket = self.server.logins.hash_queue.holder("newcomer")
            assert ticket is not None
            stats = self.server.logins.hash_queue.stats()
            self.newcomer.update(
                started_before=ticket.started_before,
                queued_behind=stats.queued,
                sources=stats.sources,
            )
        return trio.current_time()

    def _finished(self, secret: str, t0: float) -> None:
        self.durations.append(trio.current_time() - t0)
        if secret == NEWCOMER_PASSWORD:
            self.newcomer["hash_seconds"] = self.durations[-1]

    async def hash(self, secret: str) -> str:
        t0 = self._starting(secret)
        try:
            return await super().hash(secret)
        finally:
            self._finished(secret, t0)

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        t0 = self._starting(secret)
        try:
            return await super().verify(pw_hash, secret)
        finally:
            self._finished(secret, t0)


async def greeted(client: LineClient) -> bool:
    """Whether the server greeted a new connection (not a BYE: over the
    per-address cap for a moment, while the attacker's last one closes)."""
    return (await client.read_line() or "").startswith("Servidor[USERNAME]")


async def junk(connect: Connect, ip: str, k: int, stop: trio.Event) -> None:
    """Register junk accounts, one after another, until ``stop`` (or the bound)."""
    for n in range(MAX_JUNK_PER_CONN):
        if stop.is_set():
            return
        client = await connect(ip)
        client.deadline = LOAD_SECONDS
        try:
            if not await greeted(client):
                continue
            await client.send_line(f"username: junk{k}x{n}")
            while (line := await client.read_line()) is not None and not stop.is_set():
                if line.startswith("Servidor[PASSWORD]"):  # the first, or after a refusal
                    await client.send_line("password: junk-password")
                elif line.startswith("Servidor[TOKEN]"):
                    break  # registered: the next one, on a new connection
        finally:
            await client.aclose()


async def hammer(connect: Connect, ip: str, stop: trio.Event) -> None:
    """Wrong passwords at ``victim``, reconnecting after each BYE, until ``stop``."""
    for _ in range(MAX_JUNK_PER_CONN):
        if stop.is_set():
            return
        client = await connect(ip)
        client.deadline = LOAD_SECONDS
        try:
            if not await greeted(client):
                continue
            await client.send_line("username: victim")
            while (line := await client.read_line()) is not None and not stop.is_set():
                if line.startswith("Servidor[PASSWORD]"):
                    await client.send_line("password: not-the-password")
        finally:
            await client.aclose()


async def test_a_newcomer_registers_in_under_a_second_while_junk_fills_the_hash_queue() -> None:
    passwords = WatchedPasswords()
    # The per-address rates are off, so that nothing but the queue stands between
    # the junk and the workers: 4 addresses keep 4 tickets each in line all along.
    server = Server(
        SqliteStore(":memory:"),
        passwords=passwords,
        limits=Limits(max_login_rate=0, max_new_accounts=0, max_login_tries=1000),
    )
    passwords.server = server
    stop = trio.Event()
    with trio.fail_after(LOAD_SECONDS):
        async with running(server) as connect:
            await (await connect("192.0.2.50")).login("victim", "the-right-one")
            async with trio.open_nursery() as load:
                for s in range(SOURCES):
                    ip = f"198.51.100.{10 + s}"
                    for c in range(CONNS_PER_SOURCE):
                        if c % 2:
                            load.start_soon(hammer, connect, ip, stop)
                        else:
                            load.start_soon(junk, connect, ip, s * 100 + c, stop)
                await passwords.warm.wait()
                newcomer = await connect("203.0.113.77")
                await newcomer.expect("USERNAME")
                await newcomer.send_line("username: newcomer")
                await newcomer.expect("PASSWORD")
                t0 = trio.current_time()
                await newcomer.send_line(f"password: {NEWCOMER_PASSWORD}")
                assert (await newcomer.expect("OK")).startswith("Registered newcomer")
                elapsed = trio.current_time() - t0
                stats = server.logins.hash_queue.stats()
                stop.set()
                load.cancel_scope.cancel()
    seen = passwords.newcomer
    typical = statistics.median(passwords.durations)
    print(
        f"\nfairness: newcomer registered in {elapsed:.2f} s (its own hash "
        f"{seen['hash_seconds']:.2f} s, median hash {typical:.2f} s) with "
        f"{seen['queued_behind']:.0f} junk tickets queued from {seen['sources']:.0f} "
        f"addresses; {seen['started_before']:.0f} hashes started while it waited; "
        f"{stats.started} hashes in all, refusals {stats.refused}, "
        f"queue wait max {stats.wait_max:.2f} s mean {stats.wait_mean:.2f} s"
    )
    # The load was there: the newcomer went past a full line of junk...
    assert seen["queued_behind"] >= SOURCES
    # ...and waited for the hashes already running, not one more.
    assert seen["started_before"] == 0
    # The figure. It holds on an idle 2-core machine (~0.4 s here); when the
    # machine is so loaded that one hash takes over 1/3 s, what still holds is that
    # the newcomer waited for at most the hash in progress, then its own.
    assert elapsed < max(1.0, 3 * typical)
