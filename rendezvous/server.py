"""The rendezvous's trio I/O layer: accept connections, run the login
dialogue (:mod:`rendezvous.login`), and feed the :class:`~rendezvous.hub.Hub`
one event at a time.

Each connection has a task of its own until it logs in (``_serve_transport``,
``_log_in``); then a plain TCP connection is handed to the
:class:`~rendezvous.reactor.Reactor`, one task that reads every logged-in
client over an epoll of its own, and its task ends (TLS connections and trio
streams keep theirs). Whoever reads hands the lines to the hub
(:class:`~rendezvous.lines.LoggedInLines` once logged in), and what the hub
queues is written at the end of the read batch, straight into the socket
(:mod:`rendezvous.connection`, :mod:`rendezvous.transport`). A writer task
exists only while a client's output is backed up; it drains a bounded outbox,
so no two tasks ever interleave writes and a client that stops reading is
disconnected instead of stalling anybody else. Plain TCP and TLS connections
are accepted and driven as bare non-blocking sockets; tests' memory streams
go through :meth:`Server.handle_connection`.

The readers enforce the per-client limits (:class:`~rendezvous.limits.Limits`):
the login deadline, the idle timeout, and the rate limits, which they apply by
pausing -- a reader stops reading from an over-eager client until its token bucket
refills, so the client is slowed down by TCP backpressure and nothing it sent
is dropped. Connections past the global or per-address cap get one
``Servidor[BYE]`` line and are closed.

Graceful shutdown (:meth:`Server.shut_down`): stop accepting; every reader
stops reading and handles the lines it has already read (what they relay is
queued first); then every client gets ``Servidor[BYE]``; the writers flush;
all within a deadline.

Wire protocol summary (details and an ``nc`` session in docs/PROTOCOL.md)::

    <- Servidor[USERNAME]: Who are you? Send "username: NAME"
    -> username: alice
    <- Servidor[PASSWORD]: Password for alice
    -> password: secret
    <- Servidor[OK]: Welcome back alice ...
    <- Servidor[SEEN]: 203.0.113.101:40211
    <- Servidor[TOKEN]: 3q2-... 600
    -> connect: bob
    <- Servidor[PEER]: bob 198.51.100.10:40300 key=... public=... lan=...
    -> msg: bob hello
"""

from __future__ import annotations

import errno
import gc
import logging
import math
import socket
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum
from functools import partial

import trio

from chathack.errors import RemoteProtocolError
from chathack.protocol import ClientEvent, LineBuffer, Password, format_server_line
from chathack.text import neutralise
from rendezvous.connection import Batch, Connection, Spawn
from rendezvous.hub import Hub, Session
from rendezvous.limits import (
    Admission,
    ConnectionRates,
    Limits,
    chat_buckets,
    relay_byte_buckets,
)
from rendezvous.lines import LoggedInLines, Reader, Wait, parsed
from rendezvous.login import TOO_MANY_TRIES, Logins, LoginState
from rendezvous.login_guard import LoginGuard
from rendezvous.mailbox import MailLimits, MailService
from rendezvous.passwords import Passwords
from rendezvous.prekeys import PrekeyService
from rendezvous.reactor import Reactor, idle_farewell
from rendezvous.roster import ClusterLink
from rendezvous.shared import AccountBook, PresenceClaims, TokenBook
from rendezvous.store import Store, StoreError
from rendezvous.tls import HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT
from rendezvous.tls import TLSHandshakeError
from rendezvous.transport import SocketTransport, StreamTransport, TLSTransport, Transport

__all__ = ["Connection", "Limits", "Server"]

log = logging.getLogger("chathack.rendezvous")

#: accept() errors that mean "out of descriptors or memory", not a broken listener.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Seconds the accept loop pauses after such an error (as trio.serve_listeners does).
ACCEPT_PAUSE = 0.1
#: Seconds a refused connection has to take its one ``BYE`` line.
REFUSAL_WRITE_TIMEOUT = 2.0
#: Seconds a refused connection stays half-closed, its input read and dropped,
#: so that closing it does not reset it and destroy the ``BYE`` line unread.
REFUSAL_LINGER = 1.0
#: Seconds between two log lines about refused connections (a flood must not flood the log).
REFUSAL_LOG_EVERY = 10.0
SHUTDOWN_TEXT = "The server is shutting down; try again later"
#: Seconds between full garbage collections while connections come and go.
GC_PERIOD = 1.0


