"""The peer's network side: the rendezvous session, direct links, and one
:class:`Talk` per partner.

Theory of operation
-------------------
``open_peer`` connects to the rendezvous, logs in, opens a listening socket
for direct links and tells the server its port. From then on:

* one task reads the rendezvous (answers, calls, relayed lines);
* one task accepts direct links, and each link has its own reader task;
* every talk keeps a :class:`chathack.link.Conversation` (sequence numbers,
  acks, de-duplication) and a *path*: a direct link when one is up, else the
  relay (frames wrapped in ``msg:`` lines).

``connect: NAME`` asks the server for NAME's address, dials it
(:data:`peer.direct.DIAL_TIMEOUT`), and falls back to the relay when the dial
fails. When a direct link breaks, the talk falls back to the relay and
re-sends what was not acknowledged, so nothing is lost or shown twice.

The node never touches the terminal: it puts :mod:`peer.events` records on
``events``, read by exactly one UI (or by a bot through the library API).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from chathack.errors import RemoteProtocolError, sole_error
from chathack.link import (
    Ack,
    Bye,
    Chat,
    Conversation,
    Frame,
    Hello,
    Ping,
    Pong,
    frame_to_relay_text,
    is_relay_frame,
    relay_text_to_frame,
)
from chathack.protocol import Command as ServerCommand
from chathack.protocol import Connect as ServerConnect
from chathack.protocol import (
    ListenPort,
    Msg,
    Password,
    PeerAddress,
    ServerEvent,
    ServerLine,
    UserLine,
    Username,
    UserState,
    format_client_event,
    parse_peer_address,
    parse_users,
)
from peer import direct
from peer.errors import LinkFailed, LoginFailed, ServerUnreachable
from peer.events import (
    Incoming,
    Outgoing,
    PathName,
    ServerNotice,
    Status,
    System,
    UIEvent,
    UsersList,
)
from peer.transport import LineReader, StreamWriter

log = logging.getLogger("chathack.peer")

#: Seconds to open the TCP connection to the rendezvous.
SERVER_CONNECT_TIMEOUT = 5.0
#: Seconds the rendezvous has to answer a login step or a ``connect:``.
SERVER_REPLY_TIMEOUT = 10.0
#: Seconds ``aclose`` waits for goodbyes to be written.
CLOSE_FLUSH_TIMEOUT = 2.0

#: ``await source(prompt_text, is_new_account, attempt)`` returns a password.
PasswordSource = Callable[[str, bool, int], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    server_host: str = "127.0.0.1"
    server_port: int = 7777
    listen_host: str = "0.0.0.0"
    listen_port: int = 0
    data_dir: Path | None = None


@dataclass(eq=False)
class Talk:
    """One conversation with ``partner`` and the path it currently uses."""

    partner: str
    conv: Conversation
    path: PathName = "relayed"
    link: direct.DirectLink | None = None
    plain: bool = False  # the partner is a plain text client (e.g. nc): no frames
    open: bool = True
    links: set[direct.DirectLink] = field(default_factory=set)


class PeerNode:
    """A logged-in peer. Use :func:`open_peer` to get one."""

    def __init__(self, config: PeerConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.me = config.name
        self.epoch = secrets.token_hex(8)
        self.nursery = nursery
        # Unbounded on purpose: the UI is local and renders as fast as events come;
        # a bound here would make a slow terminal stall (or drop) network traffic.
        self._events_send, self.events = trio.open_memory_channel[UIEvent](math.inf)
        self.talks: dict[str, Talk] = {}
        self.active: str | None = None
        self.known_users: list[UserState] = []
        self.server_state = "connecting"
        self.listen_port: int | None = None
        self._server: StreamWriter | None = None
        self._server_stream: trio.SocketStream | None = None
        self._connect_lock = trio.Lock()
        self._connect_wait: tuple[str, trio.Event, list[PeerAddress | str]] | None = None
        self._acked = trio.Event()
        self.closed = False

    # ------------------------------------------------------------------ UI
    def emit(self, event: UIEvent) -> None:
        with suppress(trio.ClosedResourceError):
            self._events_send.send_nowait(event)

    def status(self) -> Status:
        talk = self.talks.get(self.active.lower()) if self.active else None
        return Status(
            self.me, talk.partner if talk else None, talk.path if talk else None, self.server_state
        )

    def _status_changed(self) -> None:
        self.emit(self.status())

    # ------------------------------------------------------- rendezvous link
    async def login(self, password_source: PasswordSource) -> None:
        host, port = self.config.server_host, self.config.server_port
        try:
            with trio.fail_after(SERVER_CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as e:
            why = "timed out" if isinstance(e, trio.TooSlowError) else (e.strerror or str(e))
            raise ServerUnreachable(
                f"Cannot reach the rendezvous at {host}:{port} ({why}). "
                "Check --server HOST:PORT and that chathack-rendezvous is running there."
            ) from e
        self._server_stream = stream
        writer = StreamWriter(stream)
        self.nursery.start_soon(writer.run)
        self._server = writer
        reader = LineReader(stream)
        self._send_server(format_client_event(Username(self.me)))
        attempt, asked_name, last_error = 0, 0, ""
        while True:
            with trio.move_on_after(SERVER_REPLY_TIMEOUT) as scope:
                event = await reader.next_event()
            if scope.cancelled_caught:
                raise ServerUnreachable(f"The rendezvous at {host}:{port} stopped answering")
            match event:
                case None:
                    raise LoginFailed(last_error or "The rendezvous closed the connection")
                case ServerLine("PASSWORD", text):
                    attempt += 1
                    prompt = f"{last_error}. {text}" if last_error else text
                    secret = await password_source(prompt, text.startswith("New user"), attempt)
                    self._send_server(format_client_event(Password(secret)))
                case ServerLine("USERNAME", text):
                    asked_name += 1
                    if asked_name > 1:  # the first one is the greeting
                        raise LoginFailed(last_error or text)
                case ServerLine("ERROR", text):
                    last_error = text
                case ServerLine("BYE", text):
                    raise LoginFailed(f"{last_error}. {text}" if last_error else text)
                case ServerLine("OK", _):
                    break
        self.server_state = "online"
        self.nursery.start_soon(self._read_server, reader)

    def _send_server(self, data: bytes) -> bool:
        return self._server is not None and self._server.send(data)

    async def _read_server(self, reader: LineReader) -> None:
        while True:
            event = await reader.next_event()
            if event is None:
                break
            self._on_server_event(event)
        if not self.closed:
            self.server_state = "offline"
            self.emit(
                System(
                    "Lost the connection to the rendezvous: direct conversations go "
                    "on; relayed messages wait. Restart chathack-peer to reconnect.",
                    "warning",
                )
            )
            self._status_changed()

    def _on_server_event(self, event: ServerEvent) -> None:
        match event:
            case UserLine(origin, text) if is_relay_frame(text):
                try:
                    frame = relay_text_to_frame(text)
                except RemoteProtocolError as e:
                    self.emit(System(f"Dropped a damaged message from {origin}: {e}", "warning"))
                    return
                self._on_frame(origin, frame, None)
            case UserLine(origin, text):
                talk = self._talk_for(origin, None)
                talk.plain = True
                self.emit(Incoming(talk.partner, text, time.time(), "relayed"))
            case ServerLine("PEER", text):
                self._answer_connect(text, None)
            case ServerLine("ERROR", text) if self._connect_wait is not None:
                self._answer_connect(None, text)
            case ServerLine("CALL", text):
                try:
                    addr = parse_peer_address(text)
                except RemoteProtocolError:
                    return
                self._know_user(addr.name)
                if not self._is_open(addr.name):
                    self.emit(System(f"{addr.name} wants to talk to you"))
            case ServerLine("END", text) | ServerLine("GONE", text):
                name = text.split(" ", 1)[0]
                talk = self.talks.get(name.lower())
                if talk is not None and talk.open:
                    self._close_talk(talk, text)
            case ServerLine("USERS", text):
                users = parse_users(text)
                more = text.rsplit("+", 1)[-1].split()[0] if ", +" in text else "0"
                self.known_users = users
                self.emit(UsersList(tuple(users), int(more) if more.isdigit() else 0))
            case ServerLine("BYE", text):
                self.emit(ServerNotice("BYE", text))
            case ServerLine("OK", _) | ServerLine("HELP", _):
                pass
            case ServerLine(flag, text):
                self.emit(ServerNotice(flag, text))

    def _know_user(self, name: str) -> None:
        if all(u.name.lower() != name.lower() for u in self.known_users):
            self.known_users.append(UserState(name, True))

    # ------------------------------------------------------------ listening
    async def listen(self) -> None:
        listeners = await self.nursery.start(
            partial(
                trio.serve_tcp, self._accept, self.config.listen_port, host=self.config.listen_host
            )
        )
        self.listen_port = int(listeners[0].socket.getsockname()[1])
        self._send_server(format_client_event(ListenPort(self.listen_port)))

    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            link = await direct.accept(stream, self.me, self.epoch)
        except LinkFailed as e:
            log.info("refused an incoming link: %s", e)
            await trio.aclose_forcefully(stream)
            return
        self._adopt_link(link)
        await self._run_link(link)

    async def _run_link(self, link: direct.DirectLink) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.writer.run)
                while True:
                    try:
                        frame = await link.reader.next_frame()
                    except RemoteProtocolError as e:
                        log.info("closing link to %s: %s", link.partner, e)
                        break
                    if frame is None:
                        break
                    self._on_frame(link.partner, frame, link)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await link.aclose()
            self._link_lost(link)

    def _adopt_link(self, link: direct.DirectLink) -> None:
        talk = self._talk_for(link.partner, link)
        old = talk.link
        talk.links.add(link)
        talk.link, talk.plain = link, False
        was = talk.path
        talk.path = "direct"
        if old is not None and old is not link:
            old.writer.finish()
        if was != "direct":
            self.emit(System(f"Now talking to {talk.partner} directly (direct)"))
            self._status_changed()
        for chat in talk.conv.to_resend():
            link.send(chat)

    def _link_lost(self, link: direct.DirectLink) -> None:
        talk = self.talks.get(link.partner.lower())
        if talk is None:
            return
        talk.links.discard(link)
        if talk.link is not link:
            return
        talk.link = None
        if talk.open and not self.closed:
            self._fall_back(talk, "the direct link broke")

    def _fall_back(self, talk: Talk, why: str) -> None:
        talk.path = "relayed"
        self.emit(
            System(f"{why}; talking to {talk.partner} through the relay (relayed)", "warning")
        )
        self._status_changed()
        for chat in talk.conv.to_resend():
            self._send_frame(talk, chat)

    # ---------------------------------------------------------------- talks
    def _is_open(self, name: str) -> bool:
        talk = self.talks.get(name.lower())
        return talk is not None and talk.open

    def _talk_for(self, partner: str, link: direct.DirectLink | None) -> Talk:
        """The open talk with ``partner``, opened (and announced) if needed."""
        key = partner.lower()
        talk = self.talks.get(key)
        if talk is not None and talk.open:
            return talk
        conv = talk.conv if talk is not None else Conversation(self.me, partner, self.epoch)
        talk = Talk(partner, conv, "direct" if link else "relayed", link)
        self.talks[key] = talk
        self._know_user(partner)
        self.emit(System(f"Talking to {partner} ({talk.path})"))
        if self.active is None or not self._is_open(self.active):
            self.active = partner
        self._status_changed()
        return talk

    def _close_talk(self, talk: Talk, why: str) -> None:
        talk.open = False
        for link in list(talk.links):
            link.writer.finish()
        talk.link = None
        self.emit(System(why))
        if self.active and self.active.lower() == talk.partner.lower():
            self.active = next((t.partner for t in self.talks.values() if t.open), None)
        self._status_changed()

    def _send_frame(self, talk: Talk, frame: Frame) -> None:
        if talk.link is not None:
            if talk.link.send(frame):
                return
            link, talk.link = talk.link, None
            talk.links.discard(link)
            self._fall_back(talk, "the direct link stalled")
            if isinstance(frame, Chat):
                return  # _fall_back re-sent every unacknowledged chat frame
        msg = Msg(talk.partner, frame_to_relay_text(frame))
        if not self._send_server(format_client_event(msg)) and isinstance(frame, Chat):
            self.emit(System(f"No path to {talk.partner} right now; the message waits", "warning"))

    def _on_frame(self, origin: str, frame: Frame, link: direct.DirectLink | None) -> None:
        match frame:
            case Chat():
                talk = self._talk_for(origin, link)
                got = talk.conv.receive_chat(frame)
                for chat in got.deliver:
                    self.emit(Incoming(talk.partner, chat.text, time.time(), talk.path))
                self._send_frame(talk, got.ack)
            case Ack():
                talk = self.talks.get(origin.lower())
                if talk is not None and talk.conv.receive_ack(frame):
                    self._acked.set()
                    self._acked = trio.Event()
            case Hello():
                self._talk_for(origin, link)
            case Bye():
                talk = self.talks.get(origin.lower())
                if talk is not None and talk.open:
                    self._close_talk(talk, f"{talk.partner} ended the conversation")
            case Ping(nonce):
                talk = self.talks.get(origin.lower())
                if talk is not None:
                    self._send_frame(talk, Pong(nonce))
            case Pong():
                pass

    # ------------------------------------------------------------ user API
    async def connect(self, name: str) -> Talk | None:
        """Open a conversation with ``name``: direct if possible, else relayed."""
        if name.lower() == self.me.lower():
            self.emit(System("You cannot talk to yourself", "error"))
            return None
        talk = self.talks.get(name.lower())
        if talk is not None and talk.open:
            self.active = talk.partner
            self.emit(System(f"Talking to {talk.partner} ({talk.path})"))
            self._status_changed()
            return talk
        answer = await self._ask_connect(name)
        if isinstance(answer, str):
            self.emit(ServerNotice("ERROR", answer))
            return None
        self._know_user(answer.name)
        if answer.host is None or answer.port is None:
            talk = self._talk_for(answer.name, None)
            talk.plain = True
        else:
            try:
                link = await direct.dial(answer.host, answer.port, self.me, answer.name, self.epoch)
            except LinkFailed as e:
                self.emit(System(f"No direct link: {e}", "warning"))
                talk = self._talk_for(answer.name, None)
                self._send_frame(talk, Hello(self.me, answer.name, self.epoch))
            else:
                self._adopt_link(link)
                self.nursery.start_soon(self._run_link, link)
                talk = self.talks[answer.name.lower()]
        self.active = talk.partner
        self._status_changed()
        return talk

    async def _ask_connect(self, name: str) -> PeerAddress | str:
        async with self._connect_lock:
            done = trio.Event()
            answer: list[PeerAddress | str] = []
            self._connect_wait = (name.lower(), done, answer)
            try:
                if not self._send_server(format_client_event(ServerConnect(name))):
                    return "Not connected to the rendezvous: cannot look anybody up"
                with trio.move_on_after(SERVER_REPLY_TIMEOUT):
                    await done.wait()
            finally:
                self._connect_wait = None
            return answer[0] if answer else "The rendezvous did not answer in time"

    def _answer_connect(self, peer_text: str | None, error: str | None) -> None:
        if self._connect_wait is None:
            return
        name, done, answer = self._connect_wait
        if peer_text is not None:
            try:
                addr = parse_peer_address(peer_text)
            except RemoteProtocolError as e:
                answer.append(str(e))
            else:
                if addr.name.lower() != name:
                    return
                answer.append(addr)
        else:
            answer.append(error or "connect failed")
        done.set()

    async def send(self, name: str, text: str) -> bool:
        """Send ``text`` to ``name`` (opening the conversation if needed)."""
        talk = self.talks.get(name.lower())
        if talk is None or not talk.open:
            talk = await self.connect(name)
            if talk is None:
                return False
        now = time.time()
        if talk.plain:
            sent = self._send_server(format_client_event(Msg(talk.partner, text)))
        else:
            try:
                chat = talk.conv.send_text(text, now)
            except RemoteProtocolError as e:
                self.emit(System(str(e), "error"))
                return False
            self._send_frame(talk, chat)
            sent = True
        if sent:
            self.emit(Outgoing(talk.partner, text, now))
        return sent

    def end(self, name: str | None = None) -> None:
        """End the conversation with ``name`` (default: the active one)."""
        name = name or self.active
        talk = self.talks.get(name.lower()) if name else None
        if talk is None or not talk.open:
            self.emit(System("You are not in a conversation; there is nothing to end", "error"))
            return
        if not talk.plain:
            self._send_frame(talk, Bye("ended"))
        self._send_server(format_client_event(ServerCommand("end", talk.partner)))
        self._close_talk(talk, f"Conversation with {talk.partner} ended")

    def request_users(self) -> None:
        if not self._send_server(format_client_event(ServerCommand("users"))):
            self.emit(System("Not connected to the rendezvous", "error"))

    def switch(self, name: str) -> None:
        if not self._is_open(name):
            self.emit(System(f"No open conversation with {name}", "error"))
            return
        self.active = self.talks[name.lower()].partner
        self._status_changed()

    async def handle_input(self, line: str) -> bool:
        """Act on one line typed by the user; False once the user quit."""
        from peer.input import dispatch

        return await dispatch(self, line)

    def unacknowledged(self) -> int:
        """How many sent messages the partners have not confirmed yet."""
        return sum(len(t.conv.unacked) for t in self.talks.values() if t.open and not t.plain)

    async def wait_delivered(self) -> None:
        """Return once every sent message is acknowledged (callers set the deadline)."""
        while self.unacknowledged():
            await self._acked.wait()

    async def quit(self) -> None:
        """Say goodbye to every partner and to the rendezvous, flush, and stop.

        The ``events`` channel ends once the last event is read.
        """
        if self.closed:
            return
        for talk in self.talks.values():
            if talk.open and not talk.plain:
                self._send_frame(talk, Bye("quit"))
        self._send_server(format_client_event(ServerCommand("quit")))
        await self._flush_and_stop()

    async def _flush_and_stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        writers = [link.writer for talk in self.talks.values() for link in talk.links]
        if self._server is not None:
            writers.append(self._server)
        for writer in writers:
            writer.finish()
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            for writer in writers:
                await writer.done.wait()
        self._events_send.close()

    async def aclose(self) -> None:
        """Stop everything now (after a flush if :meth:`quit` was not called)."""
        await self._flush_and_stop()
        self.nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_peer(config: PeerConfig, password_source: PasswordSource) -> AsyncIterator[PeerNode]:
    """Log in and listen; yield the running :class:`PeerNode`; close it on exit.

    Raises :class:`ServerUnreachable` or :class:`LoginFailed` before yielding.
    """
    try:
        async with trio.open_nursery() as nursery:
            node = PeerNode(config, nursery)
            await node.login(password_source)
            await node.listen()
            node.emit(
                System(
                    f"Logged in as {node.me} at {config.server_host}:"
                    f"{config.server_port}; direct links come to port {node.listen_port}"
                )
            )
            node.request_users()  # the notes' main menu: "Who do you want to talk to?"
            try:
                yield node
            finally:
                await node.aclose()
    except BaseExceptionGroup as group:
        # The nursery wraps even a lone error; callers want the error itself.
        sole = sole_error(group)
        if sole is not None:
            raise sole from None
        raise


def fixed_password(secret: str) -> PasswordSource:
    """A password source for scripts and bots: always ``secret``; gives up on a retry."""

    async def source(prompt: str, is_new: bool, attempt: int) -> str:
        if attempt > 1:
            raise LoginFailed(prompt)
        return secret

    return source
