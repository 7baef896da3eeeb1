"""The fair password-hashing queue (:mod:`rendezvous.hashqueue`), sans-IO: time
is a number the test passes, nothing hashes, nothing waits."""

from __future__ import annotations

from collections import Counter
from typing import cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rendezvous.accounts import FailedLogins
from rendezvous.hashqueue import (
    BUSY,
    NEW_ACCOUNTS,
    SOURCE_BUSY,
    HashQueue,
    Kind,
    Refusal,
    State,
)
from rendezvous.hashqueue import Ticket as T


def ticket(queue: HashQueue, kind: Kind, account: str | None, source: str, now: float) -> T:
    got = queue.reserve(kind, account, source, now)
    assert isinstance(got, T), got
    return got


def queued(queue: HashQueue, kind: Kind, account: str | None, source: str, now: float) -> T:
    t = ticket(queue, kind, account, source, now)
    assert queue.enqueue(t, now) is None
    return t


def test_one_ticket_per_account_whoever_asks() -> None:
    q = HashQueue(workers=2)
    first = ticket(q, Kind.LOGIN, "alice", "192.0.2.1", 0)
    for source in ("192.0.2.1", "198.51.100.7"):
        refused = q.reserve(Kind.LOGIN, "ALICE", source, 0)
        assert refused == Refusal(
            "account", "Another password attempt for ALICE is pending; try again in a few seconds"
        )
    registering = q.reserve(Kind.REGISTER, "Alice", "203.0.113.5", 0)
    assert isinstance(registering, Refusal) and registering.text == (
        "Someone is registering Alice right now; pick another name"
    )
    assert q.holder("alice") is first
    # Held through every state, released by finish (whatever the outcome).
    assert q.enqueue(first, 0) is None
    assert q.take_ready(0) == [first]
    assert isinstance(q.reserve(Kind.LOGIN, "alice", "192.0.2.9", 0), Refusal)
    q.finish(first, 0.2, verdict=False)
    assert q.holder("alice") is None
    # ::passwd's new hash holds no account: the owner is not refused for it.
    ticket(q, Kind.HASH, "alice", "192.0.2.1", 1)
    ticket(q, Kind.HASH, "alice", "192.0.2.1", 1)


def test_sources_take_turns_and_a_newcomer_goes_first() -> None:
    q = HashQueue(workers=1, max_queued_per_source=8)
    flood = [queued(q, Kind.REGISTER, f"junk{i}", "192.0.2.66", 0) for i in range(6)]
    bob = queued(q, Kind.LOGIN, "bob", "198.51.100.2", 0)
    carol = queued(q, Kind.LOGIN, "carol", "198.51.100.3", 0)
    order = []
    for step in range(4):
        (running,) = q.take_ready(step)
        order.append(running)
        q.finish(running, step)
    # The flood's first ticket was there first; then one turn each.
    assert order == [flood[0], bob, carol, flood[1]]
    # A newcomer (an address that has not hashed lately) goes before the flood's
    # next turn, having waited for no hash but the one running.
    (running,) = q.take_ready(4)
    dave = queued(q, Kind.REGISTER, "dave", "203.0.113.4", 4)
    q.finish(running, 5)
    assert q.take_ready(5) == [dave]
    assert dave.started_before == 0
    assert bob.started_before == 1 and carol.started_before == 2 and flood[1].started_before == 3


def test_at_most_workers_run() -> None:
    q = HashQueue(workers=2)
    ts = [queued(q, Kind.LOGIN, f"u{i}", f"192.0.2.{i}", 0) for i in range(5)]
    assert q.take_ready(0) == ts[:2]
    assert q.take_ready(0) == []
    q.finish(ts[0], 1, verdict=True)
    assert q.take_ready(1) == [ts[2]]
    s = q.stats()
    assert (s.queued, s.running, s.started, s.sources) == (2, 2, 3, 2)
    assert (s.wait_last, s.wait_max) == (1, 1)


