"""Fair scheduling of password hashing (sans-IO: time is a parameter).

argon2id is the rendezvous's one expensive operation (about 0.2 s of two
CPUs and 64 MiB per hash here), so whoever fills the line of hashes decides
who waits. This module decides who hashes next; :class:`~rendezvous.passwords.HashScheduler`
is the thin trio driver that runs the work in threads in that order.

Theory of operation
-------------------
Each password check or hash (a login, a registration, ``::passwd``) is a
:class:`Ticket`::

    reserve() -> RESERVED --enqueue()--> QUEUED --take_ready()--> RUNNING --finish()--> DONE
                 waits out its back-off   waits for a worker      hashing

:meth:`HashQueue.reserve` is where the cheap refusals happen, before anything
is hashed (a :class:`Refusal` carries the ``ERROR`` text for the client):

* **one ticket per account** (its lower-cased name) at a time, from any
  connection: a second attempt while one is reserved, queued or running is
  refused. Making it wait instead would let an attacker park a guess on each
  of its connections behind the account's back-off, every one holding a place
  in line; refused, it costs one line, and there is never more than one
  ticket per account anywhere;
* a **registration** over the global rate of new accounts is refused;
* the line of queued tickets over its bound, in all (``max_queued``) or from
  one source address (``max_queued_per_source``), is refused: "busy".

It is also where the back-off after wrong passwords becomes a reservation
(:meth:`~rendezvous.accounts.FailedLogins.reserve`): the ticket's ``start``
is booked now, so attempts sent at once are spaced by the back-off instead
of all passing together. The driver waits until ``start``, then enqueues
(the bounds are checked again: the line may have filled meanwhile).

A ticket that ends before it is hashed (given up, or refused when it comes
in line) made no guess, so it takes its booking back and does not delay the
next attempt; unless a later reservation booked on top of it, and then it
stays (erring on the slow side). This never shortens the back-off owed for
wrong passwords: that counts from the failures themselves, not the bookings.

:meth:`HashQueue.take_ready` starts tickets while fewer than ``workers``
run. It serves the *source address* (not the connection, not the account)
whose last turn is the oldest, FIFO within a source: sixteen connections
from one address get one turn per round like one connection does, and a
source that has not hashed lately (a newcomer) goes first. No source gets a
second turn while another waits for its first, so an honest client waits for
the hashes already running plus about one per busier source ahead of it,
never for everything the junk queued; the bounds keep that finite when there
are very many sources.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum

from rendezvous.accounts import FailedLogins
from rendezvous.counts import WAIT_BOUNDS, Histogram
from rendezvous.ratelimit import TokenBucket

#: Tickets waiting for a worker, in all: past it a check is refused as busy.
#: About 5 s of work for 2 workers at 0.2 s a hash: "try again in a few seconds".
MAX_QUEUED = 32
#: Tickets waiting for a worker from one source address. With round-robin
#: turns more would not delay anyone else, but they would fill ``MAX_QUEUED``:
#: this way it takes eight busy addresses, not two, to make the server busy.
MAX_QUEUED_PER_SOURCE = 4
#: Source addresses whose last turn is remembered (oldest forgotten first):
#: a forgotten one counts as a newcomer again, which costs fairness, not memory.
MAX_SOURCES = 65536

BUSY = "The server is busy checking passwords; try again in a few seconds"
SOURCE_BUSY = "Too many password checks from your address are waiting; try again in a few seconds"
NEW_ACCOUNTS = "Too many new accounts were registered in the last minute; try again in a minute"
PENDING = "Another password attempt for {} is pending; try again in a few seconds"


class Kind(Enum):
    """What a ticket hashes, which decides what it reserves and what it counts."""

    #: A password against an account's hash: one per account, the back-off applies,
    #: and the verdict counts (a wrong password makes the next attempt wait).
    LOGIN = "login"
    #: A new account's password: one per name, the source's back-off applies, and
    #: it takes one of the global new-account tokens.
    REGISTER = "register"
    #: The new password of a logged-in user (``::passwd``, after the old one was
    #: checked): only fairness and the bounds apply.
    HASH = "hash"


class State(Enum):
    RESERVED = "reserved"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A check refused before any hashing; ``text`` is the client's ``RETRY`` line
    (or, in ``::passwd``, its ``ERROR``)."""

    reason: str  # "account", "busy", "source", "new-accounts", "interrupted"
    text: str


