"""Byte streams with one writer task each: the peer's side of the rendezvous
connection (lines) and of a direct link (frames).

Both follow the same shape as the server's connections: a bounded channel
drained by a single writer task, so nothing interleaves ``send_all`` and a
stalled other side cannot block the caller (``send`` never waits; when the
queue is full the stream counts as broken).
"""

from __future__ import annotations

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, FrameDecoder
from chathack.protocol import LineBuffer, ServerEvent, parse_server_line

#: Bytes asked of a socket per read.
RECV_BYTES = 65536
#: Items queued for one stream before it counts as stalled.
QUEUE_ITEMS = 4096
#: Seconds one write may block before the stream counts as stalled.
WRITE_TIMEOUT = 15.0


class StreamWriter:
    """A bounded queue of byte strings written by one task, coalesced."""

    def __init__(self, stream: trio.abc.Stream, capacity: int = QUEUE_ITEMS) -> None:
        self.stream = stream
        self._send, self._recv = trio.open_memory_channel[bytes](capacity)
        self.broken = False
        self.done = trio.Event()

    def send(self, data: bytes) -> bool:
        """Queue ``data``; False if the stream is broken or stalled."""
        if self.broken:
            return False
        try:
            self._send.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.broken = True
            return False
        return True

    def finish(self) -> None:
        """No more data: the writer flushes what is queued, half-closes, and returns."""
        self._send.close()

    async def run(self) -> None:
        try:
            async with self._recv:
                async for first in self._recv:
                    batch = [first]
                    while True:
                        try:
                            batch.append(self._recv.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    with trio.fail_after(WRITE_TIMEOUT):
                        await self.stream.send_all(b"".join(batch))
            # finish() was called: tell the other side we are done (it sees EOF).
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            self.broken = True
        finally:
            self.broken = True
            self.done.set()


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

    async def next_frame(self) -> Frame | None:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            try:
                data = await self.stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            self.decoder.receive_data(data)
