"""One client connection's trio plumbing: its outbox and writer task, and the
switch that tells its reader to stop reading (graceful shutdown).

The outbox is a bounded list of lines drained by one writer task, so no two
tasks ever interleave ``send_all`` and a client that stops reading is
disconnected instead of stalling anybody else.

Why a list and not a memory channel: everything the hub queues for a
connection while the writer is not running (all the lines one read batch of
every other client produced) goes out in one ``send_all``, and waking the
writer is one ``reschedule`` -- no channel objects per connection, no
per-line hand-over between tasks (they were ~20% of the relay's CPU).
"""

from __future__ import annotations

import logging
import math

import trio

log = logging.getLogger("chathack.rendezvous")


class Connection:
    """A session's outbox (a bounded list of lines drained by one writer
    task), and the reader's stop switch."""

    __slots__ = (
        "_capacity",
        "_closing",
        "_out",
        "_wait_scope",
        "_writer",
        "cancel_scope",
        "drained",
        "peer",
        "reading",
        "stopping",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, peer: str, capacity: int) -> None:
        self.stream = stream
        self.peer = peer
        self._out: list[bytes] = []  # lines queued, not yet handed to send_all
        self._capacity = capacity  # most lines queued before the client counts as stuck
        self._closing = False  # close() was called or the writer ended: queue nothing more
        self._writer: trio.lowlevel.Task | None = None  # the writer, while it waits for lines
        self.cancel_scope = trio.CancelScope()
        #: Set once the reader has handled every line it read and reads no more.
        self.drained = trio.Event()
        self.stopping = False
        self._wait_scope: trio.CancelScope | None = None
        #: The reader's long-lived read scope while a read is waiting, else None.
        self.reading: trio.CancelScope | None = None

    # -- the outbox (called by the hub; never blocks) ------------------------
    def send(self, data: bytes) -> None:
        if self._closing:
            return
        out = self._out
        if len(out) >= self._capacity:
            if not self.cancel_scope.cancel_called:  # say it once, not per line
                log.warning("%s is not reading its messages; disconnecting it", self.peer)
            self.cancel_scope.cancel()
            return
        out.append(data)
        self._wake()

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        if self._closing:
            return
        if len(self._out) >= self._capacity:
            self.cancel_scope.cancel()
            return
        self._closing = True
        self._wake()

    def _wake(self) -> None:
        writer = self._writer
        if writer is not None:
            self._writer = None
            trio.lowlevel.reschedule(writer)

    # -- the reader's waits ---------------------------------------------------
    def interruptible(self) -> trio.CancelScope:
        """A scope for one wait of the reader (a rate-limit pause, a delay after
        failed logins) that :meth:`stop_reading` cancels; already cancelled
        once stopping. (Reads use one long-lived scope instead: ``reading``.)"""
        scope = trio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._wait_scope = scope
        return scope

    def stop_reading(self) -> None:
        """Shutdown: read nothing more, handle what was read (see ``drained``)."""
        self.stopping = True
        if self.reading is not None:
            self.reading.cancel()
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    # -- the writer task ------------------------------------------------------
    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _take(self) -> bytes:
        """Everything queued since the last write, as one write."""
        batch, self._out = self._out, []
        return batch[0] if len(batch) == 1 else b"".join(batch)

    async def run_writer(self, write_timeout: float) -> None:
        # The write timeout is the deadline of a scope that lives across many
        # writes, moved forward at most once per ``slack`` seconds (a new scope,
        # or a deadline assignment, per write cost more than the write's
        # system call): a stalled client is dropped between ``write_timeout``
        # and ``write_timeout + slack`` after its write began. A deadline that
        # expires while the writer waits for lines is not a stalled client:
        # the writer then waits outside any scope (an idle connection keeps
        # none alive) and opens a new one for its next write.
        slack = write_timeout / 100
        timed = write_timeout != math.inf
        current_task, wait = trio.lowlevel.current_task, trio.lowlevel.wait_task_rescheduled
        try:
            while True:
                if not self._out:  # idle: wait outside any scope
                    if self._closing:
                        return
                    self._writer = current_task()
                    await wait(self._abort_wait)
                    continue
                writing = False
                with trio.CancelScope() as scope:
                    while True:
                        if not self._out:
                            if self._closing:
                                return
                            writing = False
                            self._writer = current_task()
                            await wait(self._abort_wait)
                            continue
                        data = self._take()
                        if timed:
                            due = trio.current_time() + write_timeout
                            deadline = scope.deadline
                            if deadline == math.inf or deadline < due:
                                scope.deadline = due + slack
                        writing = True
                        try:
                            await self.stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            # The client went away (reset, closed): this connection
                            # ends; the error must not escape and stop the server.
                            log.debug("%s: connection lost while writing", self.peer)
                            return
                        del data  # not kept alive while the writer waits
                if writing:
                    log.warning("%s: write timed out; disconnecting", self.peer)
                    return
        finally:
            self._closing = True  # later lines have nobody to write them
            self._out = []
            self.cancel_scope.cancel()