def test_the_line_is_bounded_in_all_and_per_address() -> None:
    q = HashQueue(workers=1, max_queued=5, max_queued_per_source=2)
    queued(q, Kind.LOGIN, "a0", "192.0.2.1", 0)
    queued(q, Kind.LOGIN, "a1", "192.0.2.1", 0)
    assert q.reserve(Kind.LOGIN, "a2", "192.0.2.1", 0) == Refusal("source", SOURCE_BUSY)
    queued(q, Kind.LOGIN, "b0", "192.0.2.2", 0)
    queued(q, Kind.LOGIN, "b1", "192.0.2.2", 0)
    queued(q, Kind.LOGIN, "c0", "192.0.2.3", 0)
    assert q.reserve(Kind.REGISTER, "d0", "192.0.2.4", 0) == Refusal("busy", BUSY)
    # A reservation made while there was room is checked again when it comes in
    # line (after its back-off), and finished if refused: its account is free.
    q.take_ready(0)  # one of them runs: room for one more in line
    late = ticket(q, Kind.LOGIN, "d1", "192.0.2.4", 0)
    queued(q, Kind.LOGIN, "c1", "192.0.2.3", 0)
    assert q.enqueue(late, 1) == Refusal("busy", BUSY)
    assert late.state is State.DONE and q.holder("d1") is None
    assert q.stats().refused == {"source": 1, "busy": 2}
    assert q.queued == 5 and q.reserved == 0


def test_giving_up_a_queued_ticket_frees_its_place() -> None:
    q = HashQueue(workers=1, max_queued_per_source=1)
    first = queued(q, Kind.LOGIN, "a", "192.0.2.1", 0)
    assert q.take_ready(0) == [first]
    gone = queued(q, Kind.LOGIN, "b", "192.0.2.1", 0)
    other = queued(q, Kind.LOGIN, "c", "192.0.2.2", 0)
    q.finish(gone, 1)  # its connection closed while it waited
    q.finish(gone, 1)  # idempotent
    assert gone.state is State.DONE and q.queued == 1
    again = queued(q, Kind.LOGIN, "b", "192.0.2.1", 1)  # room again, account free again
    q.finish(first, 2)
    assert q.take_ready(2) == [other]
    q.finish(other, 3)
    assert q.take_ready(3) == [again]


def test_parallel_attempts_from_a_guessing_address_are_spaced_by_its_back_off() -> None:
    failed = FailedLogins(base=0.5, cap=30)
    q = HashQueue(workers=2, failed=failed)
    for name in ("x", "y", "z"):  # three wrong passwords: the next waits 2 s
        failed.failed(name, "192.0.2.66", 0)
    starts = [ticket(q, Kind.LOGIN, f"victim{i}", "192.0.2.66", 0).start for i in range(4)]
    assert starts == [2, 4, 6, 8]  # sent at once, spaced as if one after another
    # Registering from there waits its turn too; another address does not.
    assert ticket(q, Kind.REGISTER, "newname", "192.0.2.66", 0).start == 10
    assert ticket(q, Kind.REGISTER, "other", "198.51.100.1", 0).start == 0
    # A clean address books nothing: people behind one NAT log in together.
    assert [ticket(q, Kind.LOGIN, f"o{i}", "198.51.100.9", 0).start for i in range(3)] == [0] * 3


def guesses_at_one_account(seconds: float, sources: int, conns: int) -> list[float]:
    """Every connection of every source tries a wrong password at one account
    whenever it may; return when the checks ran (hashing takes no time here)."""
    q = HashQueue(workers=2, failed=FailedLogins())
    now, ran = 0.0, []
    while now <= seconds:
        tickets = [
            q.reserve(Kind.LOGIN, "victim", f"192.0.2.{s}", now)
            for s in range(sources)
            for _ in range(conns)
        ]
        (t,) = [t for t in tickets if isinstance(t, T)]  # all the others refused at once
        now = t.start
        assert q.enqueue(t, now) is None and q.take_ready(now) == [t]
        if now <= seconds:
            ran.append(now)
        q.finish(t, now, verdict=False)
    return ran


def test_many_addresses_guessing_at_once_get_the_back_off_of_one() -> None:
    # 4 addresses x 16 connections: 7 guesses in 35 s, as many as one patient
    # guesser gets (0, 0.5, 1, 2, 4, 8, 16 s between them); 10 take 121.5 s.
    assert guesses_at_one_account(35, 4, 16) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert len(guesses_at_one_account(121.5, 4, 16)) == 10


def test_registrations_past_the_global_rate_are_refused_cheaply() -> None:
    q = HashQueue(workers=2, new_accounts_per_minute=3)
    for i in range(3):  # three registrations hashed
        t = queued(q, Kind.REGISTER, f"n{i}", f"192.0.2.{i}", 0)
        assert q.take_ready(0) == [t]
        q.finish(t, 0)
    assert q.reserve(Kind.REGISTER, "n3", "192.0.2.3", 0) == Refusal("new-accounts", NEW_ACCOUNTS)
    assert q.reserve(Kind.REGISTER, "n3", "192.0.2.3", 10) == Refusal(
        "new-accounts", NEW_ACCOUNTS
    )  # a refusal takes no token: one comes back every 20 s
    ticket(q, Kind.REGISTER, "n3", "192.0.2.3", 20)
    ticket(q, Kind.LOGIN, "old", "192.0.2.3", 20)  # logins are not counted
    assert q.stats().refused == {"new-accounts": 2}


