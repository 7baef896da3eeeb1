"""One client connection's trio plumbing: its outbox and writer task, and the
switch that tells its reader to stop reading (graceful shutdown).

The outbox is a bounded channel drained by one writer task, so no two tasks
ever interleave ``send_all`` and a client that stops reading is disconnected
instead of stalling anybody else.
"""

from __future__ import annotations

import logging

import trio

log = logging.getLogger("chathack.rendezvous")


class Connection:
    """A session's outbox (a bounded channel drained by one writer task), and
    the reader's stop switch."""

    __slots__ = (
        "_recv",
        "_send",
        "_wait_scope",
        "cancel_scope",
        "drained",
        "peer",
        "stopping",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, peer: str, capacity: int) -> None:
        self.stream = stream
        self.peer = peer
        self._send, self._recv = trio.open_memory_channel[bytes | None](capacity)
        self.cancel_scope = trio.CancelScope()
        #: Set once the reader has handled every line it read and reads no more.
        self.drained = trio.Event()
        self.stopping = False
        self._wait_scope: trio.CancelScope | None = None

    # -- the outbox (called by the hub; never blocks) ------------------------
    def send(self, data: bytes) -> None:
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            if not self.cancel_scope.cancel_called:  # say it once, not per line
                log.warning("%s is not reading its messages; disconnecting it", self.peer)
            self.cancel_scope.cancel()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        try:
            self._send.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.cancel_scope.cancel()

    # -- the reader's waits ---------------------------------------------------
    def interruptible(self) -> trio.CancelScope:
        """A scope for one wait of the reader (a read, a rate-limit pause) that
        :meth:`stop_reading` cancels; already cancelled once stopping."""
        scope = trio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._wait_scope = scope
        return scope

    def stop_reading(self) -> None:
        """Shutdown: read nothing more, handle what was read (see ``drained``)."""
        self.stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    # -- the writer task ------------------------------------------------------
    async def run_writer(self, write_timeout: float) -> None:
        async with self._recv:
            async for first in self._recv:
                batch = [first]
                # Coalesce whatever else is already queued into one write.
                while batch[-1] is not None:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                data = b"".join(b for b in batch if b is not None)
                if data:
                    with trio.move_on_after(write_timeout) as scope:
                        try:
                            await self.stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            # The client went away (reset, closed): this connection
                            # ends; the error must not escape and stop the server.
                            log.debug("%s: connection lost while writing", self.peer)
                            break
                    if scope.cancelled_caught:
                        log.warning("%s: write timed out; disconnecting", self.peer)
                        break
                if batch[-1] is None:
                    break
        self.cancel_scope.cancel()
