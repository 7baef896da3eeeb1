"""The load generator: lean rendezvous clients, and the worker process that runs them.

A worker is ``python -m benchmarks.loadgen SPEC_JSON``. It logs its clients
in, prints one JSON line ``{"ready": ...}``, then obeys one-word commands on
stdin, answering each with one JSON line on stdout:

    go      start the load (pings, relay ping-pong, lookups, logins)
    mark    report counters and the latency histogram since the last mark
    stop    stop the load, close every connection, report, exit

Every worker also stops by itself after ``deadline_s`` seconds, and when stdin
closes (the parent is gone). Each report carries the worker's own CPU time
(/proc/self/stat), so the parent can tell whether the generator, rather than
the server, is the bottleneck.

Clients are deliberately lean: a non-blocking stdlib socket driven by
``trio.lowlevel.wait_readable``/``wait_writable`` (no stream wrapper, no
per-call checkpoints), bytes-level line splitting, and one ``send`` for every
batch of lines produced by one read (writes are batched).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import ssl
import sys
import time

import trio

from benchmarks import procstat

#: Bytes asked of the socket per read.
RECV_BYTES = 65536
#: Seconds one login (connect, username, password, OK) may take.
LOGIN_TIMEOUT = 30.0


class LoginError(Exception):
    """The server refused a benchmark login: the accounts db was not prepared."""


def _tls_context() -> ssl.SSLContext:
    """TLS to the benchmark's own server on 127.0.0.1, whose certificate is
    self-signed and made for the run: encryption as a peer has it, no check."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


#: What a non-blocking socket (plain or TLS) raises when it must wait.
_WANT_READ = (BlockingIOError, ssl.SSLWantReadError)
_WANT_WRITE = (ssl.SSLWantWriteError,)


class Conn:
    """One client connection: a non-blocking socket (TLS or not) and an input buffer."""

    __slots__ = ("buf", "name", "pending", "sock")

    def __init__(self, sock: socket.socket, name: str = "") -> None:
        self.sock = sock
        self.buf = bytearray()
        self.name = name
        self.pending: list[bytes] = []  # lines read along with the login reply

    @classmethod
    async def open(cls, host: str, port: int, name: str = "", tls: bool = False) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            raise OSError(err, os.strerror(err))
        if tls:
            sock = _tls_context().wrap_socket(sock, do_handshake_on_connect=False)
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await trio.lowlevel.wait_readable(sock)
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(sock)
        return cls(sock, name)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, *_WANT_WRITE):
                await trio.lowlevel.wait_writable(self.sock)
                continue
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            view = view[sent:]

    async def read_lines(self) -> list[bytes]:
        """The complete lines that have arrived (at least one); EOFError at the end."""
        if self.pending:
            lines, self.pending = self.pending, []
            return lines
        while True:
            try:
                # Read before waiting: a TLS socket may hold decrypted bytes
                # that epoll cannot see.
                data = self.sock.recv(RECV_BYTES)
            except _WANT_READ:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except _WANT_WRITE:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            if not data:
                raise EOFError
            if not self.buf and data.endswith(b"\n"):
                return data[:-1].split(b"\n")
            self.buf += data
            end = self.buf.rfind(b"\n")
            if end >= 0:
                chunk = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return chunk.split(b"\n")

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


async def login(host: str, port: int, name: str, password: str, tls: bool = False) -> Conn:
    """Connect (over TLS if ``tls``) and log in as ``name`` (username and
    password in one write)."""
    with trio.fail_after(LOGIN_TIMEOUT):
        conn = await Conn.open(host, port, name, tls)
        try:
            await conn.send(f"username: {name}\npassword: {password}\n".encode())
            retries = 0
            while True:
                lines = await conn.read_lines()
                for i, line in enumerate(lines):
                    if line.startswith(b"Servidor[OK]"):
                        conn.pending = lines[i + 1 :]
                        return conn
                    if line.startswith((b"Servidor[ERROR]", b"Servidor[BYE]")):
                        raise LoginError(f"{name}: {line.decode(errors='replace')}")
                    if line.startswith(b"Servidor[RETRY]"):
                        # Refused before any hash (every benchmark client is one
                        # address: the per-address queue fills): the same
                        # password a little later, as chathack-peer does.
                        retries += 1
                        await trio.sleep(min(0.05 * retries, 1.0))
                        await conn.send(f"password: {password}\n".encode())
        except BaseException:
            conn.close()
            raise


