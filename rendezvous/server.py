"""The rendezvous's trio I/O layer: accept connections, log users in, and
feed the :class:`~rendezvous.hub.Hub` one event at a time.

Per connection there is one reader task (this module's ``_serve_one``) and
one writer task draining a bounded channel (:class:`Connection`), so no two
tasks ever interleave ``send_all`` and a client that stops reading is
disconnected instead of stalling anybody else.

Wire protocol summary (details and an ``nc`` session in docs/PROTOCOL.md)::

    <- Servidor[USERNAME]: Who are you? Send "username: NAME"
    -> username: alice
    <- Servidor[PASSWORD]: Password for alice
    -> password: secret
    <- Servidor[OK]: Welcome back alice ...
    -> connect: bob
    <- Servidor[PEER]: bob 127.0.0.1:40211
    -> msg: bob hello
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    MAX_LINE_BYTES,
    Command,
    LineBuffer,
    Password,
    Username,
    format_server_line,
    parse_client_line,
)
from rendezvous.hub import Hub, Session
from rendezvous.passwords import MIN_PASSWORD_CHARS, Passwords
from rendezvous.store import Account, Store

log = logging.getLogger("chathack.rendezvous")

#: Bytes asked of the socket per read.
RECV_BYTES = 16384


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit the server enforces; each has a command-line flag."""

    #: Wrong passwords (or bad lines before login) before the connection is closed.
    max_login_tries: int = 5
    #: Seconds a connection may take to log in.
    login_timeout: float = 60.0
    #: Outgoing lines queued for one client before it counts as not reading.
    outbox_lines: int = 1024
    #: Seconds one write may block before the client counts as not reading.
    write_timeout: float = 20.0
    #: Longest line accepted, in bytes.
    max_line_bytes: int = MAX_LINE_BYTES


class Connection:
    """A session's outbox: a bounded channel drained by one writer task."""

    __slots__ = ("_recv", "_send", "cancel_scope", "peer", "stream")

    def __init__(self, stream: trio.abc.Stream, peer: str, capacity: int) -> None:
        self.stream = stream
        self.peer = peer
        self._send, self._recv = trio.open_memory_channel[bytes | None](capacity)
        self.cancel_scope = trio.CancelScope()

    def send(self, data: bytes) -> None:
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
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


