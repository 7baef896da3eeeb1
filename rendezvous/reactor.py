"""One task reads every logged-in plain-TCP connection, over an epoll of its own.

Why: a relay's life is short reads. With a task per connection, every read
costs trio a task switch and two ``epoll_ctl`` calls (trio registers a socket
for one wait at a time), and every idle client a parked task and its
coroutine frames. Here the sockets stay registered, level-triggered, in an
inner ``select.epoll`` for as long as they are read; trio waits on that one
descriptor; each wake-up reads every socket that is ready and handles its
lines (:class:`~rendezvous.lines.LoggedInLines`), and what all those reads
relay is written together at the end (one ``send`` per recipient per batch).
benchmarks/README.md measures what this saves (the ``compare`` scenario).

What a connection's own task did, the reactor does for it:

* **waits**: a line that needs one (a rate-limit pause, a ``::passwd``
  check) takes the socket out of the epoll, and the server runs that wait in
  a task of its own (:meth:`Owner.wait_for`) that hands the reader back when
  done: the client is slowed by TCP backpressure, as before, and its lines
  stay in order;
* **the end**: the connection's ``scope`` is its :class:`Reader`, so a close
  (once flushed) or an abort ends it here (:meth:`end`); the server then
  forgets it, out of the event loop's way (:meth:`Owner.forget`);
* **the idle timeout**: a sweep, when the quietest reader is due (at most
  every hundredth of the timeout), closes the readers that sent nothing for
  that long (a pause is not idleness);
* **shutdown**: :meth:`stop_reading`, and every reader's lines already read
  are handled, since a read is handled at once.

Connections that need their own task keep it: TLS (the ``SSLObject`` may hold
plaintext the socket no longer signals) and trio streams (tests), and
everyone until logged in (the login dialogue waits for argon2).
"""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Callable
from typing import Protocol

import trio

from chathack.protocol import format_server_line
from rendezvous.counts import Histogram
from rendezvous.lines import LoggedInLines, Reader, Wait
from rendezvous.transport import SocketTransport

log = logging.getLogger("chathack.rendezvous")

#: Ready sockets taken per wake-up; more wait for the next one (level-triggered).
MAX_EVENTS = 1024
#: The idle sweep runs at most this often (a short idle timeout in tests).
MIN_SWEEP_EVERY = 0.01


def idle_farewell(idle: float) -> str:
    """What a client idle for ``idle`` seconds is told as it is closed."""
    return (
        f"Nothing received from you for {idle:g} s; closing the connection "
        "(a client should send ::ping now and then)"
    )


class Owner(Protocol):
    """What the reactor needs of the server."""

    def hold(self) -> None:
        """Start a batch: what is sent is written at :meth:`release`."""

    def release(self) -> None: ...

    def wait_for(self, reader: Reader, wait: Wait) -> None:
        """Do ``wait`` for ``reader`` in a task, then hand it back (:meth:`Reactor.adopt`)."""

    def forget(self, reader: Reader) -> None:
        """The connection is over: out of the server's books, its socket closed."""

    def drained(self, reader: Reader) -> None:
        """Shutting down: everything ``reader`` read was handled."""

    def fault(self, exc: BaseException, ip: str, name: str | None) -> None: ...


