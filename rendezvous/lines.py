"""A logged-in client's lines, handled without waiting: what the reader of
the connection (its own task, or the server's reactor, rendezvous/reactor.py)
calls after every read.

:meth:`LoggedInLines.handle` takes the complete lines a read left in the
connection's buffer and hands each to the hub, until the buffer is empty or a
line needs a wait: the client is over its rate limit (the token is taken, the
line kept in ``Reader.pending`` for after the pause), or the line is a
``::passwd`` answer (a password check, which waits for argon2). Whoever reads
the connection does that waiting, then calls ``handle`` again: the line logic
has one definition whichever task reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from chathack.errors import RemoteProtocolError
from chathack.protocol import ClientEvent, LineBuffer, Password, parse_client_line
from rendezvous.hub import Hub, Session
from rendezvous.limits import BULK_LINE_BYTES, ConnectionRates
from rendezvous.ratelimit import KeyedBuckets

if TYPE_CHECKING:
    from rendezvous.connection import Connection

#: What a reader must wait for before handling more lines: a pause of this
#: many seconds (the client is over its rate), or a ``::passwd`` step.
Wait = float | Password
#: A line kept over a pause: a chat line still to relay (str), or an event.
Pending = str | ClientEvent | RemoteProtocolError


def parsed(line: str) -> ClientEvent | RemoteProtocolError:
    """``line`` as an event, or the error that answers it."""
    try:
        return parse_client_line(line)
    except RemoteProtocolError as e:
        return e


class Ender(Protocol):
    """Who ends a connection its reader no longer has a task for (the reactor)."""

    def end(self, reader: Reader) -> None: ...


class Reader:
    """One logged-in connection's reading state.

    It outlives the task that logged the client in: the reactor reads for it
    from then on. It is also the connection's ``scope`` while the reactor owns
    it: what would cancel a reader task (a close once flushed, an abort)
    calls :meth:`cancel`, which has the reactor end the connection.
    """

    __slots__ = (
        "buf",
        "chat_key",
        "conn",
        "ender",
        "fd",
        "last_read",
        "listening",
        "pending",
        "rates",
        "session",
        "waiting",
    )

    def __init__(
        self, conn: Connection, session: Session, buf: LineBuffer, rates: ConnectionRates
    ) -> None:
        assert session.name is not None
        self.conn = conn
        self.session = session
        self.buf = buf
        self.rates = rates
        self.chat_key = session.name.lower()  # folded once per session
        self.pending: Pending | None = None
        #: The reactor that reads for it (None: its own task does).
        self.ender: Ender | None = None
        self.fd = -1  # registered with the reactor's epoll under this descriptor
        self.last_read = 0.0  # trio time of the last bytes read (the idle timeout)
        self.listening = False  # in the reactor's epoll now
        #: The scope of the task doing a wait for it (a pause, a password check).
        self.waiting: trio.CancelScope | None = None

    def cancel(self) -> None:
        """The connection is over (closed and flushed, or aborted)."""
        if self.ender is not None:
            self.ender.end(self)


class LoggedInLines:
    """The lines of logged-in clients, handed to the hub as they come."""

    __slots__ = (
        "_bulk_limited",
        "_chat_limited",
        "_give_back",
        "_give_back_bytes",
        "_hub",
        "_take_bytes",
        "_take_chat",
    )

    def __init__(
        self, hub: Hub, chat_rates: KeyedBuckets, relay_bytes: KeyedBuckets | None = None
    ) -> None:
        self._hub = hub
        # Chat lines' rate limit: not consulted at all when it is off.
        self._chat_limited = chat_rates.rate > 0
        self._take_chat = chat_rates.take
        self._give_back = chat_rates.give_back
        # The bytes of long relayed lines (file data): likewise.
        bytes_ = relay_bytes if relay_bytes is not None else KeyedBuckets(0, 1)
        self._bulk_limited = bytes_.rate > 0
        self._take_bytes = bytes_.take
        self._give_back_bytes = bytes_.give_back

    def _bulk_wait(self, r: Reader, now: float, size: int) -> float:
        """Seconds to wait before relaying ``size`` bytes of long lines (0: now)."""
        if not self._bulk_limited or size <= BULK_LINE_BYTES:
            return 0.0
        return self._take_bytes(r.chat_key, now, size)

    def _relay_run(self, r: Reader, now: float, wall: float) -> None:
        """Every complete line in the buffer relayed in one piece, if they are a
        run of chat lines to one partner (:meth:`Hub.relay_run`) and the rate
        limit lets them all through now; else nothing is taken (the tokens
        given back) and the lines go one by one."""
        run = r.buf.complete_lines()
        if not run.startswith(b"msg: "):
            return
        if self._bulk_wait(r, now, len(run)) > 0:
            self._give_back_bytes(r.chat_key, now, len(run))
            return  # one by one: each long line waits for its bytes
        if not self._chat_limited:
            relayed = self._hub.relay_run(r.session, run, wall)
        else:
            cost = run.count(b"\n")
            if self._take_chat(r.chat_key, now, cost) > 0:
                relayed = 0
            else:
                relayed = self._hub.relay_run(r.session, run, wall)
            if not relayed:
                self._give_back(r.chat_key, now, cost)
        if not relayed and self._bulk_limited and len(run) > BULK_LINE_BYTES:
            self._give_back_bytes(r.chat_key, now, len(run))
        if relayed:
            r.buf.skip(len(run))

    def handle(self, r: Reader, now: float, wall: float) -> Wait | None:
        """Handle the complete lines in ``r.buf`` (and first ``r.pending``);
        what to wait for before going on, or None once the buffer is empty or
        the session closed. ``now`` is trio's clock (the rate limits), ``wall``
        the wall clock (the hub)."""
        session, conn, hub = r.session, r.conn, self._hub
        if r.pending is None and session.passwd_step is None:
            self._relay_run(r, now, wall)  # then the loop finds no complete line left
        next_line, relay_line = r.buf.next_line, hub.relay_line
        item: Pending | None
        while not session.closed:
            item, r.pending = r.pending, None
            if item is None:
                try:
                    line = next_line()
                except RemoteProtocolError as e:
                    item = e
                    wait = r.rates.delay(e, session.name, now)
                else:
                    if line is None:
                        return None
                    # A "msg:" line, by far the commonest: its chat token, then
                    # the fast path (hub.relay_line), which hands back whatever
                    # it does not relay exactly as the parser would.
                    if line.startswith("msg: ") and session.passwd_step is None:
                        item = line
                        wait = self._take_chat(r.chat_key, now) if self._chat_limited else 0.0
                        if len(line) > BULK_LINE_BYTES and self._bulk_limited:
                            wait = max(wait, self._take_bytes(r.chat_key, now, len(line)))
                    else:
                        item = parsed(line)
                        wait = r.rates.delay(item, session.name, now)
                if wait > 0 and not conn.stopping:
                    if conn.closing:
                        return None  # it is ending: nothing waits for it
                    r.pending = item
                    return wait
            if isinstance(item, str):
                if relay_line(session, item, wall):
                    continue
                item = parsed(item)
            if isinstance(item, RemoteProtocolError):
                session.say("ERROR", str(item))
            elif session.passwd_step is not None and isinstance(item, Password):
                return None if conn.closing else item
            else:
                hub.handle(session, item, wall)
        return None
