"""One client connection's output: a bounded outbox, written at once when the
socket takes it, by a writer task only when it does not.

Theory of operation. The hub queues lines with :meth:`Connection.send`, which
never blocks. While a reader is handling the lines of one read, the lines it
produces are held (:class:`Batch`) and written when it is done: everything
one read made for one client goes out in one system call. Outside a batch a
line is written at once. The write is a non-blocking ``send`` from whatever
task produced the line, so the common case wakes no other task. Whatever the
kernel does not take -- the client is slow, or the transport cannot write
without waiting (a trio stream) -- stays in the outbox, and a writer
task is started to drain it. Over a plain socket that task ends as soon as
the outbox is empty (over TLS, the ciphertext backlog too); over a trio
stream (every write goes through it) it parks between writes rather than
being started again for each.

So a connection has at most one reader (its own task until it logs in, the
server's reactor after, rendezvous/reactor.py) plus a writer task only while
output is backed up; the style guide's "one reader and one writer task"
became "a writer when needed" because a parked writer per connection cost
a third of the idle memory and a task switch per relayed line (see
benchmarks/README.md). What the writer guaranteed still holds:

* only one write is under way per connection (the writer, or nobody: the
  synchronous path writes only when no writer runs and nothing is queued),
  so bytes are never interleaved or reordered;
* the outbox is bounded in lines: a client that lets ``capacity`` lines
  pile up is disconnected, and one that takes nothing for ``write_timeout``
  seconds is disconnected, so no client can stall anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from chathack.text import neutralise
from rendezvous.counts import Counts
from rendezvous.transport import TLSTransport, Transport

log = logging.getLogger("chathack.rendezvous")

Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class Cancellable(Protocol):
    """What ends a connection's reading: a cancel scope, or the reactor's ``Reader``."""

    def cancel(self) -> None: ...


#: Told of an exception nothing expected while writing to a connection (which
#: is dropped): the server counts and logs it.
OnFault = Callable[[BaseException, str, str | None], None]


class Batch:
    """Lines produced while a reader handles one read are written at its end.

    ``hold()`` ... ``release()`` bracket synchronous code only (no ``await``
    between them), so nothing waits long in a batch.
    """

    __slots__ = ("held", "pending")

    def __init__(self) -> None:
        self.held = False
        self.pending: list[Connection] = []

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        pending = self.pending
        if pending:
            self.pending = []
            for conn in pending:
                # Another client's write failing in a way nobody foresaw drops
                # that client, not the one whose read made the lines.
                try:
                    conn.flush()
                except Exception as exc:
                    conn.fail(exc)


class Connection:
    """A session's outbox, its writes, and the reader's cancel scope."""

    __slots__ = (
        "_batch",
        "_capacity",
        "_counts",
        "_done",
        "_on_fault",
        "_out",
        "_parked",
        "_queued",
        "_spawn",
        "_wait_scope",
        "_writer_scope",
        "_writing",
        "aborted",
        "closing",
        "peer",
        "reading",
        "scope",
        "stopping",
        "transport",
        "write_timeout",
    )

    def __init__(
        self,
        transport: Transport,
        peer: str,
        capacity: int,
        *,
        spawn: Spawn,
        batch: Batch | None = None,
        write_timeout: float = 20.0,
        on_fault: OnFault | None = None,
        counts: Counts | None = None,
    ) -> None:
        self.transport = transport
        self._counts = counts  # slow readers and overflowing outboxes are counted
        self._on_fault = on_fault
        self.peer = peer
        self._capacity = capacity  # most lines queued before the client counts as stuck
        self._spawn = spawn  # starts the writer task (in a nursery that outlives it)
        self._batch = batch or Batch()
        self.write_timeout = write_timeout
        self._out: list[bytes] = []  # queued, not yet handed to the transport
        self._queued = 0  # lines in _out (an entry may be a run of lines)
        self._writing = False  # a write is under way in the writer task (parked: no)
        self._writer_scope: trio.CancelScope | None = None
        self._parked: trio.lowlevel.Task | None = None  # the writer, idle (streams only)
        if isinstance(transport, TLSTransport):
            transport.wake_writer = self._writer_needed
        self._done: trio.Event | None = None  # made when someone waits for the writer
        #: close() or abort() was called: queue nothing more.
        self.closing = False
        #: True once the connection was dropped (stuck or broken), not closed cleanly.
        self.aborted = False
        #: The reader's scope: its deadline is the login deadline, then the idle
        #: timeout; close() (once flushed) and abort() cancel it. Once the
        #: reactor reads for the connection, its ``Reader`` (whose cancel()
        #: has the reactor end the connection).
        self.scope: trio.CancelScope | Cancellable = trio.CancelScope()
        self.stopping = False  # shutting down: read nothing more
        self.reading = False  # the reader is waiting for bytes (set by the reader)
        self._wait_scope: trio.CancelScope | None = None

    # -- the outbox (called by the hub; never blocks) ------------------------
    def send(self, data: bytes, lines: int = 1) -> None:
        """Queue ``data``, ``lines`` complete lines (a run relayed in one piece
        counts as its lines against the outbox's bound)."""
        if self.closing:
            return
        out = self._out
        if self._queued + lines > self._capacity:
            log.warning("%s is not reading its messages; disconnecting it", self.peer)
            if self._counts is not None:
                self._counts.outbox_overflows += 1
            self.abort()
            return
        out.append(data)
        self._queued += lines
        if len(out) == 1 and not self._writing:
            if self._batch.held:
                self._batch.pending.append(self)
            else:
                self.flush()

    def close(self) -> None:
        """Flush what is queued, then end the connection."""
        if self.closing:
            return
        self.closing = True
        if not self._out and not self._writing:
            self.scope.cancel()  # nothing to write: the reader ends now
            self._wake_parked()  # and a parked writer too
        elif not self._batch.held:
            self.flush()

    def abort(self) -> None:
        """Drop the connection now, unwritten lines and all."""
        self.closing = True
        self.aborted = True
        self._out = []
        self._queued = 0
        self.scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    def fail(self, exc: BaseException) -> None:
        """An unexpected exception while writing: drop this connection, report it."""
        self.abort()
        if self._on_fault is not None:
            self._on_fault(exc, self.peer, None)
        else:
            log.error(
                "%s: dropped after an unexpected %s: %s",
                self.peer,
                type(exc).__name__,
                neutralise(str(exc)[:200]),
            )

    @property
    def writing(self) -> bool:
        return self._writing

    # -- writing ------------------------------------------------------------
    def _take(self) -> bytes:
        batch, self._out = self._out, []
        self._queued = 0
        return batch[0] if len(batch) == 1 else b"".join(batch)

    def flush(self) -> None:
        """Write what is queued now; start the writer for what the transport does not take."""
        if self._writing or not self._out:
            return
        data = self._take()
        try:
            sent = self.transport.try_send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("%s: connection lost while writing", self.peer)
            self.abort()
            return
        if sent < len(data) or self.transport.backlog:
            if sent < len(data):
                rest = data[sent:]
                self._out.insert(0, rest)
                self._queued += rest.count(b"\n")
            self._start_writer()
        elif self.closing:
            self.scope.cancel()  # flushed: the reader ends now

    def _start_writer(self) -> None:
        self._writing = True
        if not self._wake_parked():
            self._spawn(self._drain)

    def _writer_needed(self) -> None:
        """The transport holds bytes the socket did not take (TLS records)."""
        if not self._writing and not self.closing:
            self._start_writer()

    def _wake_parked(self) -> bool:
        parked = self._parked
        if parked is None:
            return False
        self._parked = None
        trio.lowlevel.reschedule(parked)
        return True

    def _unpark(self, _: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _idle(self) -> None:
        self._writing = False
        if self._done is not None:
            self._done.set()
            self._done = None

    async def _drain(self) -> None:
        """The writer task: write until the outbox (and any TLS backlog) is
        empty, then end -- or, over a transport that cannot write without it
        (a trio stream), park until there is more: waking a parked task is
        cheaper than starting one per write."""
        stalled = timer_fired = False
        failure: Exception | None = None
        park = self.transport.keeps_writer
        try:
            with trio.CancelScope() as self._writer_scope:
                while True:
                    while self._out or self.transport.backlog:
                        data = self._take() if self._out else b""
                        with trio.move_on_after(self.write_timeout) as timer:
                            await self.transport.send_all(data)
                        del data  # not kept alive while we wait for nothing
                        if timer.cancelled_caught:
                            stalled = timer_fired = True
                            break
                    if stalled or not park or self.closing:
                        break
                    self._idle()
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._unpark)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away (reset, closed): this connection ends; the
            # error must not escape and stop the server.
            log.debug("%s: connection lost while writing", self.peer)
            stalled = True
        except Exception as exc:
            # This task runs in the server's nursery: anything escaping it
            # would stop every connection. Only this one ends.
            failure = exc
        finally:
            self._parked = None
            self._writer_scope = None
            self._idle()
        if failure is not None:
            self.fail(failure)
        elif stalled:
            if not self.aborted:
                log.warning("%s: write timed out or failed; disconnecting", self.peer)
                if self._counts is not None and timer_fired:
                    self._counts.slow_readers += 1
            self.abort()
        elif self.closing:
            self.scope.cancel()

    async def wait_written(self) -> None:
        """Return once nothing is being written (the writer task, if any, ended or parked)."""
        while self._writing:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()

    # -- the reader's waits ---------------------------------------------------
    def interruptible(self) -> trio.CancelScope:
        """A scope for one wait of the reader (a rate-limit pause, a delay after
        failed logins) that :meth:`stop_reading` cancels; already cancelled
        once stopping."""
        scope = trio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._wait_scope = scope
        return scope

    def stop_reading(self) -> None:
        """Shutdown: read nothing more, handle what was read (a read that is
        waiting is cancelled: that loses nothing)."""
        self.stopping = True
        if self.reading:
            self.scope.cancel()
        if self._wait_scope is not None:
            self._wait_scope.cancel()