class Reactor:
    """The reader of every adopted connection (see the module's docstring)."""

    def __init__(
        self,
        owner: Owner,
        lines: LoggedInLines,
        *,
        idle_timeout: float,
        clock: Callable[[], float],
        latency: Histogram | None = None,
    ) -> None:
        self._owner = owner
        self._handle = lines.handle
        self._clock = clock
        #: Per read, the time from its read to its lines written (--metrics only).
        self.latency = latency
        self._epoll = select.epoll()
        #: Every connection this reactor owns, by descriptor (registered or not).
        self._owned: dict[int, Reader] = {}
        self._ending: list[Reader] = []
        self._wake: trio.CancelScope | None = None
        self._idle = idle_timeout if idle_timeout > 0 else math.inf
        self._sweep_every = max(self._idle / 100, MIN_SWEEP_EVERY)
        self._next_sweep = math.inf

    def __len__(self) -> int:
        return len(self._owned)

    # -- taking a connection and giving it up ---------------------------------
    def adopt(self, reader: Reader) -> None:
        """Read for ``reader`` from now on (its buffer holds no complete line)."""
        transport = reader.conn.transport
        assert isinstance(transport, SocketTransport)
        new = reader.fd < 0  # else back from a wait
        if not new and reader.ender is not self:
            return  # it ended while it waited
        fd = transport.sock.fileno() if new else reader.fd
        self._epoll.register(fd, select.EPOLLIN)  # first: if it fails, nothing changed
        if new:
            reader.ender = self
            reader.conn.scope = reader
            reader.fd = fd
            self._owned[fd] = reader
        reader.listening = True
        reader.waiting = None
        reader.last_read = now = trio.current_time()
        if self._next_sweep == math.inf:
            self._next_sweep = now + self._idle
            if self._wake is not None:  # the loop is waiting with no sweep due
                self._wake.deadline = self._next_sweep

    def _unlisten(self, reader: Reader) -> None:
        if reader.listening:
            reader.listening = False
            self._epoll.unregister(reader.fd)

    def end(self, reader: Reader) -> None:
        """``reader``'s connection is over (its ``scope`` was cancelled): the
        server forgets it before the next wait, not in the middle of whatever
        ended it (a hub operation on another session, a batch)."""
        if reader.ender is not self:
            return
        reader.ender = None
        self._unlisten(reader)
        if reader.waiting is not None:
            # A task is doing a wait for it: stop that, and let the task hand
            # it over when it is done (finish()), so the connection is
            # forgotten after the last thing done for it, never before.
            reader.waiting.cancel()
            return
        self.finish(reader)

    def finish(self, reader: Reader) -> None:
        """Forget ``reader`` (ended) at the top of the next loop."""
        self._ending.append(reader)
        if self._wake is not None:
            self._wake.cancel()

    def stop_reading(self) -> None:
        """Shutdown: read nothing more. Every read was handled when it came;
        a reader in a wait is drained by the task doing it."""
        for reader in list(self._owned.values()):
            self._unlisten(reader)
            if reader.waiting is None:
                self._owner.drained(reader)

    # -- the loop -------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                self._settle()
                events = self._epoll.poll(0, MAX_EVENTS)
                if events:
                    self._read_ready(events)
                    # Others get their turn (writers, logins, trio's own I/O),
                    # then the sockets are polled again: while some are always
                    # ready, as under load, trio never has to register the epoll.
                    await trio.lowlevel.checkpoint()
                    continue
                with trio.CancelScope(deadline=self._next_sweep) as self._wake:
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                self._wake = None
        finally:
            self._wake = None
            try:
                self._ending = list(self._owned.values())
                for reader in self._ending:
                    reader.ender = None
                self._forget_ended()
            finally:
                self._epoll.close()

    def _settle(self) -> None:
        """Sweep the idle connections when due; forget those that ended (the
        sweep's among them: a connection with nothing left to write ends at once)."""
        now = trio.current_time()
        if now >= self._next_sweep:
            self._next_sweep = self._sweep(now)
        self._forget_ended()

    def _forget_ended(self) -> None:
        while self._ending:
            ending, self._ending = self._ending, []
            for reader in ending:
                if self._owned.get(reader.fd) is reader:
                    del self._owned[reader.fd]
                try:
                    self._owner.forget(reader)
                except Exception as exc:
                    self._owner.fault(exc, reader.session.ip, reader.session.name)

    def _sweep(self, now: float) -> float:
        """Close the readers quiet for the idle timeout; when to sweep next:
        when the quietest of the others is due (so a client is closed right
        at the timeout), but not sooner than ``_sweep_every`` from now (a
        sweep looks at every reader)."""
        idle = self._idle
        quiet_since, earliest = now - idle, math.inf
        for reader in list(self._owned.values()):
            if not reader.listening:
                continue  # waiting (a pause is not idleness) or ending
            if reader.last_read <= quiet_since:
                self._unlisten(reader)
                session = reader.session
                log.info("%s (%s) idle for %g s; closed", session.ip, session.name, idle)
                try:
                    session.outbox.send(format_server_line("BYE", idle_farewell(idle)))
                    reader.conn.close()
                except Exception as exc:
                    self._owner.fault(exc, session.ip, session.name)
                    reader.conn.abort()
            elif reader.last_read < earliest:
                earliest = reader.last_read
        return max(earliest + idle, now + self._sweep_every)

    def _read_ready(self, events: list[tuple[int, int]]) -> None:
        """Read every ready socket and handle what came; write it all at the end.

        Nothing raised here may leave the loop (it would stop the server): a
        bug met on one client's lines ends that client, and one met while
        writing the batch is reported and the loop goes on."""
        owned, handle, owner = self._owned, self._handle, self._owner
        now, wall = trio.current_time(), self._clock()
        reads = 0
        owner.hold()
        try:
            for fd, _ in events:
                reader = owned.get(fd)
                if reader is None or not reader.listening:
                    continue
                conn = reader.conn
                data = conn.transport.read_now()  # type: ignore[union-attr]  # adopted: a SocketTransport
                if data is None:
                    continue
                reads += 1
                try:
                    if not data:  # the client closed, or the connection broke
                        self._unlisten(reader)
                        conn.close()
                        continue
                    reader.last_read = now
                    reader.buf.receive_data(data)
                    wait = handle(reader, now, wall)
                    if conn.closing:
                        self._unlisten(reader)  # it ends: no wait is started for it
                    elif wait is not None:
                        self._unlisten(reader)
                        reader.waiting = trio.CancelScope()
                        owner.wait_for(reader, wait)
                except Exception as exc:
                    # A bug met on this client's lines: it ends, nobody else notices.
                    self._unlisten(reader)
                    reader.waiting = None  # no task is waiting for it
                    owner.fault(exc, reader.session.ip, reader.session.name)
                    conn.abort()
        finally:
            try:
                owner.release()
            except Exception as exc:
                owner.fault(exc, "-", "a batch of reads")
        latency = self.latency
        if latency is not None:
            took = trio.current_time() - now
            for _ in range(reads):
                latency.observe(took)
