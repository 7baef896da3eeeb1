"""The peer's session with the rendezvous: connect (from the shared local
port), log in, keep alive, and come back by itself after a loss.

The connection leaves from the same local port the peer listens on, so the
public endpoint the rendezvous reports (``Servidor[SEEN]``) is the one a
partner must aim at to punch through our NAT (see :mod:`peer.sockets`).

Liveness: a ``::ping`` every :data:`PING_INTERVAL` seconds; when nothing at
all has come from the server for :data:`DEAD_AFTER` seconds the connection is
dropped. After a loss it reconnects with exponential backoff and jitter
(:data:`BACKOFF_FIRST` doubling up to :data:`BACKOFF_MAX`), logging in again
with the password that worked — except when the server closed this session
because the same user logged in elsewhere.
"""

from __future__ import annotations

import errno
import logging
import random
import socket as stdsocket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import trio

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    KICKED_PREFIX,
    Password,
    Resume,
    ServerEvent,
    ServerLine,
    Username,
    format_client_event,
    format_endpoint,
)
from chathack.protocol import Command as ServerCommand
from chathack.protocol import parse_endpoint as parse_host_port
from chathack.server_events import Seen, TokenIssued, parse_server_event
from peer.errors import LoginFailed, ServerUnreachable
from peer.sockets import connect_from, resolve_all
from peer.tls import HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT
from peer.tls import CertificateMismatch, KnownServers, open_tls
from peer.transport import LineReader, StreamWriter

log = logging.getLogger("chathack.peer")

#: Seconds to open the TCP connection to the rendezvous.
CONNECT_TIMEOUT = 5.0
#: Seconds the rendezvous has to answer each login step.
REPLY_TIMEOUT = 10.0
#: Seconds before sending a password the server refused unjudged (busy), times
#: the refusals so far, up to RETRY_BACKOFF_MAX; after MAX_LOGIN_RETRIES the
#: login counts as failed to connect (the reconnection loop then backs off).
RETRY_BACKOFF = 1.0
RETRY_BACKOFF_MAX = 5.0
MAX_LOGIN_RETRIES = 10
#: Seconds between keepalive pings to the rendezvous.
PING_INTERVAL = 5.0
#: Seconds of silence from the rendezvous after which the connection is dropped.
DEAD_AFTER = 15.0
#: First and largest pause between reconnection attempts, in seconds.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0