def test_verdicts_feed_the_back_off() -> None:
    failed = FailedLogins(base=0.5)
    q = HashQueue(workers=1, failed=failed)
    for when in (0.0, 0.5):
        t = queued(q, Kind.LOGIN, "alice", "192.0.2.1", when)
        assert t.start == when
        q.take_ready(when)
        q.finish(t, when, verdict=False)
    assert failed.delay("alice", "198.51.100.1", 0.5) == 1.0  # two failures: 1 s
    t = queued(q, Kind.LOGIN, "alice", "198.51.100.1", 0.5)
    assert t.start == 1.5
    q.take_ready(1.5)
    q.finish(t, 1.5, verdict=True)  # the owner: the account's counter restarts
    assert failed.delay("alice", "198.51.100.1", 1.5) == 0
    # The guessing address's counter is not cleared: for any account, its next
    # attempt still comes a second after its second failure (at 0.5 s).
    assert failed.delay("bob", "192.0.2.1", 1.0) == 0.5


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        HashQueue(workers=0)


# ---------------------------------------------------------------- properties

ACCOUNTS = ("a", "b", "c")
SOURCES = ("s1", "s2", "s3")
BASE, CAP = 0.5, 30.0


def backoff(failures: int) -> float:
    return 0.0 if failures == 0 else min(CAP, BASE * 2 ** (failures - 1))


