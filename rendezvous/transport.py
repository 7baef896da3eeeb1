"""How a rendezvous connection moves bytes: a plain TCP socket driven
directly (the production path), TLS driven the same way over an
``ssl.SSLObject``, or any trio stream (tests' memory streams).

All give the reader ``receive()`` and the writer ``send_all()``, and
``try_send()``, a write that never waits (a stream's takes nothing): on the
two socket transports most lines the hub queues go straight into the kernel
from the task that produced them, with no writer task woken and no
scheduler round trip (see
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
import ssl
from collections.abc import Callable

import trio

from rendezvous.tls import TLSHandshakeError, ssl_error_reason

#: Bytes asked of the socket per read.
RECV_BYTES = 65536
_RECV_VIEW = memoryview(bytearray(RECV_BYTES))


def _nonblocking_tcp(sock: socket.socket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # not TCP: a test's socketpair
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _BareSocket:
    """A connected, non-blocking stdlib TCP socket that this module drives itself."""

    __slots__ = ("_closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        _nonblocking_tcp(sock)
        self.sock = sock
        self._closed = False

    def _send_now(self, data: bytes | bytearray | memoryview) -> int:
        """The bytes the kernel takes now, without waiting (0: none)."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as e:
            raise trio.BrokenResourceError(f"socket error: {e}") from e

    async def _recv_bytes(self) -> bytes:
        """The next bytes from the other side; b"" at the end of the stream.

        Read into one buffer shared by every connection (the event loop is one
        thread, and the bytes are copied out at once): no 64 KiB object is
        made and shrunk per read.
        """
        while True:
            await trio.lowlevel.wait_readable(self.sock)  # ClosedResourceError once closed
            try:
                n = self.sock.recv_into(_RECV_VIEW)
            except BlockingIOError:  # woken without data (rare): wait again
                continue
            except OSError as e:
                raise trio.BrokenResourceError(f"socket error: {e}") from e
            return _RECV_VIEW[:n].tobytes()

    def _shutdown_write(self) -> None:
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


