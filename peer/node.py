"""The peer's network side: the rendezvous session, direct links, and one
:class:`Talk` per partner.

Theory of operation
-------------------
``open_peer`` opens a listener for direct links on a local port P, connects
to the rendezvous *from the same port P* (:mod:`peer.server_link`), logs in,
and tells the server P and its own addresses (``port:``, ``lan:``). Then:

* one task serves the rendezvous session (and reconnects it after a loss);
* one task accepts direct links; each link has its own reader task, a
  keepalive, and a writer task;
* every talk keeps a :class:`chathack.link.Conversation` (sequence numbers,
  acks, de-duplication) and a *path*: ``direct`` or ``punched`` when a link is
  up, ``relayed`` otherwise (frames wrapped in ``msg:`` lines).

``connect: NAME`` asks the server for NAME's candidates and starts an
upgrade (:mod:`peer.paths`): a short grace lets a LAN conversation open
``direct`` at once; otherwise it opens ``relayed`` and upgrades in the
background. The partner, told by ``Servidor[CALL]``, races too. When a link
breaks or goes silent (no frame for :data:`peer.links.LINK_DEAD_AFTER` s) the talk falls
back to the relay and re-sends whatever was not acknowledged, so nothing is
lost or shown twice.

The node never touches the terminal: it puts :mod:`peer.events` records on
``events``, read by exactly one UI (or by a bot through the library API).
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from nacl.signing import SigningKey

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
    Sealed,
    frame_to_relay_text,
    is_relay_frame,
    relay_text_to_frame,
)
from chathack.protocol import Command as ServerCommand
from chathack.protocol import Connect as ServerConnect
from chathack.protocol import (
    IdentityKey,
    Lan,
    ListenPort,
    Msg,
    Password,
    PeerAddress,
    ServerEvent,
    ServerLine,
    UserLine,
    UserState,
    format_client_event,
    format_endpoint,
    parse_peer_address,
    parse_users,
    parse_users_more,
)
from chathack.replies import parse_failed
from chathack.secure import KeyConfirm, KeyInit, KeyReply
from chathack.text import neutralise
from peer import direct, paths, pathsec, retransmit
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
from peer.faults import Faults
from peer.identity import Pins, load_identity, public_b64
from peer.links import LinkMixin
from peer.mail import Mailroom
from peer.pathsec import PathSec
from peer.server_link import (
    PasswordSource,
    ServerLink,
    TLSSettings,
    fixed_password,
    parse_endpoint,
)
from peer.sockets import open_listener, wildcard_for
from peer.tls import KnownServers, client_context

log = logging.getLogger("chathack.peer")

#: Seconds the rendezvous has to answer a ``connect:``.
CONNECT_REPLY_TIMEOUT = 10.0
#: Seconds before asking again about a partner that looks like a plain-text
#: client (it may be a peer that logged in a moment ago and not announced yet).
PLAIN_RECHECK = 0.5
#: Seconds ``connect`` waits for a direct link before opening on the relay.
DIRECT_GRACE = 0.5
#: Seconds ``quit`` waits for goodbyes to be written.
CLOSE_FLUSH_TIMEOUT = 2.0
#: The server's last word in a ``::passwd`` dialogue (rendezvous/server.py).
PASSWD_DONE = "Password changed"
#: Refusals end with this (wrong current password, too short a new one).
PASSWD_NOT_CHANGED = "the password was not changed"

#: What a session replaced by a login elsewhere says to every attempt to send.
REPLACED = (
    "This session was replaced by a login elsewhere: nothing can be sent from here. "
    "Restart chathack-peer to take it back"
)
#: Messages of a conversation shown again when it reopens.
REOPEN_LINES = 3

__all__ = ["PasswordSource", "PeerConfig", "PeerNode", "fixed_password", "open_peer"]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    server_host: str = "127.0.0.1"
    server_port: int = 7777
    listen_host: str = "0.0.0.0"
    listen_port: int = 0
    data_dir: Path | None = None
    relay_only: bool = False  # never open direct links (nor reveal addresses)
    identity: SigningKey | None = None  # default: the one in data_dir (made on first run)
    tls: bool = False  # speak TLS to the rendezvous (pinning its certificate)
    tls_fingerprint: str | None = None  # the certificate's SHA-256, if known in advance
    tls_ca: Path | None = None  # verify the certificate with this CA instead of pinning


@dataclass(eq=False)
class Talk:
    """One conversation with ``partner`` and the path it currently uses."""

    partner: str
    conv: Conversation
    path: PathName = "relayed"
    link: direct.DirectLink | None = None
    plain: bool = False  # the partner is a plain text client (e.g. nc): no frames
    open: bool = True
    links: set[direct.DirectLink] = field(default_factory=set)  # established, maybe spare
    relay_sec: PathSec = field(default_factory=PathSec)  # key exchange on the relay path
    offline: bool = False  # the partner is offline: messages go to the mailbox


class PeerNode(LinkMixin):
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
        self.listen_port: int | None = None
        self.server = ServerLink(
            config.name,
            (config.server_host, config.server_port),
            self._on_server_event,
            self._on_server_state,
        )
        if config.tls or config.tls_fingerprint or config.tls_ca:
            self.server.tls = TLSSettings(
                KnownServers(config.data_dir),
                config.tls_fingerprint,
                client_context(config.tls_ca) if config.tls_ca else None,
            )
        self.identity = config.identity or load_identity(config.data_dir)
        self.pins = Pins(config.data_dir)
        self.vouched: dict[str, bytes] = {}  # lower name -> key the rendezvous vouches for
        self.blocked: dict[str, bytes] = {}  # lower name -> changed key awaiting ::trust
        self.candidates: dict[str, paths.Candidates] = {}  # lower name -> last known
        self.upgrades: list[str] = []  # recent outcomes, for ::netcheck
        self.mail = Mailroom(self)
        #: Contains what a bug in one link, line or task raises (peer/faults.py).
        self.faults = Faults(self.emit)
        self._upgrade_scopes: dict[str, trio.CancelScope] = {}
        self._linked: dict[str, trio.Event] = {}
        self._connect_lock = trio.Lock()
        self._connecting: set[str] = set()  # lower names the user is connecting to
        self._connect_wait: tuple[str, trio.Event, list[PeerAddress | str]] | None = None
        self._acked = trio.Event()
        self._passwd: tuple[list[str], trio.Event, list[str]] | None = None
        self._passwd_lock = trio.Lock()
        self.closed = False

    # ------------------------------------------------------------------ UI
    def emit(self, event: UIEvent) -> None:
        with suppress(trio.ClosedResourceError):
            self._events_send.send_nowait(event)

    @property
    def server_state(self) -> str:
        return self.server.state

    def status(self) -> Status:
        talk = self.talks.get(self.active.lower()) if self.active else None
        return Status(
            self.me,
            talk.partner if talk else None,
            talk.path if talk else None,
            self.server_state,
        )

    def _status_changed(self) -> None:
        self.emit(self.status())

    # ------------------------------------------------------- rendezvous
    async def start(self, source: PasswordSource) -> None:
        """Listen, log in, announce where we can be reached, serve the session."""
        if not self.config.relay_only:
            listener = await open_listener(self.config.listen_host, self.config.listen_port)
            self.listen_port = int(listener.socket.getsockname()[1])
            bind = self.config.listen_host
            self.server.local = (bind, self.listen_port)
            self.nursery.start_soon(partial(trio.serve_listeners, self._accept, [listener]))
        reader = await self.server.login(self.nursery, source)
        self.nursery.start_soon(self.faults.contain, "sending mail acknowledgements", self.mail.run)
        retransmit.start(self)  # re-sends what the relay loses; says what is late
        self._announce()
        self.mail.resend_pending()
        self.nursery.start_soon(
            self.faults.contain,
            "the rendezvous session",
            self.server.run,
            reader,
            self.nursery,
            self._after_relogin,
        )

    def _announce(self) -> None:
        """Tell the server our identity key and where we accept direct links."""
        self._send_server(format_client_event(IdentityKey(public_b64(self.identity))))
        if self.config.relay_only or self.listen_port is None:
            self._send_server(format_client_event(Lan(())))
            return
        self._send_server(format_client_event(ListenPort(self.listen_port)))
        addrs: list[str] = []
        for host in (self.config.listen_host, self.server.local_ip):
            if host and host != wildcard_for(host) and host not in addrs:
                addrs.append(host)
        lan = tuple(format_endpoint(h, self.listen_port) for h in addrs)
        self._send_server(format_client_event(Lan(lan)))

    def _after_relogin(self) -> None:
        """Back on the rendezvous (maybe from a new address): re-announce, and ask
        every partner's current address (they learn ours from Servidor[CALL])."""
        self._announce()
        for talk in self.talks.values():
            if talk.open:
                self._send_server(format_client_event(ServerConnect(talk.partner)))
                if talk.link is None:
                    self.resend(talk)  # what waited for the relay goes now
        self.mail.resend_pending()

    def _send_server(self, data: bytes) -> bool:
        return self.server.send(data)

    def _on_server_state(self, state: str, sentence: str) -> None:
        if sentence and not self.closed:
            self.emit(System(sentence, "info" if state == "online" else "warning"))
        self._status_changed()

    def _on_server_event(self, event: ServerEvent) -> None:
        """One line from the rendezvous. A bug met while handling it costs that
        line (and, for a partner's line, that conversation), not the session."""
        try:
            self._handle_server_event(event)
        except Exception as exc:
            if isinstance(event, UserLine):
                talk = self.talks.get(event.origin.lower())
                if talk is not None and talk.open:
                    self.faults.report(
                        f"a message from {event.origin}", exc, "that conversation was closed"
                    )
                    self._close_talk(talk, f"Conversation with {talk.partner} closed")
                    return
            self.faults.report("a line from the rendezvous", exc)

    def _handle_server_event(self, event: ServerEvent) -> None:
        match event:
            case ServerLine() if self.mail.on_line(event):
                pass
            case UserLine(origin, text) if is_relay_frame(text):
                try:
                    frame = relay_text_to_frame(text)
                except RemoteProtocolError as e:
                    self.emit(System(f"Dropped a damaged message from {origin}: {e}", "warning"))
                    return
                self._on_frame(origin, frame, None)
            case UserLine(origin, text) if origin.lower() in self.vouched:
                self.emit(
                    System(
                        f"Dropped an unencrypted line claiming to be from {origin}: "
                        f"{origin} is a chathack peer and always encrypts",
                        "warning",
                    )
                )
            case UserLine(origin, text):
                talk = self._talk_for(origin, None)
                talk.plain = True
                self.emit(Incoming(talk.partner, text, time.time(), "relayed"))
            case ServerLine("PEER", text):
                self._on_address(text, answering=True)
            case ServerLine("FAILED", text):
                self._on_failed(text)
            case ServerLine("PASSWORD", _) if self._passwd is not None:
                self._passwd_answer(event)
            case ServerLine("OK" | "ERROR", text) if self._passwd is not None and (
                text == PASSWD_DONE or text.endswith(PASSWD_NOT_CHANGED)
            ):
                self._passwd_answer(event)
            case ServerLine("CALL", text):
                self._on_address(text, answering=False)
            case ServerLine("PUNCH", text):
                name, _, where = text.partition(" ")
                endpoint = parse_endpoint(where)
                # Only toward someone we asked for or who called us (the race that
                # precedes a punch may end before the conversation opens).
                if endpoint is not None and name.lower() in self.candidates:
                    self.nursery.start_soon(
                        self.faults.contain,
                        f"the hole punch to {name}",
                        self._punch,
                        name,
                        (endpoint.host, endpoint.port),
                    )
            case ServerLine("END", text):
                talk = self.talks.get(text.split(" ", 1)[0].lower())
                if talk is not None and talk.open:
                    self._close_talk(talk, text)
            case ServerLine("GONE", text):
                talk = self.talks.get(text.split(" ", 1)[0].lower())
                if talk is not None and talk.open:
                    self._partner_left(talk, text)
            case ServerLine("USERS", text):
                users = parse_users(text)
                self.known_users = users
                self.emit(UsersList(tuple(users), parse_users_more(text)))
            case ServerLine("OK" | "HELP" | "PONG" | "SEEN" | "TOKEN", _):
                pass
            case ServerLine("BYE", text) if self.closed:
                pass
            case ServerLine(flag, text):
                self.emit(ServerNotice(flag, text))

    def _on_failed(self, text: str) -> None:
        """A request about a user failed; the line says which (chathack/replies.py)."""
        try:
            failed = parse_failed(text)
        except RemoteProtocolError:
            self.emit(ServerNotice("FAILED", text))
            return
        match failed.request:
            case "connect" if self._answer_connect(failed.name, failed.reason):
                pass
            case "msg":
                talk = self.talks.get(failed.name.lower())
                if talk is not None and not talk.plain:
                    # Frames of a conversation (chat, acks, key exchange): what was
                    # not confirmed is the conversation's to re-send or to mail, so
                    # the person is told nothing here (a late ack's refusal is no loss).
                    if failed.code == "offline" and talk.open and not talk.offline:
                        self._partner_left(talk, f"{talk.partner} is offline")
                    return
                self.emit(System(f"Not delivered to {failed.name}: {failed.reason}", "warning"))
            case "punch":
                self._note(failed.name, f"punch refused: {failed.reason}")
            case _:  # a late answer to a connect that gave up waiting
                self.emit(System(failed.reason, "error"))

    def _on_address(self, text: str, answering: bool) -> None:
        """A partner's candidates, in answer to our ``connect:`` or in a CALL."""
        try:
            addr = parse_peer_address(text)
        except RemoteProtocolError as e:
            if answering:
                self._answer_connect(text.split(" ", 1)[0], str(e))
            return
        self._know_user(addr.name)
        self._learn(addr)
        if answering and self._answer_connect(addr.name, addr):
            return  # connect() takes it from here
        talk = self.talks.get(addr.name.lower())
        if dict(addr.extra).get("state") == "offline":
            # The answer to a re-login's connect: the partner is away meanwhile.
            if talk is not None and talk.open and not talk.offline:
                self._partner_left(talk, f"{addr.name} is offline")
            return
        if answering or self._is_open(addr.name):
            # Our re-login's answer, or the partner came back (maybe from a new network).
            if talk is not None and talk.offline:
                talk.offline = False
                self._status_changed()
            if not answering:
                self.emit(System(f"{addr.name} is back online"))
            if talk is not None and talk.open and talk.link is None:
                self.resend(talk)  # what waited on the relay goes now
            self._start_upgrade(paths.candidates_of(addr))
        else:
            self.emit(System(f"{addr.name} wants to talk to you"))
            self._start_upgrade(paths.candidates_of(addr))

    def _learn(self, addr: PeerAddress) -> None:
        """Remember the key the rendezvous vouches for and where ``addr.name`` is."""
        key = dict(addr.extra).get("key")
        if key:
            with suppress(ValueError):
                self.vouched[addr.name.lower()] = base64.b64decode(key, validate=True)
        self.candidates[addr.name.lower()] = paths.candidates_of(addr)

    def _know_user(self, name: str) -> None:
        if all(u.name.lower() != name.lower() for u in self.known_users):
            self.known_users.append(UserState(name, True))

    # ---------------------------------------------------------------- talks
    def _is_open(self, name: str) -> bool:
        talk = self.talks.get(name.lower())
        return talk is not None and talk.open

    def _talk_for(self, partner: str, link: direct.DirectLink | None) -> Talk:
        """The open talk with ``partner``, opened (and announced) if needed.

        Opening a talk never makes it the active one: only the user's own
        action does (``connect``, ``switch``), so what the user types next goes
        where the user chose, whoever else starts talking meanwhile.
        """
        key = partner.lower()
        talk = self.talks.get(key)
        if talk is not None and talk.open:
            return talk
        conv = talk.conv if talk is not None else Conversation(self.me, partner, self.epoch)
        talk = Talk(partner, conv, link.path if link else "relayed", link)
        self.talks[key] = talk
        self._know_user(partner)
        # Only lines of earlier runs: what this run recorded, it has shown already.
        self.show_history(partner, REOPEN_LINES, "earlier", before_this_run=True)
        if key not in self._connecting:  # connect() announces its own
            self.emit(
                System(
                    f"{partner} opened a conversation with you ({talk.path}): "
                    f"::switch {partner} to answer"
                )
            )
        self._status_changed()
        return talk

    def _close_talk(self, talk: Talk, why: str) -> None:
        talk.open = False
        scope = self._upgrade_scopes.pop(talk.partner.lower(), None)
        if scope is not None:
            scope.cancel()
        for link in list(talk.links):
            link.writer.finish()
        talk.link = None
        self._linked.pop(talk.partner.lower(), None)
        self.emit(System(why))
        if self.active and self.active.lower() == talk.partner.lower():
            # Not another open conversation: lines typed next would go to
            # someone the user did not choose.
            self.active = None
            others = [t.partner for t in self.talks.values() if t.open]
            if others:
                self.emit(
                    System(f"Still open: {', '.join(others)}; ::switch NAME to talk to one of them")
                )
        self._status_changed()

    def _send_frame(self, talk: Talk, frame: Frame) -> None:
        """Send on the talk's current path; chat, acks and goodbyes only sealed."""
        if talk.link is not None:
            sealed = pathsec.seal(talk.link.sec, frame)
            if sealed is not None and talk.link.send(sealed):
                return
            link, talk.link = talk.link, None
            talk.links.discard(link)
            self._fall_back(talk, "The direct link stalled")
            if isinstance(frame, Chat):
                return  # _fall_back re-sent every unacknowledged chat frame
        sealed = pathsec.seal(talk.relay_sec, frame)
        if sealed is None:
            # No key agreed on the relay yet: start one; chat frames wait in the
            # conversation (unacknowledged) and go once it is done.
            pathsec.start(self, talk.partner, talk.relay_sec, None)
            return
        if not self.send_raw(talk.partner, sealed, None) and isinstance(frame, Chat):
            self.emit(System(f"No path to {talk.partner} right now; the message waits", "warning"))

    def send_raw(self, partner: str, frame: Frame, link: direct.DirectLink | None) -> bool:
        """Put ``frame`` on a path as it is (handshakes, and already sealed frames)."""
        if link is not None:
            return link.send(frame)
        return self._send_server(format_client_event(Msg(partner, frame_to_relay_text(frame))))

    def _on_frame(self, origin: str, frame: Frame, link: direct.DirectLink | None) -> None:
        match frame:
            case KeyInit() | KeyReply() | KeyConfirm():
                if link is not None:
                    pathsec.on_handshake(self, origin, link.sec, link, frame)
                else:
                    talk = self._talk_for(origin, None)
                    pathsec.on_handshake(self, talk.partner, talk.relay_sec, None, frame)
            case Sealed():
                if link is not None and not self._is_current(link):
                    return  # a spare or unverified link carries no conversation
                talk = self._talk_for(origin, link)
                sec = link.sec if link is not None else talk.relay_sec
                inner = pathsec.open_sealed(self, talk.partner, sec, link, frame)
                if inner is not None:
                    self._on_inner(talk, inner)
            case Hello() if link is None:  # the caller announces a relayed conversation
                talk = self._talk_for(origin, None)
                pathsec.start(self, talk.partner, talk.relay_sec, None)
            case Hello():
                pass
            case Ping(nonce) if link is not None:
                link.send(Pong(nonce))
            case Ping() | Pong():
                pass
            case _:
                self.emit(
                    System(
                        f"Dropped an unencrypted message claiming to be from {origin}", "warning"
                    )
                )

    def _is_current(self, link: direct.DirectLink) -> bool:
        talk = self.talks.get(link.partner.lower())
        return talk is not None and link in talk.links

    def _on_inner(self, talk: Talk, frame: Frame) -> None:
        """A frame that arrived sealed, so it is really from ``talk.partner``."""
        match frame:
            case Chat():
                got = talk.conv.receive_chat(frame)
                now = time.time()
                for chat in got.deliver:
                    msg_id = f"{chat.epoch}-{chat.seq}"  # the id it would have as mail
                    if self.mail.history.add_incoming(talk.partner, chat.text, now, msg_id):
                        self.emit(Incoming(talk.partner, chat.text, now, talk.path))
                self._send_frame(talk, got.ack)
            case Ack():
                done = talk.conv.receive_ack(frame)
                for chat in done:
                    self.mail.history.advance(talk.partner, f"{self.epoch}-{chat.seq}", "delivered")
                if done:
                    self._acked.set()
                    self._acked = trio.Event()
            case Bye():
                if talk.open:
                    self._close_talk(talk, f"{talk.partner} ended the conversation")

    # ------------------------------------------------------------ user API
    async def connect(self, name: str) -> Talk | None:
        """Open a conversation with ``name``: direct if possible, else relayed
        at once and upgraded in the background."""
        if name.lower() == self.me.lower():
            self.emit(System("You cannot talk to yourself", "error"))
            return None
        if self.server.kicked:
            self.emit(System(REPLACED, "error"))
            return None
        talk = self.talks.get(name.lower())
        if talk is None or not talk.open:
            self._connecting.add(name.lower())
            try:
                talk = await self._open_talk(name)
            finally:
                self._connecting.discard(name.lower())
        if talk is not None:
            self._make_active(talk)
        return talk

    def _make_active(self, talk: Talk) -> None:
        """The user chose ``talk``: what they type goes there from now on."""
        self.active = talk.partner
        self.emit(System(f"Talking to {talk.partner} ({talk.path})"))
        self.mail.mark_read(talk.partner)
        self._status_changed()

    async def _open_talk(self, name: str) -> Talk | None:
        """Ask the rendezvous where ``name`` is and open the talk (not yet active)."""
        answer = await self._ask_connect(name)
        if isinstance(answer, PeerAddress) and self._looks_plain(answer):
            # A peer that has just logged in announces its key and addresses in
            # the lines right after its login; asked in between, the rendezvous
            # knows neither. Ask once more before taking it for a plain-text
            # client: a chathack peer taken for one drops what it is sent.
            await trio.sleep(PLAIN_RECHECK)
            answer = await self._ask_connect(name)
        if isinstance(answer, str):
            self.emit(ServerNotice("ERROR", answer))
            return None
        self._know_user(answer.name)
        cands = paths.candidates_of(answer)
        if dict(answer.extra).get("state") == "offline":
            talk = self._talk_for(answer.name, None)
            talk.offline = True
            self.emit(
                System(
                    f"{answer.name} is offline: what you type is kept for "
                    f"{answer.name} on the server and delivered at the next login"
                )
            )
        elif self._looks_plain(answer):
            talk = self._talk_for(answer.name, None)
            talk.plain = True
        else:
            self._start_upgrade(cands)
            linked = self._linked.setdefault(answer.name.lower(), trio.Event())
            with trio.move_on_after(DIRECT_GRACE):
                await linked.wait()
            talk = self._talk_for(answer.name, None)
            if talk.link is None:
                self.send_raw(talk.partner, Hello(self.me, answer.name, self.epoch), None)
                pathsec.start(self, talk.partner, talk.relay_sec, None)
        return talk

    def _looks_plain(self, addr: PeerAddress) -> bool:
        """Whether ``addr`` is a plain-text client's (``nc``): it announced no
        addresses and no key, and no key of that name was ever pinned or vouched
        for (a known chathack peer is never talked to in plain text)."""
        return (
            dict(addr.extra).get("state") != "offline"
            and not paths.candidates_of(addr).frames
            and "key" not in dict(addr.extra)
            and addr.name.lower() not in self.vouched
            and self.pins.get(addr.name) is None
        )

    async def _ask_connect(self, name: str) -> PeerAddress | str:
        async with self._connect_lock:
            done = trio.Event()
            answer: list[PeerAddress | str] = []
            self._connect_wait = (name.lower(), done, answer)
            try:
                if not self._send_server(format_client_event(ServerConnect(name))):
                    return "Not connected to the rendezvous: cannot look anybody up"
                with trio.move_on_after(CONNECT_REPLY_TIMEOUT):
                    await done.wait()
            finally:
                self._connect_wait = None
            return answer[0] if answer else "The rendezvous did not answer in time"

    def _answer_connect(self, name: str, answer: PeerAddress | str) -> bool:
        """Hand the answer about ``name`` (its address, or why not) to the waiting
        ``connect``; True if that is what it waits for."""
        if self._connect_wait is None:
            return False
        waiting, done, answers = self._connect_wait
        if name.lower() != waiting:
            return False
        answers.append(answer)
        done.set()
        return True

    async def send(self, name: str, text: str) -> bool:
        """Send ``text`` to ``name`` (opening the conversation if needed)."""
        if self.server.kicked:
            # Nothing can ever leave this session: saying "it waits" (and
            # recording it as sent) would be a lie.
            self.emit(System(REPLACED, "error"))
            return False
        talk = self.talks.get(name.lower())
        if talk is None or not talk.open:
            talk = await self.connect(name)
            if talk is None:
                return False
        now = time.time()
        if talk.plain:
            sent = self._send_server(format_client_event(Msg(talk.partner, text)))
        elif talk.offline:
            sent = self.mail.send(talk, text, now)
        else:
            try:
                chat = talk.conv.send_text(text, now)
            except RemoteProtocolError as e:
                self.emit(System(str(e), "error"))
                return False
            self.mail.history.add_outgoing(talk.partner, text, now, f"{self.epoch}-{chat.seq}")
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
        self._make_active(self.talks[name.lower()])

    def show_history(
        self, name: str, n: int, label: str = "history", before_this_run: bool = False
    ) -> None:
        """The last ``n`` messages with ``name``, oldest first, with their states
        (``before_this_run``: only those an earlier run recorded, see History.last)."""
        for e in self.mail.history.last(name, n, before_this_run):
            who = self.me if e.outgoing else e.partner
            state = f" [{e.state}]" if e.outgoing else ""
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.at))
            # A stored text is the partner's words: one line, whatever it holds.
            self.emit(System(f"{label}: {when} {who}: {neutralise(e.text)}{state}"))

    async def change_password(self, old: str, new: str) -> bool:
        """``::passwd``: the server checks ``old``, then keeps ``new``."""
        async with self._passwd_lock:
            done, result = trio.Event(), []
            self._passwd = ([old, new], done, result)
            try:
                if self._send_server(format_client_event(ServerCommand("passwd"))):
                    with trio.move_on_after(CONNECT_REPLY_TIMEOUT * 3):  # argon2, twice
                        await done.wait()
            finally:
                self._passwd = None
        if result == [PASSWD_DONE]:
            self.server.remember_password(new)
            self.emit(System("Password changed"))
            return True
        self.emit(
            System(f"The password was not changed: {result[0] if result else 'no answer'}", "error")
        )
        return False

    def _passwd_answer(self, line: ServerLine) -> None:
        assert self._passwd is not None
        secrets_left, done, result = self._passwd
        if line.flag == "PASSWORD" and secrets_left:
            self._send_server(format_client_event(Password(secrets_left.pop(0))))
            return
        result.append(line.text)
        done.set()

    def whois(self, name: str) -> None:
        for line in pathsec.describe(self, name):
            self.emit(System(line))

    def trust(self, name: str) -> None:
        """Accept ``name``'s new identity key (after checking the safety number)."""
        key = self.blocked.pop(name.lower(), None)
        if key is None:
            self.emit(System(f"No changed key is waiting for {name}", "error"))
            return
        self.pins.pin(name, key)
        self.emit(System(f"{name}'s new key is trusted and pinned"))
        talk = self.talks.get(name.lower())
        if talk is not None and talk.open:
            talk.relay_sec.reset()
            pathsec.start(self, talk.partner, talk.relay_sec, None)
            cands = self.candidates.get(name.lower())
            if cands is not None:
                self._start_upgrade(cands)

    async def netcheck(self) -> None:
        """Report what this peer knows about its network (``::netcheck``)."""
        from peer.netcheck import report

        rtt = await self.server.ping()
        for line in report(self, rtt):
            self.emit(System(line))

    async def handle_input(self, line: str) -> bool:
        """Act on one line typed by the user; False once the user quit."""
        from peer.input import dispatch

        try:
            return await dispatch(self, line)
        except Exception as exc:
            # What the user typed met a bug (or data from the network it could
            # not use, such as a junk key): that line is lost, not the program.
            self.faults.report("the line you typed", exc, "it was not acted on")
            return True

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
        self._report_unsent()
        for talk in self.talks.values():
            if talk.open and not talk.plain:
                self._send_frame(talk, Bye("quit"))
        self._send_server(format_client_event(ServerCommand("quit")))
        await self._flush_and_stop()

    def _report_unsent(self) -> None:
        """Say what leaves with us undelivered: never a silent loss."""
        unsent = {
            t.partner: len(t.conv.unacked)
            for t in self.talks.values()
            if not t.plain and t.conv.unacked
        }
        for p in self.mail.history.pending_mail():
            unsent[p.partner] = unsent.get(p.partner, 0) + 1
        if unsent:
            where = ", ".join(f"{n} to {partner}" for partner, n in unsent.items())
            self.emit(
                System(
                    f"Not delivered: {where} (not confirmed by the partner or the server; "
                    "::history shows them as sent)",
                    "warning",
                )
            )

    async def _flush_and_stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        writers = [link.writer for talk in self.talks.values() for link in talk.links]
        server_writer = self.server.finish()
        if server_writer is not None:
            writers.append(server_writer)
        self.mail.flush()
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

    Raises :class:`~peer.errors.ServerUnreachable` or
    :class:`~peer.errors.LoginFailed` before yielding.
    """
    try:
        async with trio.open_nursery() as nursery:
            node = PeerNode(config, nursery)
            await node.start(password_source)
            where = (
                f"direct links come to port {node.listen_port}"
                if node.listen_port
                else "relay only"
            )
            node.emit(
                System(
                    f"Logged in as {node.me} at {config.server_host}:{config.server_port}; {where}"
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