class QueueMachine(RuleBasedStateMachine):
    """Random reservations, back-offs, turns, verdicts and give-ups; after each
    step the queue keeps its promises."""

    def __init__(self) -> None:
        super().__init__()
        self.q = HashQueue(
            workers=2,
            failed=FailedLogins(base=BASE, cap=CAP, forget_after=1e9),
            max_queued=6,
            max_queued_per_source=2,
        )
        self.now = 0.0
        self.live: list[T] = []
        # The model: failures (count, last time) per account and source, and
        # the last start reserved from a source that had failed.
        self.fails: dict[str, tuple[int, float]] = {}
        # Per source, the starts its back-off booked, latest last, with their
        # tickets (held, not their id(): a ticket collected could lend its id to
        # a new one). One that ends unhashed hands its booking back: no guess.
        self.last_start: dict[str, list[tuple[float, int, T]]] = {}
        # Fairness bookkeeping, in turns (one turn = one ticket started).
        self.waiting_since: dict[str, int] = {}
        self.last_turn: dict[str, int] = {}

    def _free_at(self, key: str) -> float:
        n, last = self.fails.get(key, (0, 0.0))
        return last + backoff(n) if n else 0.0

    @rule(dt=st.sampled_from([0.0, 0.1, 0.5, 1.0, 7.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(
        kind=st.sampled_from(Kind),
        account=st.sampled_from(ACCOUNTS),
        source=st.sampled_from(SOURCES),
    )
    def reserve(self, kind: Kind, account: str, source: str) -> None:
        before = Counter(t.account for t in self.live if t.account is not None)
        got = self.q.reserve(kind, account, source, self.now)
        if kind is not Kind.HASH and before[account]:
            assert isinstance(got, Refusal) and got.reason == "account"
            return
        if isinstance(got, Refusal):
            assert got.reason in ("busy", "source")
            return
        self.live.append(got)
        if kind is Kind.HASH:
            assert got.start == self.now
            return
        # The back-off is reserved: no earlier than a full delay after the last
        # failure of the account and of the source, nor after the source's last start.
        floor = max(self.now, self._free_at("a:" + account), self._free_at("s:" + source))
        n_source = self.fails.get("s:" + source, (0, 0.0))[0]
        if self.last_start.get(source) and n_source:
            previous, n_then, _ = self.last_start[source][-1]
            floor = max(floor, previous + backoff(n_then))
        assert got.start >= floor - 1e-9
        if n_source == 0 and self.fails.get("a:" + account, (0, 0.0))[0] == 0:
            assert got.start == self.now  # nothing to wait for: nothing waited
        if n_source:
            self.last_start.setdefault(source, []).append((got.start, n_source, got))

    def _ended_unhashed(self, t: T) -> None:
        """``t`` ended before any hash (given up, or refused when its start came):
        like the queue, undo its booking if no later one stacked on it."""
        booked = self.last_start.get(t.source)
        if booked and booked[-1][2] is t:
            booked.pop()

    @rule(data=st.data())
    def enqueue(self, data: st.DataObject) -> None:
        due = [t for t in self.live if t.state is State.RESERVED and t.start <= self.now]
        if not due:
            return
        t = data.draw(st.sampled_from(due))
        in_line = sum(1 for x in self.live if x.state is State.QUEUED and x.source == t.source)
        if self.q.enqueue(t, self.now) is None:
            if not in_line:
                self.waiting_since[t.source] = self.q.started
        else:
            assert t.state is State.DONE
            self.live.remove(t)
            self._ended_unhashed(t)  # the line filled during its back-off

    @rule()
    def take_ready(self) -> None:
        for t in self.q.take_ready(self.now):
            turn = self.q.started - 1
            me = t.source
            previous = self.last_turn.get(me)
            if previous is not None:
                for other, since in self.waiting_since.items():
                    # ``other`` waited through this source's previous turn and
                    # has had none since: this source may not have a second one.
                    assert other == me or since > previous, (me, other, since, previous)
            self.last_turn[me] = turn
            if any(x.state is State.QUEUED and x.source == me for x in self.live):
                self.waiting_since[me] = turn + 1
            else:
                self.waiting_since.pop(me, None)

    @rule(data=st.data(), verdict=st.sampled_from([True, False, None]))
    def finish(self, data: st.DataObject, verdict: bool | None) -> None:
        if not self.live:
            return
        t = data.draw(st.sampled_from(self.live))
        was = t.state
        self.q.finish(t, self.now, verdict)
        self.live.remove(t)
        if was is not State.RUNNING:
            self._ended_unhashed(t)
        if was is State.QUEUED and not any(
            x.state is State.QUEUED and x.source == t.source for x in self.live
        ):
            self.waiting_since.pop(t.source, None)
        if was is State.RUNNING and t.kind is Kind.LOGIN:
            if verdict is False:
                for key in ("a:" + str(t.account), "s:" + t.source):
                    self.fails[key] = (self.fails.get(key, (0, 0.0))[0] + 1, self.now)
            elif verdict is True:
                self.fails.pop("a:" + str(t.account), None)

    @invariant()
    def promises_kept(self) -> None:
        states = Counter(t.state for t in self.live)
        assert self.q.running == states[State.RUNNING] <= self.q.workers
        assert self.q.queued == states[State.QUEUED] <= self.q.max_queued
        assert self.q.reserved == states[State.RESERVED]
        per_source = Counter(t.source for t in self.live if t.state is State.QUEUED)
        assert all(n <= self.q.max_queued_per_source for n in per_source.values())
        held = Counter(t.account for t in self.live if t.account is not None)
        assert all(n == 1 for n in held.values())  # one ticket per account

    @precondition(lambda self: self.q.queued > 0 and self.q.running < self.q.workers)
    @rule()
    def a_free_worker_always_takes_a_ticket(self) -> None:
        before = self.q.queued
        self.take_ready()
        assert self.q.queued < before


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_a_registration_given_up_unhashed_gives_its_new_account_token_back() -> None:
    q = HashQueue(workers=1, new_accounts_per_minute=1)
    abandoned = queued(q, Kind.REGISTER, "n0", "192.0.2.1", 0)
    q.finish(abandoned, 0)  # the client left while in line: nothing was made
    t = queued(q, Kind.REGISTER, "n1", "192.0.2.2", 0)  # the token is there again
    assert q.take_ready(0) == [t]
    q.finish(t, 0)
    assert q.reserve(Kind.REGISTER, "n2", "192.0.2.3", 0) == Refusal("new-accounts", NEW_ACCOUNTS)


def test_an_attempt_given_up_unhashed_takes_its_back_off_booking_back() -> None:
    """A peer whose login times out while it waits out the back-off must not
    push the next attempt a whole delay later each time it tries again."""
    failed = FailedLogins(base=0.5)
    q = HashQueue(workers=1, failed=failed)
    for _ in range(6):  # the account's delay is 16 s now
        failed.failed("alice", "198.51.100.9", 0.0)
    first = ticket(q, Kind.LOGIN, "alice", "192.0.2.1", 0.0)
    assert first.start == 16.0
    q.finish(first, 10.0)  # given up at 10 s, unhashed
    again = ticket(q, Kind.LOGIN, "alice", "192.0.2.1", 10.0)
    assert again.start == 16.0  # not 16 + 16: the abandoned booking was undone
    q.finish(again, 10.0)
    # A booking some later attempt stacked on top of it is left as it is.
    failed.failed("zed", "203.0.113.7", 10.0)  # the source now has a failure: 0.5 s
    one = ticket(q, Kind.LOGIN, "carol", "203.0.113.7", 10.0)
    other = ticket(q, Kind.LOGIN, "dave", "203.0.113.7", 10.0)
    assert (one.start, other.start) == (10.5, 11.0)
    q.finish(one, 10.2)  # given up: but dave's booking came after it
    assert failed.delay("erin", "203.0.113.7", 10.2) == pytest.approx(1.3)
    q.finish(other, 10.2)
    # dave's booking is undone back to carol's, which stays: undoing only the
    # latest booking never leaves a back-off shorter than the one owed.
    assert failed.delay("erin", "203.0.113.7", 10.2) == pytest.approx(0.8)


@pytest.mark.parametrize("unhashed", ["given up while it waited", "refused when its start came"])
def test_a_wrong_password_s_back_off_outlives_the_attempts_given_up_after_it(
    unhashed: str,
) -> None:
    """The sequence hypothesis found: a wrong password at 0 s (the next attempt
    waits 0.5 s); the next attempt books 0.5 s, so one after it would start at
    1 s; it ends unhashed and hands that booking back. The one after starts at
    0.5 s, as the wrong password says: no later (the attempt in between made no
    guess), and no earlier, however often a guesser reserves and gives up."""
    failed = FailedLogins(base=0.5)
    q = HashQueue(workers=1, failed=failed, max_queued_per_source=1)
    wrong = queued(q, Kind.LOGIN, "a", "s1", 0.0)
    assert q.take_ready(0.0) == [wrong]
    q.finish(wrong, 0.0, verdict=False)
    second = ticket(q, Kind.LOGIN, "a", "s1", 0.0)
    assert (second.start, second.booked) == (0.5, ((0.0, 0.0), (1.0, 1.0)))
    if unhashed == "given up while it waited":
        now = 0.2
        q.finish(second, now)
    else:  # the address's line filled during its back-off
        now = 0.5
        other = queued(q, Kind.HASH, None, "s1", 0.1)
        assert q.enqueue(second, now) == Refusal("source", SOURCE_BUSY)
        assert q.take_ready(now) == [other]
        q.finish(other, now)
    assert second.state is State.DONE and failed.delay("a", "s1", 0.0) == 0.5
    for _ in range(3):  # a guesser reserving and giving up gains nothing
        q.finish(ticket(q, Kind.LOGIN, "a", "s1", now), now)
    third = ticket(q, Kind.LOGIN, "a", "s1", now)
    assert third.start == 0.5
    # It is hashed (and wrong): the back-off doubles from there, whatever
    # attempts were given up before it.
    assert q.enqueue(third, 0.5) is None and q.take_ready(0.5) == [third]
    q.finish(third, 0.5, verdict=False)
    assert ticket(q, Kind.LOGIN, "a", "s1", 0.5).start == 1.5


class _Drawn:
    """Stands for hypothesis's ``data`` in a replayed step: draws ``ticket``."""

    def __init__(self, ticket: T) -> None:
        self.ticket = ticket

    def draw(self, strategy: object) -> T:
        return self.ticket


def test_the_model_knows_a_ticket_refused_in_line_hands_its_booking_back() -> None:
    """The same sequence through :class:`QueueMachine`, whose model once kept the
    booking of a ticket refused when its start came (the queue rightly undoes
    it) and then wanted the next attempt to start at 1 s instead of 0.5 s."""
    m = QueueMachine()

    def pick(t: T) -> st.DataObject:
        return cast(st.DataObject, _Drawn(t))

    m.reserve(Kind.LOGIN, "a", "s1")
    first = m.live[-1]
    m.enqueue(pick(first))
    m.a_free_worker_always_takes_a_ticket()
    m.finish(pick(first), verdict=False)
    m.reserve(Kind.LOGIN, "a", "s1")
    second = m.live[-1]
    assert (second.start, second.state) == (0.5, State.RESERVED)
    for _ in range(2):  # the address's line fills during the back-off
        m.reserve(Kind.HASH, "b", "s1")
        m.enqueue(pick(m.live[-1]))
    m.advance(0.5)
    m.enqueue(pick(second))
    assert second.state is State.DONE and second not in m.live
    m.take_ready()
    m.promises_kept()
    m.reserve(Kind.LOGIN, "a", "s1")  # the model's floor: 0.5 s, not 1 s
    assert m.live[-1].start == 0.5