#: ``await source(prompt_text, is_new_account, attempt)`` returns a password.
PasswordSource = Callable[[str, bool, int], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """How to speak TLS to the rendezvous: pins, or an explicit fingerprint or CA."""

    known: KnownServers
    fingerprint: str | None = None
    context: ssl.SSLContext | None = None


@dataclass(slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.host, self.port)


def parse_endpoint(text: str) -> Endpoint | None:
    endpoint = parse_host_port(text)
    return Endpoint(*endpoint) if endpoint is not None else None


def fixed_password(secret: str | None) -> PasswordSource:
    """A password source for scripts, bots and reconnections: always ``secret``;
    gives up when the server asks again (it was wrong), or when there is none."""

    async def source(prompt: str, is_new: bool, attempt: int) -> str:
        if attempt > 1 or secret is None:
            raise LoginFailed(prompt)
        return secret

    return source


class ServerLink:
    """One logged-in rendezvous session at a time, replaced after a loss."""

    def __init__(
        self,
        name: str,
        server: tuple[str, int],
        on_event: Callable[[ServerEvent], None],
        on_state: Callable[[str, str], None],
        more_servers: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.name = name
        #: Instances of one service (``--server A,B,...``): tried in order, the
        #: next one after a loss or a refusal to connect.
        self.servers = [server, *(s for s in more_servers if s != server)]
        self.server = server
        self.on_event = on_event
        self.on_state = on_state  # (state word, a sentence for the user)
        self.local: tuple[str, int] | None = None  # shared local address, once listening
        self.writer: StreamWriter | None = None
        self.stream: trio.SocketStream | None = None
        self.seen: Endpoint | None = None  # our connection as the server sees it
        self.local_ip: str | None = None  # our end of the connection
        self.state = "connecting"
        self.rtt: float | None = None  # last keepalive round trip, seconds
        self.kicked = False
        self.closed = False
        self._secret: str | None = None
        self.token: str | None = None  # single-use resume token from the last login
        self.tls: TLSSettings | None = None  # None: plain TCP
        self._last_rx = 0.0
        self._pongs: dict[str, trio.Event] = {}
        #: While reconnecting: when the next try starts (trio time); None otherwise.
        self.retry_at: float | None = None
        self._retry_now = trio.Event()

    def local_port(self) -> int | None:
        """The port our end of the session uses (None while disconnected)."""
        if self.stream is None:
            return None
        return int(self.stream.socket.getsockname()[1])

    # ------------------------------------------------------------ sending
    def send(self, data: bytes) -> bool:
        return self.writer is not None and self.writer.send(data)

    # --------------------------------------------------------- connecting
    def next_server(self) -> None:
        """Move on to the next instance of the service (round robin)."""
        i = self.servers.index(self.server) if self.server in self.servers else -1
        self.server = self.servers[(i + 1) % len(self.servers)]

    async def login_any(self, nursery: trio.Nursery, source: PasswordSource) -> LineReader:
        """:meth:`login` on the first instance that answers, in order."""
        for _ in range(len(self.servers) - 1):
            try:
                return await self.login(nursery, source)
            except ServerUnreachable as e:
                log.info("%s; trying the next server", e)
                self._drop()
                self.next_server()
        return await self.login(nursery, source)

    async def _open(self) -> trio.SocketStream:
        host, port = self.server
        try:
            # A name with several addresses (one per instance): each in turn.
            with trio.fail_after(CONNECT_TIMEOUT):
                addrs = await resolve_all(host, port)
            last: OSError | trio.TooSlowError = OSError(f"no address for {host}")
            for addr in addrs:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        return await self._connect(addr)
                except (OSError, trio.TooSlowError) as e:
                    last = e
            raise last
        except (OSError, trio.TooSlowError) as e:
            why = "timed out" if isinstance(e, trio.TooSlowError) else (e.strerror or str(e))
            raise ServerUnreachable(
                f"Cannot reach the rendezvous at {host}:{port} ({why}). "
                "Check --server HOST:PORT and that chathack-rendezvous is running there."
            ) from e

    async def _connect(self, addr: tuple[str, int]) -> trio.SocketStream:
        if self.local is not None:
            try:
                return await connect_from(self.local, addr)
            except OSError as e:
                # The shared port is taken for this destination (a lingering old
                # connection): connect from any port; only hole punching suffers.
                if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                log.info("shared port unavailable for the rendezvous: %s", e)
        return await trio.open_tcp_stream(*addr)

    async def login(
        self, nursery: trio.Nursery, source: PasswordSource, token: str | None = None
    ) -> LineReader:
        """Connect and log in (with a resume ``token`` if given: no password sent
        unless the server refuses it); return the reader for the rest of the session."""
        raw = await self._open()
        self.stream = raw  # the TCP stream: our address, and a reset on drop
        self.local_ip = str(raw.socket.getsockname()[0])
        stream: trio.abc.Stream = raw
        if self.tls is not None:
            stream, fingerprint, first_use = await open_tls(
                raw,
                self.server,
                self.tls.known,
                self.tls.fingerprint,
                TLS_HANDSHAKE_TIMEOUT,
                context=self.tls.context,
            )
            if first_use:
                self.on_state(
                    self.state,
                    f"Pinned the rendezvous TLS certificate {fingerprint}: "
                    "compare it with the fingerprint the server printed at startup",
                )
        writer = StreamWriter(stream)
        nursery.start_soon(writer.run)
        self.writer = writer
        reader = LineReader(stream)
        resuming = token is not None
        if token is not None:
            self.send(format_client_event(Resume(self.name, token)))
        else:
            self.send(format_client_event(Username(self.name)))
        attempt, asked_name, last_error, sent_password = 0, 0, "", False
        registering = False  # a new account: every password is asked twice
        retries = 0  # refusals before any hash (Servidor[RETRY]): the same password again
        while True:
            with trio.move_on_after(REPLY_TIMEOUT) as scope:
                event = await reader.next_event()
            if scope.cancelled_caught:
                raise ServerUnreachable(
                    f"The rendezvous at {self.server[0]}:{self.server[1]} stopped answering"
                )
            match event:
                case None if not (sent_password and last_error):
                    # Closed before it judged a password (a server dying or full):
                    # worth trying again, unlike a refused password.
                    raise ServerUnreachable(last_error or "The rendezvous closed the connection")
                case None:
                    raise LoginFailed(last_error)
                case ServerLine("USERNAME", text):
                    asked_name += 1
                    if asked_name > 1 and resuming:  # the token was refused: password
                        resuming, last_error = False, ""
                        self.send(format_client_event(Username(self.name)))
                    elif asked_name > 1:  # the first one is the greeting
                        raise LoginFailed(last_error or text)
                case ServerLine("PASSWORD", text) if retries and self._secret is not None:
                    # Not judged yet (the server was busy): the same password, later.
                    await trio.sleep(min(RETRY_BACKOFF * retries, RETRY_BACKOFF_MAX))
                    self.send(format_client_event(Password(self._secret)))
                case ServerLine("PASSWORD", text):
                    attempt += 1
                    # The reason on a line of its own, then the question.
                    prompt = f"{last_error}\n{text}" if last_error else text
                    registering = registering or text.startswith("New user")
                    secret = await source(prompt, registering, attempt)
                    self._secret = secret
                    self.send(format_client_event(Password(secret)))
                    sent_password, last_error, retries = True, "", 0
                case ServerLine("RETRY", text):
                    retries += 1
                    if retries > MAX_LOGIN_RETRIES:
                        raise ServerUnreachable(text)  # the reconnection loop backs off
                    self.on_state(self.state, f"{text} (trying again)")
                case ServerLine("ERROR", text):
                    last_error = text
                case ServerLine("BYE", text) if not (sent_password and last_error):
                    raise ServerUnreachable(text)  # full, too many connections, shutting down
                case ServerLine("BYE", text):
                    raise LoginFailed(f"{last_error}. {text}")
                case ServerLine("OK", _):
                    break
        self._last_rx = trio.current_time()
        self.kicked = False
        self._set_state("online", "")
        return reader

    # ------------------------------------------------------------ running
    async def run(
        self, reader: LineReader, nursery: trio.Nursery, on_login: Callable[[], None]
    ) -> None:
        """Serve the session; after a loss, reconnect (backoff) and serve again."""
        while True:
            async with trio.open_nursery() as inner:
                inner.start_soon(self._keepalive, inner.cancel_scope)
                await self._read(reader)
                inner.cancel_scope.cancel()
            self._drop()
            if self.closed:
                return
            if self.kicked:
                self._set_state(
                    "offline",
                    "This user logged in elsewhere; this session ended. "
                    "Restart chathack-peer to take it back.",
                )
                return
            try:
                reader = await self._reconnect(nursery)
            except CertificateMismatch as e:  # never retried: it is not a glitch
                self._set_state("offline", str(e))
                return
            on_login()

    async def _read(self, reader: LineReader) -> None:
        while True:
            event = await reader.next_event()
            if event is None:
                return
            self._last_rx = trio.current_time()
            match event:
                case ServerLine("PONG", token) if token in self._pongs:
                    self._pongs.pop(token).set()
                case ServerLine("SEEN" | "TOKEN"):
                    self._learn(event)
                case ServerLine("BYE", text) if text.startswith(KICKED_PREFIX):
                    self.kicked = True
            self.on_event(event)

    def _learn(self, line: ServerLine) -> None:
        """Our public endpoint (``SEEN``) and the next resume token (``TOKEN``)."""
        try:
            typed = parse_server_event(line)
        except RemoteProtocolError as e:
            log.info("ignored a malformed %s line: %s", line.flag, e)
            return
        match typed:
            case Seen(host, port):
                self.seen = Endpoint(host, port)
            case TokenIssued(token, _):
                self.token = token

    async def _keepalive(self, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(PING_INTERVAL)
            if trio.current_time() - self._last_rx > DEAD_AFTER:
                log.info("the rendezvous has been silent for %.0f s; reconnecting", DEAD_AFTER)
                scope.cancel()
                return
            await self.ping()

    async def ping(self) -> float | None:
        """Round trip to the rendezvous in seconds (None: no answer in time)."""
        token = f"{time.monotonic_ns():x}"
        done = self._pongs[token] = trio.Event()
        start = trio.current_time()
        if not self.send(format_client_event(ServerCommand("ping", token))):
            self._pongs.pop(token, None)
            return None
        with trio.move_on_after(REPLY_TIMEOUT):
            await done.wait()
            self.rtt = trio.current_time() - start
            return self.rtt
        self._pongs.pop(token, None)
        return None

    async def _reconnect(self, nursery: trio.Nursery) -> LineReader:
        delay = BACKOFF_FIRST
        self._set_state(
            "reconnecting",
            "Lost the rendezvous; reconnecting. Direct conversations go on; relayed messages wait.",
        )
        same_password = fixed_password(self._secret)
        lost = self.server
        if len(self.servers) > 1:
            self.next_server()  # the instances are alike: the one that failed goes last
        tried = 0
        while True:
            token, self.token = self.token, None  # single use, whatever happens
            try:
                reader = await self.login(nursery, same_password, token)
            except ServerUnreachable as e:
                self._drop()
                tried += 1
                if tried % len(self.servers):
                    log.info("%s; trying the next server", e)
                    self.next_server()
                    continue
                log.info("%s; next try in %.1f s", e, delay)
                self.next_server()
                await self._pause(delay * random.uniform(0.5, 1.0))  # backoff with jitter
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            where = "" if self.server == lost else f" at {format_endpoint(*self.server)}"
            self._set_state("online", f"Reconnected to the rendezvous{where}")
            return reader

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next try, or until :meth:`retry_now`."""
        self.retry_at = trio.current_time() + seconds
        self._set_state("reconnecting", f"Reconnecting in {seconds:.0f} s (::reconnect to try now)")
        with trio.move_on_after(seconds):
            await self._retry_now.wait()
        self._retry_now = trio.Event()
        self.retry_at = None

    def retry_now(self) -> bool:
        """Cut the countdown short: the next try starts now; False if none is waiting."""
        if self.retry_at is None:
            return False
        self._retry_now.set()
        return True

    def _drop(self) -> None:
        """Forget the current connection, resetting it so no TIME_WAIT holds our port."""
        if self.writer is not None:
            self.writer.finish()
        if self.stream is not None:
            with suppress(OSError):
                self.stream.socket.setsockopt(
                    stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.stream.socket.close()
        self.writer, self.stream = None, None
        self.seen = None  # learnt again at the next login

    def remember_password(self, secret: str) -> None:
        """The password changed: reconnections use the new one."""
        self._secret = secret

    def _set_state(self, state: str, sentence: str) -> None:
        self.state = state
        self.on_state(state, sentence)

    def finish(self) -> StreamWriter | None:
        """We are leaving: no reconnection; return the writer to flush."""
        self.closed = True
        writer = self.writer
        if writer is not None:
            writer.finish()
        return writer
