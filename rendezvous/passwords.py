"""Password hashing with argon2id, off the event loop, in a fair order.

argon2 is deliberately slow (about 0.2 s of two CPUs and 64 MiB per hash with
the library's RFC 9106 low-memory defaults), so it runs in worker threads,
at most ``workers`` at a time, and a login never stalls other clients.
:class:`HashScheduler` decides *who* hashes when: it is the thin trio driver
of :class:`~rendezvous.hashqueue.HashQueue`, so junk from a few addresses
cannot keep an honest login or registration waiting.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rendezvous.hashqueue import HashQueue, Kind, Refusal, State, Ticket

#: Shortest password accepted when registering.
MIN_PASSWORD_CHARS = 8
#: Threads hashing at once (each argon2id hash takes its own 64 MiB).
HASH_WORKERS = 2

INTERRUPTED = Refusal("interrupted", "The server is shutting down; the password was not checked")


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, workers: int = HASH_WORKERS) -> None:
        self.hasher = hasher or PasswordHasher()
        self.limiter = trio.CapacityLimiter(workers)

    @property
    def workers(self) -> int:
        return int(self.limiter.total_tokens)

    async def hash(self, secret: str) -> str:
        return await trio.to_thread.run_sync(self.hasher.hash, secret, limiter=self.limiter)

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        """Whether ``secret`` matches; and a fresh hash if the parameters changed."""

        def work() -> tuple[bool, str | None]:
            try:
                self.hasher.verify(pw_hash, secret)
            except (VerificationError, InvalidHashError):
                return False, None
            if self.hasher.check_needs_rehash(pw_hash):
                return True, self.hasher.hash(secret)
            return True, None

        return await trio.to_thread.run_sync(work, limiter=self.limiter)


def fast_hasher() -> PasswordHasher:
    """Cheap parameters, for tests and benchmarks only (never for real accounts)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class HashScheduler:
    """Runs password work in the order a :class:`HashQueue` decides.

    Use::

        ticket = scheduler.reserve(Kind.LOGIN, name, source)   # or a Refusal
        ok = None
        try:
            refusal = await scheduler.wait_turn(ticket, conn.interruptible)
            if refusal is None:
                ok, _ = await passwords.verify(...)             # now, in a thread
        finally:
            scheduler.done(ticket, ok)                           # always

    The queue starts a ticket only while fewer than ``workers`` run, so the
    work's own ``CapacityLimiter`` never makes it wait; it still bounds any
    hashing done outside the queue. Every wait here is under the caller's
    ``interruptible`` scope (shutdown cancels it) and the connection's own
    scope (the login deadline, a disconnect); a ticket given up is finished in
    ``done``, so the queue never keeps a worker for a connection that is gone.
    """

    def __init__(self, queue: HashQueue) -> None:
        self.queue = queue
        self._turns: dict[Ticket, trio.Event] = {}

    def reserve(self, kind: Kind, account: str | None, source: str) -> Ticket | Refusal:
        return self.queue.reserve(kind, account, source, trio.current_time())

    async def wait_turn(
        self, ticket: Ticket, interruptible: Callable[[], trio.CancelScope]
    ) -> Refusal | None:
        """Wait out the ticket's back-off, then for a worker; None: hash now.

        A refusal (the line filled during the back-off, or a shutdown) has
        finished the ticket already."""
        if ticket.start > trio.current_time():
            with interruptible() as pause:
                await trio.sleep_until(ticket.start)
            if pause.cancelled_caught:  # shutting down: not hashed at all
                self.done(ticket)
                return INTERRUPTED
        refusal = self.queue.enqueue(ticket, trio.current_time())
        if refusal is not None:
            return refusal
        self._dispatch()
        if ticket.state is State.QUEUED:
            turn = self._turns[ticket] = trio.Event()
            try:
                with interruptible():
                    await turn.wait()
            finally:
                del self._turns[ticket]
            if ticket.state is not State.RUNNING:
                self.done(ticket)
                return INTERRUPTED
        return None

    def done(self, ticket: Ticket, verdict: bool | None = None) -> None:
        """The ticket's work is over (or was never done); let the next one start."""
        self.queue.finish(ticket, trio.current_time(), verdict)
        self._dispatch()

    def _dispatch(self) -> None:
        for ticket in self.queue.take_ready(trio.current_time()):
            turn = self._turns.get(ticket)
            if turn is not None:
                turn.set()