#: Tries of an IRC login, each with its share of LOGIN_TIMEOUT: in a burst of
#: connects, ngircd (a short listen backlog) now and then leaves one half-open
#: for good, and a new connection gets through at once.
IRC_LOGIN_TRIES = 2


async def irc_login(host: str, port: int, nick: str) -> Conn:
    """Connect to an IRC server (or the floor relay) and register as ``nick``."""
    for attempt in range(IRC_LOGIN_TRIES):
        try:
            with trio.fail_after(LOGIN_TIMEOUT / IRC_LOGIN_TRIES):
                return await _irc_login_once(host, port, nick)
        except trio.TooSlowError:
            if attempt == IRC_LOGIN_TRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _irc_login_once(host: str, port: int, nick: str) -> Conn:
    """One try of :func:`irc_login`."""
    conn = await Conn.open(host, port, nick)
    try:
        await conn.send(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
        while True:
            lines = await conn.read_lines()
            for i, line in enumerate(lines):
                if b" 001 " in line:
                    conn.pending = lines[i + 1 :]
                    return conn
                if line.startswith(b"PING"):
                    await conn.send(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
                elif line.startswith(b"ERROR") or b" 433 " in line:
                    raise LoginError(f"{nick}: {line.decode(errors='replace')}")
    except BaseException:
        conn.close()
        raise


async def read_token(conn: Conn) -> bytes:
    """The resume token the server sends after a login (``Servidor[TOKEN]: TOKEN TTL``)."""
    with trio.fail_after(LOGIN_TIMEOUT):
        while True:
            for line in await conn.read_lines():
                if line.startswith(b"Servidor[TOKEN]: "):
                    return line[17:].split(b" ", 1)[0]
                if line.startswith((b"Servidor[ERROR]", b"Servidor[BYE]")):
                    raise LoginError(f"{conn.name}: {line.decode(errors='replace')}")


def emit(obj: dict) -> None:
    obj["cpu_s"] = procstat.cpu_seconds()
    obj["t"] = time.monotonic()
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve(spec: dict) -> None:
    from benchmarks.roles import ROLES

    stdin = trio.lowlevel.FdStream(os.dup(0))
    with trio.move_on_after(spec["deadline_s"]):
        try:
            await _obey(spec, ROLES[spec["role"]], stdin)
        except* (LoginError, OSError, EOFError, trio.TooSlowError) as group:
            e: BaseException = group
            while isinstance(e, BaseExceptionGroup):  # the first real error inside
                e = e.exceptions[0]
            emit({"error": f"{type(e).__name__}: {e}"})


async def _obey(spec: dict, role_class: type, stdin: trio.lowlevel.FdStream) -> None:
    async with trio.open_nursery() as nursery:
        role = role_class(spec, nursery)
        emit({"ready": await role.setup()})
        buf = b""
        while True:
            data = await stdin.receive_some(4096)
            if not data:  # the parent went away
                await role.stop()
                break
            buf += data
            *words, buf = buf.split(b"\n")
            for word in words:
                if word == b"go":
                    role.start()
                    emit({"go": True})
                elif word == b"mark":
                    emit({"mark": role.snapshot()})
                elif word == b"stop":
                    emit({"stop": await role.stop()})
                    nursery.cancel_scope.cancel()
                    return
        nursery.cancel_scope.cancel()


def main() -> None:
    spec = json.loads(sys.argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve, spec)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the roles raise
    # benchmarks.loadgen.LoginError, which _serve must recognise.
    from benchmarks.loadgen import main as imported_main

    imported_main()
