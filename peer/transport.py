"""Byte streams with one writer task each: the peer's side of the rendezvous
connection (lines) and of a direct link (frames).

Both follow the same shape as the server's connections: a bounded channel
drained by a single writer task, so nothing interleaves ``send_all`` and a
stalled other side cannot block the caller (``send`` never waits; when the
queue is full the stream counts as broken).
"""

from __future__ import annotations

import math
import socket

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, FrameDecoder, frame_from_bytes
from chathack.protocol import LineBuffer, ServerEvent, parse_server_line

#: Bytes asked of a socket per read.
RECV_BYTES = 65536
#: Items queued for one stream before it counts as stalled.
QUEUE_ITEMS = 4096
#: Seconds one write may block before the stream counts as stalled.
WRITE_TIMEOUT = 15.0


class StreamWriter:
    """A bounded queue of byte strings written by one task, coalesced.

    The queue is a plain list and the writer is woken with one
    ``reschedule`` (no memory channel): on a direct link with one message in
    flight, the hand-over between the sending task and the writer is a
    good part of the latency. Over a ``trio.SocketStream``, ``send`` even
    skips that hand-over while the writer is idle: it offers the bytes to the
    non-blocking socket itself, and queues only what the socket does not take
    (the writer then carries on as usual, write timeout included).
    """

    __slots__ = ("_capacity", "_finished", "_out", "_sock", "_writer", "broken", "done", "stream")

    def __init__(self, stream: trio.abc.Stream, capacity: int = QUEUE_ITEMS) -> None:
        self.stream = stream
        self._sock = _raw_socket(stream)
        self._out: list[bytes] = []
        self._capacity = capacity
        self._finished = False  # finish() was called: nothing more is queued
        self._writer: trio.lowlevel.Task | None = None  # the writer, while it waits
        self.broken = False
        self.done = trio.Event()

    def send(self, data: bytes) -> bool:
        """Queue ``data``; False if the stream is broken or stalled."""
        if self.broken or self._finished:
            self.broken = True
            return False
        if len(self._out) >= self._capacity:
            self.broken = True
            return False
        if self._writer is not None and self._sock is not None:
            # The writer is idle: nothing is queued and no write is under way,
            # so the bytes may go straight to the socket without the hand-over
            # to the writer task. What the socket does not take at once (or an
            # error) is left to the writer, as before.
            try:
                sent = self._sock.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return True
            data = data[sent:]
        self._out.append(data)
        self._wake()
        return True

    def finish(self) -> None:
        """No more data: the writer flushes what is queued, half-closes, and returns."""
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        writer = self._writer
        if writer is not None:
            self._writer = None
            trio.lowlevel.reschedule(writer)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self) -> None:
        # The write timeout is the deadline of a scope that lives across many
        # writes, moved forward at most once per ``slack`` seconds: a scope
        # per write (``fail_after``) cost ~30 us of the direct link's one-way
        # latency here. A deadline that expires while the writer waits for
        # data is no stall: the writer then waits outside any scope.
        slack = WRITE_TIMEOUT / 100
        try:
            while True:
                if not self._out:
                    if self._finished:
                        break
                    await self._wait()
                    continue
                writing = False
                with trio.CancelScope() as scope:
                    while self._out or not self._finished:
                        if not self._out:
                            writing = False
                            await self._wait()
                            continue
                        batch, self._out = self._out, []
                        due = trio.current_time() + WRITE_TIMEOUT
                        if scope.deadline == math.inf or scope.deadline < due:
                            scope.deadline = due + slack
                        writing = True
                        await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                        del batch
                if scope.cancelled_caught and writing:
                    raise trio.TooSlowError
            # finish() was called: tell the other side we are done (it sees EOF).
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            self.broken = True
        finally:
            self.broken = True
            self._out = []
            self.done.set()

    async def _wait(self) -> None:
        self._writer = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The non-blocking OS socket under a trio ``SocketStream``, else None."""
    if not isinstance(stream, trio.SocketStream):
        return None
    sock = getattr(stream.socket, "_sock", None)  # trio keeps it there
    if not isinstance(sock, socket.socket) or sock.getblocking():
        return None
    return sock


class LineReader:
    """Parsed server lines from a stream; ``None`` at end of stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = LineBuffer()

    async def next_event(self) -> ServerEvent | None:
        while True:
            try:
                line = self.buf.next_line()
            except RemoteProtocolError:
                continue  # an unreadable line from the server: skip it
            if line is not None:
                try:
                    return parse_server_line(line)
                except RemoteProtocolError:
                    continue
            if self.buf.at_eof:
                return None
            try:
                data = await self.stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.buf.receive_data(data)


class FrameReader:
    """Frames from a direct stream; ``None`` at end of stream.

    Raises :class:`RemoteProtocolError` for a malformed frame (fatal for the link).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        # A large frame (a file chunk) is read straight into its own buffer.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None

    async def next_frame(self) -> Frame | None:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            if self._socket is not None:
                large = self.decoder.take_large(RECV_BYTES)
                if large is not None:
                    return await self._read_large(*large)
            try:
                data = await self.stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            self.decoder.receive_data(data)

    async def _read_large(self, body: bytearray, held: int) -> Frame | None:
        assert self._socket is not None
        with memoryview(body) as view:
            while held < len(body):
                try:
                    got = await self._socket.recv_into(view[held:])
                except OSError:
                    got = 0
                if not got:
                    return None
                held += got
        return frame_from_bytes(body)