def _no_spawn(start: Callable[[], object]) -> None:
    raise RuntimeError("the server is not serving: no task can be started")


class Outcome(Enum):
    """How a connection's reading ended."""

    CLOSED = "closed"  # the connection ends
    STOPPED = "stopped"  # shutting down: everything read was handled
    HANDED_OFF = "handed off"  # the reactor reads for it now


def _or_never(seconds: float) -> float:
    """A timeout from :class:`Limits`: 0 means none."""
    return seconds if seconds > 0 else math.inf


class Server:
    def __init__(
        self,
        store: Store,
        passwords: Passwords | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        mail_limits: MailLimits | None = None,
        *,
        cluster: ClusterLink | None = None,
        accounts: AccountBook | None = None,
        token_book: TokenBook | None = None,
        claims: PresenceClaims | None = None,
        mailbox: MailService | None = None,
        prekeys: PrekeyService | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self.hub = Hub(store, mail_limits, cluster, mailbox, prekeys)
        #: What the operators' metrics read (rendezvous/metrics.py).
        self.counts = self.hub.counts
        #: Time each read's handling for the relay latency histogram (--metrics):
        #: one clock read per read, so only when someone looks.
        self.time_reads = False
        self.passwords = passwords or Passwords()
        self.limits = limits or Limits()
        self.clock = clock
        self.connections: set[Connection] = set()
        self.admission = Admission(self.limits)
        #: The login dialogue: password checks, resume tokens, ``::passwd``.
        self.logins = Logins(
            self.hub,
            self.passwords,
            self.limits,
            clock,
            accounts=accounts,
            token_book=token_book,
            claims=claims,
            guard=guard,
            counts=self.counts,
        )
        self.chat_rates = chat_buckets(self.limits)
        self.lines = LoggedInLines(self.hub, self.chat_rates, relay_byte_buckets(self.limits))
        #: Reads every logged-in plain-TCP connection (made by serve()).
        self.reactor: Reactor | None = None
        self._spawn: Spawn = _no_spawn
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._accepting = trio.CancelScope()
        self._closing = False
        self._refused = 0
        self.tls_context: ssl.SSLContext | None = None  # set: every client speaks TLS
        self._closed_since_gc = 0
        self._refusal_logged_at = -math.inf
        #: Lines made while a reader handles one read go out together (connection.py).
        self.batch = Batch()
        self._undrained: set[Connection] = set()  # shutting down: readers still handling
        self._all_drained = trio.Event()
        #: Connections ended by an exception nobody expected, by its type: each
        #: is a bug, but it cost one connection, never the server.
        self.faults: Counter[str] = Counter()
        self._report_fault = self.fault  # one bound method for every connection

    @property
    def closing(self) -> bool:
        """Shutting down: no new connection is admitted."""
        return self._closing

    async def serve(
        self,
        host: str | None,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until cancelled; ``started()`` gets the listeners.

        After :meth:`stop_accepting` no new connection is accepted, and this
        returns once the open ones are closed.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        for lst in listeners:
            log.info("listening on %s:%s", *lst.socket.getsockname()[:2])
        self._restore_tokens()
        async with trio.open_nursery() as handlers:
            handlers.start_soon(self._collect_after_churn)
            self._spawn = handlers.start_soon
            self.reactor = Reactor(
                self,
                self.lines,
                idle_timeout=self.limits.idle_timeout,
                clock=self.clock,
                latency=self.counts.relay_latency if self.time_reads else None,
            )
            await handlers.start(self.reactor.run)
            try:
                with self._accepting:
                    async with trio.open_nursery() as acceptors:
                        for lst in listeners:
                            acceptors.start_soon(self._accept_loop, lst, handlers)
                        task_status.started(listeners)
            finally:
                # No longer accepting: free the port (and refuse, rather than
                # queue, connections nobody would serve).
                for lst in listeners:
                    await trio.aclose_forcefully(lst)

    async def _accept_loop(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        """Accept connections (what ``trio.serve_listeners`` does, without the
        ``SocketStream``: plain TCP connections are driven as bare sockets)."""
        while True:
            try:
                sock, _ = await listener.socket.accept()
            except OSError as e:
                if e.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                # Out of file descriptors or memory: wait for some to be freed
                # (connections closing) instead of spinning.
                log.error("cannot accept: %s; pausing %g s", e, ACCEPT_PAUSE)
                await trio.sleep(ACCEPT_PAUSE)
                continue
            handlers.start_soon(self._handle_socket, sock, handlers)

    async def _handle_socket(self, sock: trio.socket.SocketType, handlers: trio.Nursery) -> None:
        """One accepted connection's task. It runs in the nursery that holds every
        connection, so nothing may escape it: what was not expected ends this
        connection (:meth:`fault`), never the server."""
        try:
            peer = sock.getpeername()
        except OSError:  # already reset by the client
            sock.close()
            return
        ip, port = str(peer[0]), int(peer[1])
        del peer
        raw = socket.socket(fileno=sock.detach())
        del sock  # the detached trio wrapper: not kept for the connection's life
        transport: Transport = (
            SocketTransport(raw)
            if self.tls_context is None
            else TLSTransport(raw, self.tls_context)
        )
        try:
            if isinstance(transport, TLSTransport):
                try:  # in this connection's own task: a slow handshake blocks nobody
                    await transport.handshake(TLS_HANDSHAKE_TIMEOUT)
                except TLSHandshakeError as e:
                    log.debug("%s: %s", ip, e)  # the socket is closed already
                    return
            # Writer tasks, when needed, run in the server's nursery: this
            # connection's task opens none of its own (memory, see connection.py).
            await self._serve_transport(transport, ip, port, handlers.start_soon)
        except Exception as exc:
            self.fault(exc, ip, None)
            await transport.aclose()

    async def _collect_after_churn(self) -> None:
        """A full garbage collection, at most every GC_PERIOD seconds, once enough
        connections closed: a closed connection leaves cycles only a full
        collection frees (the CLI makes those rare, see rendezvous/cli.py), while
        a steady population of idle peers causes no collection pauses at all."""
        while True:
            await trio.sleep(GC_PERIOD)
            # A full collection costs in proportion to the live objects: with many
            # peers online, wait for more churn (a tenth of them) before paying it.
            if self._closed_since_gc and self._closed_since_gc >= len(self.connections) // 10:
                self._closed_since_gc = 0
                gc.collect()

    def stop_accepting(self) -> None:
        self._accepting.cancel()

    async def wait_no_connections(self) -> None:
        await self._no_connections.wait()

    def shutdown_notice(self, text: str = SHUTDOWN_TEXT) -> None:
        """Tell every client the server is going away and close them after a flush."""
        for conn in list(self.connections):
            conn.send(format_server_line("BYE", text))
            conn.close()

    async def shut_down(self, flush_seconds: float, text: str = SHUTDOWN_TEXT) -> bool:
        """Stop accepting and reading, handle every line already read, then say
        ``BYE`` to everyone and flush; True if all closed within ``flush_seconds``."""
        self._closing = True
        self.stop_accepting()
        deadline = trio.current_time() + flush_seconds
        self._undrained = set(self.connections)
        for conn in list(self._undrained):
            conn.stop_reading()
        if self.reactor is not None:
            self.reactor.stop_reading()
        # Half the time for the readers: what they relay must be queued before any BYE.
        with trio.move_on_at(trio.current_time() + flush_seconds / 2):
            if self._undrained:
                await self._all_drained.wait()
        self.shutdown_notice(text)
        self._save_tokens()  # after the last login: peers resume on the next start
        with trio.move_on_at(deadline):
            await self.wait_no_connections()
            return True
        log.warning("%d connection(s) did not close in time", len(self.connections))
        return False

    def _save_tokens(self) -> None:
        """Keep the live resume tokens in the database for the next start, so a
        restart does not send every peer back to a password check (argon2: about
        a dozen a second here, against thousands of resumes)."""
        tokens = self.logins.tokens.export(trio.current_time(), self.clock())
        try:
            self.hub.store.save_tokens(tokens)
        except (sqlite3.Error, StoreError) as e:
            log.error("resume tokens not saved (peers will log in with passwords): %s", e)
            return
        log.info("kept %d resume token(s) for the next start", len(tokens))

    def _restore_tokens(self) -> None:
        try:
            saved = self.hub.store.take_tokens()
        except (sqlite3.Error, StoreError) as e:
            log.error("resume tokens of the last run not read: %s", e)
            return
        if saved:
            live = self.logins.tokens.restore(saved, trio.current_time(), self.clock())
            log.info("%d resume token(s) of the last run still valid", live)

    def _drained(self, conn: Connection) -> None:
        """``conn``'s reader handled everything it read and reads no more."""
        if self._undrained:
            self._undrained.discard(conn)
            if not self._undrained:
                self._all_drained.set()

    async def handle_connection(
        self, stream: trio.abc.Stream, ip: str, port: int | None = None
    ) -> None:
        """Serve one client over any trio stream (a test's memory stream, say)."""
        transport = StreamTransport(stream)
        try:
            async with trio.open_nursery() as writers:
                await self._serve_transport(transport, ip, port, writers.start_soon)
        except Exception as exc:
            self.fault(exc, ip, None)
            await transport.aclose()

    def fault(self, exc: BaseException, ip: str, name: str | None) -> None:
        """A connection ended by an exception nothing expected: one log line
        (no traceback: a client must not be able to fill the log with them)
        and a count by type; the server carries on."""
        kind = type(exc).__name__
        self.faults[kind] += 1
        log.error(
            "%s (%s): connection ended by an unexpected %s: %s",
            ip,
            name or "not logged in",
            kind,
            neutralise(str(exc)[:200]),  # it may quote what the client sent
        )

    async def _serve_transport(
        self, transport: Transport, ip: str, port: int | None, spawn: Spawn
    ) -> None:
        """This connection's one task: admit, read and handle lines, then close
        -- or, once the client logged in over plain TCP, hand it to the
        reactor, which reads for it from then on (and ends it: :meth:`forget`)."""
        refusal = SHUTDOWN_TEXT if self._closing else self.admission.admit(ip)
        if refusal is not None:
            self.counts.refused[self._refusal_reason()] += 1
            await self._refuse(transport, ip, refusal)
            return
        self.counts.accepted += 1
        conn = Connection(
            transport,
            ip,
            self.limits.outbox_lines,
            spawn=spawn,
            batch=self.batch,
            write_timeout=_or_never(self.limits.write_timeout),
            on_fault=self._report_fault,
            counts=self.counts,
        )
        session = Session(conn, ip, port)
        self.connections.add(conn)
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        log.debug("%s connected", ip)
        outcome = Outcome.CLOSED
        try:
            outcome = await self._read_until_done(conn, session)
            if outcome is Outcome.HANDED_OFF:
                return
            self._drained(conn)
            if outcome is Outcome.STOPPED and not conn.closing:
                # Shutting down: everything read was handled; shut_down() now
                # says BYE and closes the connection once that is flushed.
                conn.scope = trio.CancelScope()
                with conn.scope:
                    await trio.sleep_forever()
            conn.close()
            await conn.wait_written()
        except Exception as exc:
            # A bug met while serving this client (a line nobody foresaw, a
            # hub invariant broken): this connection ends, nobody else notices.
            self.fault(exc, ip, session.name)
        finally:
            if outcome is not Outcome.HANDED_OFF:
                self._forget(conn, session)
                await transport.aclose()

    def _forget(self, conn: Connection, session: Session) -> None:
        """``conn`` is over: out of the books, detached from the hub."""
        self._drained(conn)
        self.admission.release(session.ip)
        self.connections.discard(conn)
        self._closed_since_gc += 1
        if not self.connections:
            self._no_connections.set()
        conn.abort()  # whatever is still queued has nobody to write it
        try:
            self.hub.detach(session, self.clock())
        except Exception as exc:
            self.fault(exc, session.ip, session.name)
        log.debug("%s (%s) disconnected", session.ip, session.name or "not logged in")

    def _refusal_reason(self) -> str:
        """Why the connection just refused was (a word, for the metrics)."""
        if self._closing:
            return "shutting_down"
        if self.admission.total >= self.limits.max_conns:
            return "full"
        return "per_address"

    async def _refuse(self, transport: Transport, ip: str, text: str) -> None:
        """One ``BYE`` line, then close: the connection was never admitted."""
        self._refused += 1
        now = trio.current_time()
        if now - self._refusal_logged_at >= REFUSAL_LOG_EVERY:
            log.warning("refused %d connection(s), the last from %s: %s", self._refused, ip, text)
            self._refused, self._refusal_logged_at = 0, now
        try:
            with trio.move_on_after(REFUSAL_WRITE_TIMEOUT):
                await transport.send_all(format_server_line("BYE", text))
                # Half-close and read what comes, so that closing does not
                # reset the connection and destroy the BYE line unread.
                await transport.send_eof()
                with trio.move_on_after(REFUSAL_LINGER):
                    while await transport.receive():
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await transport.aclose()

    # -- the reader ---------------------------------------------------------
    async def _read_until_done(self, conn: Connection, session: Session) -> Outcome:
        """Read, pace and handle lines until the connection ends, stops for a
        shutdown, or is handed to the reactor.

        Everything happens inside one long-lived scope (``conn.scope``):
        creating cancel scopes per read costs the relay CPU on every line and
        memory on every idle connection. Its deadline is the login deadline
        until the client logs in, then (if this task keeps reading) the idle
        timeout, during reads only, moved lazily (see ``slack``); shutdown
        cancels it while a read is waiting (:meth:`Connection.stop_reading`).
        """
        conn.scope.deadline = trio.current_time() + _or_never(self.limits.login_timeout)
        with conn.scope:
            return await self._log_in(conn, session)
        if conn.closing or session.closed:
            return Outcome.CLOSED
        if conn.stopping:
            return Outcome.STOPPED
        if session.name is None:
            session.say("BYE", "Login timed out; connect again and log in")
            return Outcome.CLOSED
        idle = self.limits.idle_timeout
        session.say("BYE", idle_farewell(idle))
        log.info("%s (%s) idle for %g s; closed", session.ip, session.name, idle)
        return Outcome.CLOSED

    def hold(self) -> None:
        """Start a batch: the lines of one read are handled without waiting; what
        they send is written, and the mail they store committed, at its end."""
        self.batch.hold()
        self.hub.mailbox.begin_group()

    def release(self) -> None:
        try:
            self.hub.mailbox.commit_group()  # its STORED lines join the batch
        finally:
            self.batch.release()  # whatever happened, held lines are written

    async def _receive(self, conn: Connection) -> bytes:
        """The next bytes (b"": the end), while ``stop_reading`` may cancel the wait."""
        conn.reading = True
        try:
            return await conn.transport.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
        finally:
            conn.reading = False

    async def _log_in(self, conn: Connection, session: Session) -> Outcome:
        """The login dialogue, line by line; then :meth:`_serve_logged_in`."""
        buf = LineBuffer(self.limits.max_line_bytes)
        login = LoginState()
        rates = ConnectionRates(self.limits, self.chat_rates, trio.current_time())
        session.say("USERNAME", 'Who are you? Send "username: NAME"')
        while session.name is None:
            event: ClientEvent | RemoteProtocolError
            try:
                line = buf.next_line()
            except RemoteProtocolError as e:
                event = e
            else:
                if line is None:
                    if conn.stopping:
                        return Outcome.STOPPED
                    data = await self._receive(conn)
                    if not data:
                        return Outcome.CLOSED
                    buf.receive_data(data)
                    continue
                event = parsed(line)
            wait = rates.delay(event, None, trio.current_time())
            if wait > 0 and not conn.stopping:
                await self._pace(conn, session, rates, wait, chat=False)
            if not await self._handle(conn, session, login, event) or session.closed:
                return Outcome.CLOSED
        # Logged in: no login deadline any more, and the account row is not
        # kept for the life of the connection.
        conn.scope.deadline = math.inf
        login.account = None
        return await self._serve_logged_in(Reader(conn, session, buf, rates))

    async def _serve_logged_in(self, reader: Reader, wait: Wait | None = None) -> Outcome:
        """Handle a logged-in client's lines, doing the waits they need; hand
        the connection to the reactor whenever its buffer is empty (plain TCP),
        or else read on in this task (TLS, a trio stream)."""
        conn, session = reader.conn, reader.session
        reactor = self.reactor if isinstance(conn.transport, SocketTransport) else None
        own_scope = conn.scope if isinstance(conn.scope, trio.CancelScope) else None
        idle = _or_never(self.limits.idle_timeout)
        # The idle deadline is re-armed at most once per ``slack`` seconds: a
        # silent client is closed between ``idle`` and ``idle + slack`` after
        # its last bytes (exactly ``idle`` when it never sent any after login).
        slack = idle / 100
        time_reads, latency = self.time_reads, self.counts.relay_latency
        handle, hold, release = self.lines.handle, self.hold, self.release
        while True:
            if wait is not None:
                if own_scope is not None:
                    own_scope.deadline = math.inf  # a wait is not idleness
                if isinstance(wait, Password):
                    await self.logins.passwd_step(conn, session, wait.secret)
                else:
                    chat = isinstance(reader.pending, str)
                    await self._pace(conn, session, reader.rates, wait, chat)
                if conn.closing:  # it ended during the wait (a password check
                    return Outcome.CLOSED  # runs to its end): nothing more for it
            now = trio.current_time()
            hold()
            try:
                wait = handle(reader, now, self.clock())
            finally:
                release()
                if time_reads:
                    latency.observe(trio.current_time() - now)
            if session.closed or conn.closing:
                return Outcome.CLOSED
            if wait is not None:
                continue
            if conn.stopping:
                return Outcome.STOPPED
            if reactor is not None:
                reactor.adopt(reader)
                return Outcome.HANDED_OFF
            if own_scope is not None and idle != math.inf:
                if own_scope.deadline == math.inf:
                    own_scope.deadline = now + idle
                elif own_scope.deadline < now + idle:
                    own_scope.deadline = now + idle + slack
            data = await self._receive(conn)
            if not data:
                return Outcome.CLOSED
            reader.buf.receive_data(data)

    # -- what the reactor asks of the server ----------------------------------
    def wait_for(self, reader: Reader, wait: Wait) -> None:
        self._spawn(partial(self._wait_then_read, reader, wait))

    async def _wait_then_read(self, reader: Reader, wait: Wait) -> None:
        """A wait for a reader the reactor owns, in a task of its own; then the
        lines after it, and the reader goes back to the reactor. Ending the
        connection cancels it (``reader.waiting``, the reactor's end())."""
        conn, session = reader.conn, reader.session
        assert reader.waiting is not None
        try:
            with reader.waiting:
                outcome = await self._serve_logged_in(reader, wait)
                if outcome is Outcome.STOPPED:
                    reader.waiting = None
                    self._drained(conn)
                elif outcome is Outcome.CLOSED:
                    conn.close()
        except Exception as exc:
            self.fault(exc, session.ip, session.name)
            conn.abort()
        finally:
            if reader.waiting is not None:  # not handed back, not stopped
                reader.waiting = None
                if reader.ender is None and self.reactor is not None:
                    self.reactor.finish(reader)  # it ended: forget it now, not before

    def forget(self, reader: Reader) -> None:
        try:
            self._forget(reader.conn, reader.session)
        finally:
            reader.conn.transport.close()  # type: ignore[union-attr]  # adopted: a SocketTransport

    def drained(self, reader: Reader) -> None:
        self._drained(reader.conn)

    async def _pace(
        self, conn: Connection, session: Session, rates: ConnectionRates, wait: float, chat: bool
    ) -> None:
        """Wait ``wait`` seconds (reading nothing): the client is over its rate
        (of chat lines when ``chat``, else of commands)."""
        self.counts.rate_limited["chat" if chat else "command"] += 1
        if not rates.slowed:
            rates.slowed = True
            log.info("%s (%s) is over its rate limit; slowing it down", session.ip, session.name)
        with conn.interruptible():
            await trio.sleep(wait)

    async def _handle(
        self,
        conn: Connection,
        session: Session,
        login: LoginState,
        event: ClientEvent | RemoteProtocolError,
    ) -> bool:
        """Act on one line before login; False closes the connection."""
        if isinstance(event, RemoteProtocolError):
            session.say("ERROR", str(event))
            if login.count_failure(self.limits):
                session.say("BYE", TOO_MANY_TRIES)
                return False
            return True
        return await self.logins.step(conn, session, login, event)