class SocketTransport(_BareSocket):
    """Plain TCP."""

    __slots__ = ()

    #: A writer task is needed only when the kernel pushes back: it ends when done.
    keeps_writer = False

    #: Everything written is taken by the socket or handed back (never held here).
    backlog = False

    #: The next bytes from the client; b"" at end of stream. (The method
    #: itself, not a wrapper: one coroutine frame less per idle connection.)
    receive = _BareSocket._recv_bytes

    def read_now(self) -> bytes | None:
        """What the socket holds now, without waiting (the reactor's read, for a
        socket its epoll said is readable): None if nothing yet,
        b"" at the end of the stream or once the connection broke (a reset is
        an end like any other for a reader that does not wait)."""
        try:
            n = self.sock.recv_into(_RECV_VIEW)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        return _RECV_VIEW[:n].tobytes()

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; the byte count."""
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        return self._send_now(data)

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            sent = self.try_send(view)
            view = view[sent:]

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        self._shutdown_write()


class StreamTransport:
    """Any trio stream (a test's memory stream, say). It cannot write without
    waiting, so every write goes through the writer task."""

    __slots__ = ("stream",)

    #: Every write goes through the writer task: it stays (parked) between writes.
    keeps_writer = True
    backlog = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        return await self.stream.receive_some()

    def try_send(self, data: bytes) -> int:
        return 0

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_eof(self) -> None:
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class TLSTransport(_BareSocket):
    """TLS over a bare non-blocking socket: an ``ssl.SSLObject`` between two
    memory BIOs, so that, as on plain TCP, a line is encrypted and written by
    the task that makes it (``trio.SSLStream`` over a ``SocketStream`` cost
    three times the plain relay's CPU per message, most of it its layers).

    Ciphertext the socket does not take at once waits in ``_cipher``, in
    order; the writer task (``backlog`` tells the connection to start it)
    sends it. Records that TLS itself produces while reading (a key update)
    join the same queue, and ``wake_writer`` makes sure they go out.
    """

    __slots__ = ("_cipher", "_in", "_obj", "_out", "wake_writer")

    keeps_writer = False

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._cipher = bytearray()  # encrypted, not yet taken by the socket
        #: Set by the connection: starts its writer when ciphertext is left over.
        self.wake_writer: Callable[[], None] | None = None

    @property
    def backlog(self) -> bool:
        return bool(self._cipher)

    # -- moving ciphertext ----------------------------------------------------
    def _push(self) -> None:
        """Send what ciphertext the socket takes now, without waiting."""
        if self._out.pending:
            self._cipher += self._out.read()
        cipher = self._cipher
        while cipher:
            sent = self._send_now(cipher)
            if not sent:
                return
            del cipher[:sent]

    async def _push_all(self) -> None:
        self._push()
        while self._cipher:
            await trio.lowlevel.wait_writable(self.sock)
            self._push()

    async def _pull(self) -> bytes:
        """Wait for ciphertext and hand it to TLS (an end of stream too); what came."""
        data = await self._recv_bytes()
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        return data

    # -- the handshake ------------------------------------------------------
    async def handshake(self, timeout: float) -> None:  # noqa: ASYNC109
        """The server side of the handshake, within ``timeout`` seconds; on
        failure the socket is closed and TLSHandshakeError says why."""
        first = b""
        try:
            with trio.fail_after(timeout):
                while True:
                    try:
                        self._obj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await self._push_all()
                        data = await self._pull()
                        first = first or data[:16]
                await self._push_all()
        except ssl.SSLError as e:
            with contextlib.suppress(trio.BrokenResourceError, OSError):
                if _plain_line(first):
                    # A client speaking the protocol in clear (a peer without
                    # --tls, nc): tell it, in clear, what to do instead.
                    self._send_now(PLAIN_CLIENT_HINT)
                else:
                    self._push()  # the alert, if the socket takes it
            self.close()
            raise TLSHandshakeError(f"TLS handshake failed: {ssl_error_reason(e)}") from e
        except (trio.TooSlowError, trio.BrokenResourceError) as e:
            self.close()
            reason = "timed out" if isinstance(e, trio.TooSlowError) else str(e)
            raise TLSHandshakeError(f"TLS handshake failed: {reason}") from e
        except BaseException:  # cancelled: still never leak the socket
            self.close()
            raise

    # -- the transport --------------------------------------------------------
    async def receive(self) -> bytes:
        obj = self._obj
        while True:
            data: bytes | None
            try:
                data = obj.read(RECV_BYTES)  # b"": closed cleanly (close_notify)
            except ssl.SSLWantReadError:
                data = None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # closed, with or without close_notify: the end
            except ssl.SSLError as e:
                raise trio.BrokenResourceError(f"TLS error: {e}") from e
            if self._out.pending:  # TLS had something to say (a key update)
                self._push()
                if self._cipher and self.wake_writer is not None:
                    self.wake_writer()
            if data is not None:
                return data
            await self._pull()

    def try_send(self, data: bytes) -> int:
        """Encrypt all of ``data`` and send what the socket takes now; what it
        does not take is ``backlog`` for the writer."""
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        try:
            self._obj.write(data)
        except ssl.SSLError as e:
            raise trio.BrokenResourceError(f"TLS error: {e}") from e
        self._push()
        return len(data)

    async def send_all(self, data: bytes) -> None:
        if data:
            self.try_send(data)
        await self._push_all()

    async def send_eof(self) -> None:
        """TLS has no half-close: half-close the TCP connection beneath."""
        await self._push_all()
        self._shutdown_write()


Transport = SocketTransport | TLSTransport | StreamTransport


#: The one line a client that speaks in clear to a TLS rendezvous is sent.
PLAIN_CLIENT_HINT = (
    b"Servidor[BYE]: This server speaks TLS: start chathack-peer with --tls "
    b"(with nc: openssl s_client -quiet -connect HOST:PORT)\n"
)


def _plain_line(first: bytes) -> bool:
    """Whether a connection's first bytes are a protocol line in clear, not a
    TLS record (which starts with 0x16, a handshake)."""
    return bool(first) and first[:1].isalpha() and first.isascii()
