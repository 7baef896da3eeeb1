"""How a rendezvous connection moves bytes: a plain TCP socket driven
directly (the production path), or any trio stream (TLS, tests' memory streams).

Both give the reader ``receive()`` and the writer ``send_all()``; the socket
one also has ``try_send()``, a write that never waits: most lines the hub
queues go straight into the kernel from the task that produced them, with no
writer task woken and no scheduler round trip (see
:class:`~rendezvous.connection.Connection`). A ``trio.SocketStream`` would add
two checkpoints and three wrapper layers to every read and write -- about a
third of the relay's CPU -- and offers no non-blocking write.

I/O errors are translated once, here: a reset or a closed socket becomes
``trio.BrokenResourceError`` / ``trio.ClosedResourceError``, as from a trio stream.
"""

from __future__ import annotations

import contextlib
import errno
import socket

import trio

#: Bytes asked of the socket per read.
RECV_BYTES = 65536
_RECV_VIEW = memoryview(bytearray(RECV_BYTES))


class SocketTransport:
    """A connected, non-blocking stdlib TCP socket."""

    __slots__ = ("_closed", "sock")

    #: A writer task is needed only when the kernel pushes back: it ends when done.
    keeps_writer = False

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # not TCP: a test's socketpair
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._closed = False

    async def receive(self) -> bytes:
        """The next bytes from the client; b"" at end of stream."""
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)  # raises ClosedResourceError once closed
            try:
                # Into one buffer shared by every connection (the event loop is one
                # thread; the bytes are copied out at once): no 64 KiB object made
                # and shrunk per read.
                n = sock.recv_into(_RECV_VIEW)
                return _RECV_VIEW[:n].tobytes()
            except BlockingIOError:  # woken without data (rare): wait again
                continue
            except OSError as e:
                raise trio.BrokenResourceError(f"socket error: {e}") from e

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; the byte count."""
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as e:
            raise trio.BrokenResourceError(f"socket error: {e}") from e

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            sent = self.try_send(view)
            view = view[sent:]

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise trio.BrokenResourceError(f"socket error: {e}") from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.sock)  # wake any task waiting on it
            self.sock.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


class StreamTransport:
    """Any trio stream: TLS (``trio.SSLStream``) or a test's memory stream.
    It cannot write without waiting, so every write goes through the writer task."""

    __slots__ = ("stream",)

    #: Every write goes through the writer task: it stays (parked) between writes.
    keeps_writer = True

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        return await self.stream.receive_some()

    def try_send(self, data: bytes) -> int:
        return 0

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_eof(self) -> None:
        # Under TLS, half-close the TCP stream beneath (TLS has no half-close).
        raw = getattr(self.stream, "transport_stream", self.stream)
        if isinstance(raw, trio.abc.HalfCloseableStream):
            await raw.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


Transport = SocketTransport | StreamTransport