@dataclass(eq=False, slots=True)
class Ticket:
    """One password check or hash, from reservation to its end."""

    kind: Kind
    account: str | None  # the lower-cased name it holds, None for Kind.HASH
    source: str
    #: Not before this time: the back-off reserved for it (``now`` when none).
    start: float
    state: State = State.RESERVED
    queued_at: float = 0.0
    started_at: float = 0.0
    #: Hashes other tickets started while this one was queued: its wait, counted
    #: in work rather than seconds (a loaded machine slows both alike).
    started_before: int = 0
    _mark: int = field(default=0, repr=False)  # HashQueue.started when it was queued
    #: The back-off bookings before and after its reservation (undone if it never runs).
    booked: tuple[tuple[float | None, float | None], tuple[float | None, float | None]] | None = (
        field(default=None, repr=False)
    )


@dataclass(frozen=True, slots=True)
class HashQueueStats:
    """What the queue holds and how long tickets waited (for metrics)."""

    reserved: int  # waiting out a back-off
    queued: int  # waiting for a worker
    running: int
    sources: int  # source addresses with tickets queued
    started: int  # hashes started, in all
    refused: dict[str, int]  # by Refusal.reason
    wait_last: float  # seconds queued, of the last ticket started
    wait_max: float
    wait_mean: float