class Server:
    def __init__(
        self,
        store: Store,
        passwords: Passwords | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = Hub(store)
        self.passwords = passwords or Passwords()
        self.limits = limits or Limits()
        self.clock = clock
        self.connections: set[Connection] = set()
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._accepting = trio.CancelScope()

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
        async with trio.open_nursery() as handlers:
            with self._accepting:
                await trio.serve_listeners(
                    self.handle_stream,
                    listeners,
                    handler_nursery=handlers,
                    task_status=task_status,
                )

    def stop_accepting(self) -> None:
        self._accepting.cancel()

    async def wait_no_connections(self) -> None:
        await self._no_connections.wait()

    def shutdown_notice(self, text: str = "The server is shutting down; try again later") -> None:
        """Tell every client the server is going away and close them after a flush."""
        for conn in list(self.connections):
            conn.send(format_server_line("BYE", text))
            conn.close()

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
        except OSError:  # already reset by the client
            await trio.aclose_forcefully(stream)
            return
        await self.handle_connection(stream, str(peer[0]), int(peer[1]))

    async def handle_connection(
        self, stream: trio.abc.Stream, ip: str, port: int | None = None
    ) -> None:
        conn = Connection(stream, ip, self.limits.outbox_lines)
        session = Session(conn, ip, port)
        self.connections.add(conn)
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        log.debug("%s connected", ip)
        try:
            with conn.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.run_writer, self.limits.write_timeout)
                    await self._read_loop(stream, session)
                    conn.close()
        finally:
            self.connections.discard(conn)
            if not self.connections:
                self._no_connections.set()
            self.hub.detach(session, self.clock())
            log.debug("%s (%s) disconnected", ip, session.name or "not logged in")
            await trio.aclose_forcefully(stream)

    async def _read_loop(self, stream: trio.abc.Stream, session: Session) -> None:
        buf = LineBuffer(self.limits.max_line_bytes)
        login = _LoginState()
        session.say("USERNAME", 'Who are you? Send "username: NAME"')
        deadline = trio.current_time() + self.limits.login_timeout
        while not session.closed:
            with trio.move_on_at(deadline if session.name is None else math.inf) as scope:
                try:
                    data = await stream.receive_some(RECV_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if scope.cancelled_caught:
                session.say("BYE", "Login timed out; connect again and log in")
                return
            if not data:
                return
            buf.receive_data(data)
            while not session.closed:
                try:
                    line = buf.next_line()
                    if line is None:
                        break
                    event = parse_client_line(line)
                except RemoteProtocolError as e:
                    session.say("ERROR", str(e))
                    if session.name is None and login.count_failure(self.limits):
                        session.say("BYE", "Too many failed attempts; connect again to retry")
                        return
                    continue
                if session.name is None:
                    if not await self._login_step(session, login, event):
                        return
                else:
                    self.hub.handle(session, event, self.clock())

    async def _login_step(self, session: Session, login: _LoginState, event: object) -> bool:
        """Advance the login dialogue by one event; False closes the connection."""
        match event:
            case Username(name):
                login.name = name
                login.account = self.hub.store.get_account(name)
                if login.account is None:
                    session.say("PASSWORD", f"New user {name}: choose a password to register")
                else:
                    session.say("PASSWORD", f"Password for {login.account.name}")
                return True
            case Password(secret) if login.name is not None:
                account = await self._check_password(session, login, secret)
                if account is None:
                    if login.count_failure(self.limits):
                        session.say("BYE", "Too many failed attempts; connect again to retry")
                        return False
                    session.say("PASSWORD", f"Password for {login.name}")
                    return True
                self.hub.attach(session, account, self.clock())
                verb = "Registered" if login.account is None else "Welcome back"
                session.say(
                    "OK",
                    f"{verb} {account.name}. You are seen as {session.ip}. "
                    "::help lists the commands",
                )
                # Where this client's connection comes from, after any NAT (like STUN).
                session.say("SEEN", self.hub.public_of(session))
                log.info("%s logged in from %s", account.name, session.ip)
                return True
            case Command("quit", _):
                session.say("BYE", "Goodbye")
                return False
            case _:
                session.say("ERROR", 'Log in first: send "username: NAME", then "password: SECRET"')
                if login.count_failure(self.limits):
                    session.say("BYE", "Too many failed attempts; connect again to retry")
                    return False
                session.say("USERNAME", 'Who are you? Send "username: NAME"')
                return True

    async def _check_password(
        self, session: Session, login: _LoginState, secret: str
    ) -> Account | None:
        assert login.name is not None
        store = self.hub.store
        if login.account is None:
            if len(secret) < MIN_PASSWORD_CHARS:
                session.say(
                    "ERROR", f"Password too short: use at least {MIN_PASSWORD_CHARS} characters"
                )
                return None
            pw_hash = await self.passwords.hash(secret)
            # Someone may have registered the name while we hashed.
            if store.get_account(login.name) is not None:
                session.say("ERROR", f"{login.name} was registered a moment ago; pick another name")
                return None
            return store.create_account(login.name, pw_hash, self.clock())
        ok, new_hash = await self.passwords.verify(login.account.pw_hash, secret)
        if not ok:
            session.say("ERROR", f"Wrong password for {login.account.name}")
            log.info("failed login for %s from %s", login.account.name, session.ip)
            return None
        if new_hash is not None:
            store.set_password_hash(login.account.name, new_hash)
        return login.account


class _LoginState:
    __slots__ = ("account", "failures", "name")

    def __init__(self) -> None:
        self.name: str | None = None
        self.account: Account | None = None
        self.failures = 0

    def count_failure(self, limits: Limits) -> bool:
        """Count one failure; True when the connection has used up its tries."""
        self.failures += 1
        return self.failures >= limits.max_login_tries