class HashQueue:
    """Who hashes next: fair across source addresses, one ticket per account, bounded."""

    def __init__(
        self,
        workers: int,
        failed: FailedLogins | None = None,
        *,
        max_queued: int = MAX_QUEUED,
        max_queued_per_source: int = MAX_QUEUED_PER_SOURCE,
        new_accounts_per_minute: float = 0.0,
        now: float = 0.0,
    ) -> None:
        if workers < 1 or max_queued < 1 or max_queued_per_source < 1:
            raise ValueError("HashQueue: workers and bounds must be at least 1")
        self.workers = workers
        self.failed = failed or FailedLogins()
        self.max_queued = max_queued
        self.max_queued_per_source = max_queued_per_source
        #: Registrations a minute in all, that many at once (None: no limit).
        self.new_accounts = (
            TokenBucket(new_accounts_per_minute / 60.0, max(1.0, new_accounts_per_minute), now)
            if new_accounts_per_minute > 0
            else None
        )
        self._holders: dict[str, Ticket] = {}  # account -> its one live ticket
        self._lines: dict[str, deque[Ticket]] = {}  # source -> its queued tickets, FIFO
        # Sources with queued tickets, by (last turn, when it joined): a heap entry
        # is current only while _joined[source] is its second field (lazy deletion).
        self._heap: list[tuple[int, int, str]] = []
        self._joined: dict[str, int] = {}
        self._last_turn: OrderedDict[str, int] = OrderedDict()
        self._joins = 0
        self.reserved = 0
        self.queued = 0
        self.running = 0
        self.started = 0
        self.refused: Counter[str] = Counter()
        self._wait_last = self._wait_max = self._wait_total = 0.0
        #: Seconds each started ticket waited in the queue (for metrics).
        self.waits = Histogram(WAIT_BOUNDS)

    # -- refusals -------------------------------------------------------------
    def _refuse(self, reason: str, text: str) -> Refusal:
        self.refused[reason] += 1
        return Refusal(reason, text)

    def _over_bound(self, source: str) -> Refusal | None:
        if self.queued >= self.max_queued:
            return self._refuse("busy", BUSY)
        line = self._lines.get(source)
        if line is not None and len(line) >= self.max_queued_per_source:
            return self._refuse("source", SOURCE_BUSY)
        return None

    # -- the life of a ticket -------------------------------------------------
    def reserve(self, kind: Kind, account: str | None, source: str, now: float) -> Ticket | Refusal:
        """A ticket for ``account`` (its name as the user typed it) from
        ``source``, its back-off booked; or why not, at no cost."""
        key = None if kind is Kind.HASH or account is None else account.lower()
        if key is not None and key in self._holders:
            if kind is Kind.REGISTER:
                text = f"Someone is registering {account} right now; pick another name"
            else:
                text = PENDING.format(account)
            return self._refuse("account", text)
        refusal = self._over_bound(source)
        if refusal is not None:
            return refusal
        if kind is Kind.REGISTER and self.new_accounts is not None:
            if self.new_accounts.tokens(now) < 1:
                return self._refuse("new-accounts", NEW_ACCOUNTS)
            self.new_accounts.take(now)
        if key is None:
            start, booked = now, None
        else:
            before = self.failed.bookings(key, source)
            start = self.failed.reserve(key, source, now)
            booked = (before, self.failed.bookings(key, source))
        ticket = Ticket(kind, key, source, start, booked=booked)
        if key is not None:
            self._holders[key] = ticket
        self.reserved += 1
        return ticket

    def enqueue(self, ticket: Ticket, now: float) -> Refusal | None:
        """Put a reserved ticket in line (its ``start`` has come); or refuse it,
        and then it is finished."""
        assert ticket.state is State.RESERVED, ticket
        refusal = self._over_bound(ticket.source)
        if refusal is not None:
            self.finish(ticket, now)
            return refusal
        self.reserved -= 1
        self.queued += 1
        ticket.state, ticket.queued_at, ticket._mark = State.QUEUED, now, self.started
        line = self._lines.get(ticket.source)
        if line is None:
            line = self._lines[ticket.source] = deque()
        line.append(ticket)
        if ticket.source not in self._joined:
            self._join(ticket.source)
        return None

    def _join(self, source: str) -> None:
        self._joins += 1
        self._joined[source] = self._joins
        heapq.heappush(self._heap, (self._last_turn.get(source, -1), self._joins, source))

    def take_ready(self, now: float) -> list[Ticket]:
        """Start tickets, fairly, while fewer than ``workers`` run: the caller
        hashes each of them now and calls :meth:`finish` when done."""
        ready: list[Ticket] = []
        while self.running < self.workers and self._heap:
            _, joined, source = heapq.heappop(self._heap)
            if self._joined.get(source) != joined:
                continue  # emptied by cancellations since it joined
            del self._joined[source]
            self._last_turn[source] = self.started
            self._last_turn.move_to_end(source)
            while len(self._last_turn) > MAX_SOURCES:
                self._last_turn.popitem(last=False)
            line = self._lines[source]
            ticket = line.popleft()
            if line:
                self._join(source)  # to the back: its last turn is now the newest
            else:
                del self._lines[source]
            self.queued -= 1
            self.running += 1
            ticket.state, ticket.started_at = State.RUNNING, now
            ticket.started_before = self.started - ticket._mark
            self.started += 1
            wait = now - ticket.queued_at
            self._wait_last, self._wait_max = wait, max(self._wait_max, wait)
            self._wait_total += wait
            self.waits.observe(wait)
            ready.append(ticket)
        if len(self._heap) > 2 * len(self._joined) + 64:  # stale entries piled up
            self._heap = [e for e in self._heap if self._joined.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
        return ready

    def finish(self, ticket: Ticket, now: float, verdict: bool | None = None) -> None:
        """The ticket is over: hashed (``verdict``: whether a login's password
        was right; None when there is none), refused, or given up. Idempotent."""
        if ticket.state in (State.RESERVED, State.QUEUED):
            self._unhashed(ticket, now)
        match ticket.state:
            case State.DONE:
                return
            case State.RESERVED:
                self.reserved -= 1
            case State.QUEUED:
                self.queued -= 1
                line = self._lines[ticket.source]
                line.remove(ticket)  # at most max_queued_per_source long
                if not line:
                    del self._lines[ticket.source]
                    del self._joined[ticket.source]  # its heap entry is stale now
            case State.RUNNING:
                self.running -= 1
                if ticket.kind is Kind.LOGIN and ticket.account is not None:
                    if verdict is True:
                        self.failed.succeeded(ticket.account, ticket.source)
                    elif verdict is False:
                        self.failed.failed(ticket.account, ticket.source, now)
        ticket.state = State.DONE
        if ticket.account is not None and self._holders.get(ticket.account) is ticket:
            del self._holders[ticket.account]

    def _unhashed(self, ticket: Ticket, now: float) -> None:
        """A ticket given up (or refused) before it was hashed takes back what it
        reserved: its back-off booking, and a registration's new-account token."""
        if ticket.booked is not None and ticket.account is not None:
            self.failed.unbook(ticket.account, ticket.source, *ticket.booked)
        if ticket.kind is Kind.REGISTER and self.new_accounts is not None:
            self.new_accounts.give_back(now)

    # -- reading --------------------------------------------------------------
    def holder(self, account: str) -> Ticket | None:
        """The live ticket of ``account``, if any."""
        return self._holders.get(account.lower())

    def stats(self) -> HashQueueStats:
        return HashQueueStats(
            reserved=self.reserved,
            queued=self.queued,
            running=self.running,
            sources=len(self._joined),
            started=self.started,
            refused=dict(self.refused),
            wait_last=self._wait_last,
            wait_max=self._wait_max,
            wait_mean=self._wait_total / self.started if self.started else 0.0,
        )
