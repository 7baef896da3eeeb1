"""The peer's core: :class:`PeerState` takes one input and returns what to do.

``handle(input, now)`` is the only way in. ``now`` is the driver's monotonic
clock (timers); wall-clock stamps for messages come from ``wall``. Nothing
here awaits, sleeps, opens a socket or starts a task, so the whole peer —
requests and their replies, conversations and the active one, paths, re-send
timers, trust decisions, the mailroom — is tested by feeding records
(tests/test_peer_core.py, tests/test_peer_core_stateful.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nacl.signing import SigningKey

from chathack.errors import RemoteProtocolError
from chathack.link import is_relay_frame, relay_text_to_frame
from chathack.protocol import KICKED_PREFIX, PeerAddress, ServerLine, UserLine, UserState
from chathack.protocol import Connect as AskFor
from chathack.replies import Failed
from chathack.retransmit import Timing
from chathack.server_events import (
    Bye,
    CallFrom,
    ConversationEnded,
    Failure,
    MailIn,
    MailReceipt,
    MailRefused,
    MailStored,
    PartnerGone,
    PasswdResult,
    PasswordPrompt,
    PeerInfo,
    PrekeyBundle,
    PrekeyStock,
    PunchNow,
    UsersInfo,
    parse_server_event,
)
from peer.core.candidates import Candidates
from peer.core.connecting import Connector, keyless
from peer.core.conversations import Conversations
from peer.core.directory import Directory
from peer.core.mailroom import Mailroom
from peer.core.records import (
    AcceptFile,
    CancelTransfer,
    CloseLink,
    Effect,
    Fault,
    FlushMail,
    FromServer,
    Input,
    LinkDown,
    LinkFrame,
    LinkUp,
    ListTransfers,
    LoggedIn,
    Note,
    PunchFailed,
    PunchTo,
    RejectFile,
    SendFile,
    ServerState,
    Show,
    Tick,
    ToLink,
    ToServer,
)
from peer.core.requests import CONNECT_REPLY_TIMEOUT, Requests
from peer.core.security import Keys
from peer.core.talk import Talk
from peer.core.transfers import Transfers
from peer.core.user import UserCommands
from peer.events import Incoming, ServerNotice, System, UsersList
from peer.files import FileStore
from peer.history import History
from peer.identity import Pins
from peer.prekeys import PrekeyVault

#: Flags whose lines the user need not see (answers the core or the session used).
QUIET_FLAGS = ("OK", "HELP", "PONG", "SEEN", "TOKEN")


class PeerState:
    """Everything one logged-in user's peer knows and decides."""

    def __init__(
        self,
        me: str,
        identity: SigningKey,
        pins: Pins,
        history: History,
        *,
        epoch: str,
        prekeys: PrekeyVault | None = None,
        relay_only: bool = False,
        timing: Timing | None = None,
        wall: Callable[[], float] = time.time,
        files: FileStore | None = None,
        relay_files: bool = True,
    ) -> None:
        self.me = me
        self.epoch = epoch
        self.wall = wall
        self.keys = Keys(me, identity, pins)
        vault = prekeys if prekeys is not None else PrekeyVault(None, identity)
        self.mail = Mailroom(self.keys, history, epoch, vault)
        self.convs = Conversations(self.keys, self.mail, epoch, timing or Timing(), wall)
        self.directory = Directory(self.keys, relay_only)
        self.requests = Requests()
        self.connector = Connector(self.convs, self.directory, self.requests)
        self.user = UserCommands(
            self.convs, self.directory, self.mail, self.requests, self.connector
        )
        self.now = 0.0
        self.transfers = Transfers(
            self.convs, files or FileStore(None), lambda: self.now, relay_files, wall
        )
        #: Partners an earlier run left transfers with: reached once logged in.
        self.resume_with = self.transfers.load()
        #: Callers' candidates, dialled once the caller's key checked out.
        self.deferred: dict[str, Candidates] = {}

    # -------------------------------------------------------------- views
    @property
    def talks(self) -> dict[str, Talk]:
        return self.convs.talks

    @property
    def active(self) -> str | None:
        return self.convs.active

    @property
    def closed(self) -> bool:
        return self.convs.closed

    @property
    def kicked(self) -> bool:
        return self.convs.kicked

    @property
    def known_users(self) -> list[UserState]:
        return self.directory.users

    @property
    def candidates(self) -> dict[str, Candidates]:
        return self.directory.candidates

    def next_deadline(self) -> float | None:
        """When the next :class:`Tick` is due for a request (timers of the
        conversations are polled on every tick as well)."""
        return self.requests.next_deadline()

    # ---------------------------------------------------------------- in
    def handle(self, event: Input, now: float) -> list[Effect]:
        """Act on ``event``; what the driver must do, in order."""
        self.now = now
        out: list[Effect] = []
        try:
            self._dispatch(event, out)
            self.connector.settle(out)
            self._upgrade_when_verified(out)
        except Exception as exc:
            out.extend(self._contain(event, exc))
        if self.kicked:
            # A session replaced by a login elsewhere sends nothing more: its
            # partners talk to the new one (timers, acks, goodbyes included).
            out = [e for e in out if not isinstance(e, ToServer | ToLink)]
        return out

    def _contain(self, event: Input, exc: Exception) -> list[Effect]:
        """A bug met while handling ``event`` costs that input (and, for a
        partner's line, that conversation), not the session."""
        out: list[Effect] = []
        if isinstance(event, FromServer) and isinstance(event.line, UserLine):
            talk = self.convs.open_talk(event.line.origin)
            if talk is not None:
                out.append(
                    Fault(f"a message from {talk.partner}", exc, "that conversation was closed")
                )
                self.convs.close_talk(talk, f"Conversation with {talk.partner} closed", out)
                return out
        if isinstance(event, LinkFrame):
            link = self.convs.links.get(event.link_id)
            who = link.partner if link is not None else "a partner"
            fault = Fault(f"a frame from {who}", exc, "that direct link was closed")
            # The conversation falls back to the relay and re-sends from there.
            return [fault, CloseLink(event.link_id)]
        where = "a line from the rendezvous" if isinstance(event, FromServer) else "an event"
        return [Fault(where, exc, "it was dropped")]

    def _dispatch(self, event: Input, out: list[Effect]) -> None:
        match event:
            case FromServer(line):
                self._from_server(line, out)
            case LinkFrame(link_id, frame):
                link = self.convs.links.get(link_id)
                if link is not None:
                    self.convs.on_frame(link.partner, frame, link_id, out)
            case LinkUp(info):
                if self.kicked or self.closed:
                    out.append(CloseLink(info.id))
                elif self._expects(info.partner):
                    self.convs.link_up(info, self.now, out)
                else:
                    out.append(Note(info.partner, "hung up on a link nobody expected"))
                    out.append(CloseLink(info.id))
            case LinkDown(link_id, why):
                self.convs.link_down(link_id, why, out)
            case ServerState(state, sentence):
                self.convs.server = state
                if sentence and not self.closed:
                    level = "info" if state == "online" else "warning"
                    out.append(Show(System(sentence, level, topic="rendezvous")))
                out.append(Show(self.convs.status()))
            case LoggedIn(relogin):
                self._logged_in(relogin, out)
            case PunchFailed(name, why):
                out.append(Note(name, why))
                if not self.convs.linked(name) and self.convs.open_talk(name) is not None:
                    out.append(
                        Show(
                            System(
                                f"No direct path to {name} ({why}); staying on the relay (relayed)",
                                about=name,
                            )
                        )
                    )
            case Tick():
                self._tick(out)
            case FlushMail():
                self.mail.flush(out)
            case SendFile() | AcceptFile() | RejectFile() | ListTransfers() | CancelTransfer():
                self._files(event, out)
            case _:
                self.user.handle(event, self.now, self.wall(), out)

    def _files(
        self,
        command: SendFile | AcceptFile | RejectFile | ListTransfers | CancelTransfer,
        out: list[Effect],
    ) -> None:
        transfers = self.transfers
        if self.closed or self.kicked:
            out.append(Show(System("Nothing more is sent from this session", "error")))
            return
        match command:
            case SendFile(partner, source, name, size, sha, kind):
                transfers.offer(partner, source, name, size, sha, kind, out)
            case AcceptFile(folder, partner):
                transfers.accept(folder, out, partner)
            case RejectFile(partner):
                transfers.reject(out, partner)
            case ListTransfers():
                transfers.list(out)
            case CancelTransfer(number):
                transfers.cancel(number, out)

    def _expects(self, name: str) -> bool:
        """Whether a direct link from ``name`` is welcome: someone this peer is
        talking to, asking for, or was called by, whose key the rendezvous
        vouched for in this session (the link's key exchange is checked
        against it: a stranger at the port cannot pose as anyone)."""
        key = name.lower()
        return key in self.keys.vouched and (
            self.convs.open_talk(name) is not None
            or key in self.requests.connects
            or key in self.directory.candidates
        )

    def _upgrade_when_verified(self, out: list[Effect]) -> None:
        """Once a caller's key checked out on the relay, this peer calls it
        back (``connect:``): the rendezvous then gives each side the other's
        addresses, and both race for a direct link, as a caller reachable
        only through us (a NATed caller of a public host) needs."""
        for key, cands in list(self.deferred.items()):
            talk = self.convs.open_talk(key)
            if talk is None:
                continue
            if talk.relay_sec.session is not None or talk.link is not None:
                del self.deferred[key]
                if talk.link is None and not self.directory.relay_only and cands.frames:
                    out.append(ToServer(AskFor(talk.partner)))

    def _tick(self, out: list[Effect]) -> None:
        self.connector.tick(self.now, out)
        passwd = self.requests.passwd
        if passwd is not None and passwd.deadline <= self.now:
            self.user.passwd_over(False, "no answer", out)
        self.convs.poll_timers(self.now, out, lambda *a: out.append(Fault(*a)))
        self.convs.expire_links(self.now, out)
        self.transfers.tick(self.now, out)

    def _logged_in(self, relogin: bool, out: list[Effect]) -> None:
        """Back on the rendezvous (maybe from a new address): ask every
        partner's current address (they learn ours from Servidor[CALL]), and
        send what waited."""
        if relogin:
            for pending in self.requests.connects.values():
                if pending.stage == "asking":  # the question may have died with the old server
                    pending.deadline = self.now + CONNECT_REPLY_TIMEOUT
                    out.append(ToServer(AskFor(pending.name)))
            for talk in self.talks.values():
                if talk.open:
                    out.append(ToServer(AskFor(talk.partner)))
                    if talk.link is None:
                        self.convs.resend(talk, out)  # what waited for the relay goes now
        self.mail.publish(self.wall(), out)
        self.mail.resend_pending(out)
        resume, self.resume_with = self.resume_with, []
        for partner in resume:
            # Transfers an earlier run left unfinished: their conversations reopen.
            if self.convs.open_talk(partner) is None and partner.lower() != self.me.lower():
                self.connector.start(partner, self.now, out, False)

    # ----------------------------------------------------- the rendezvous
    def _from_server(self, line: ServerLine | UserLine, out: list[Effect]) -> None:
        if isinstance(line, UserLine):
            self._user_line(line, out)
            return
        try:
            event = parse_server_event(line)
        except RemoteProtocolError as e:
            out.append(Show(System(f"Ignored a malformed {line.flag} line: {e}", "warning")))
            return
        match event:
            case (
                MailIn()
                | MailStored()
                | MailReceipt()
                | MailRefused()
                | PrekeyBundle()
                | PrekeyStock()
            ):
                self.mail.on_event(event, self.active, self.wall(), out)
            case PeerInfo(addr):
                pending = self.requests.waiting_for(addr.name)
                if pending is not None:
                    self.connector.answered(pending, addr, self.now, out)
                else:
                    self._on_address(addr, answering=True, out=out)
            case CallFrom(addr):
                self._on_address(addr, answering=False, out=out)
            case Failure(failed):
                self._on_failed(failed, out)
            case PasswordPrompt() if self.requests.passwd is not None:
                self.user.passwd_prompted(out)
            case PasswdResult(changed, reason) if self.requests.passwd is not None:
                self.user.passwd_over(changed, reason, out)
            case PunchNow(name, host, port):
                # Only toward someone we asked for or who called us (the race
                # that precedes a punch may end before the conversation opens).
                if name.lower() in self.candidates:
                    out.append(PunchTo(name, host, port))
            case ConversationEnded(name, text):
                talk = self.convs.open_talk(name)
                if talk is not None:
                    self.convs.close_talk(talk, text, out)
            case PartnerGone(name, text):
                talk = self.convs.open_talk(name)
                if talk is not None:
                    self.convs.partner_left(talk, text, self.now, out)
            case UsersInfo(users, more):
                self.directory.users = list(users)
                self.directory.complete = more == 0
                out.append(Show(UsersList(tuple(users), more)))
            case Bye(text) if text.startswith(KICKED_PREFIX):
                self.convs.replaced(out)
                out.append(Show(System(text, "error")))
            case Bye() if self.closed:
                pass
            case _ if line.flag in QUIET_FLAGS:
                pass
            case _:
                out.append(Show(ServerNotice(line.flag, line.text)))

    def _user_line(self, line: UserLine, out: list[Effect]) -> None:
        origin, text = line.origin, line.text
        if is_relay_frame(text):
            try:
                frame = relay_text_to_frame(text)
            except RemoteProtocolError as e:
                out.append(
                    Show(System(f"Dropped a damaged message from {origin}: {e}", "warning", origin))
                )
                return
            self.convs.on_frame(origin, frame, None, out)
        elif self.keys.is_peer(origin):
            out.append(
                Show(
                    System(
                        f"Dropped an unencrypted line claiming to be from {origin}: "
                        f"{origin} is a chathack peer and always encrypts",
                        "warning",
                        origin,
                    )
                )
            )
        else:
            talk = self.convs.talk_for(origin, out, "unencrypted")
            talk.make_plain()
            out.append(Show(Incoming(talk.partner, text, self.wall(), "unencrypted")))

    def _on_failed(self, failed: Failed, out: list[Effect]) -> None:
        """A request about a user failed; the line says which (chathack/replies.py)."""
        name, reason = failed.name, failed.reason
        match failed.request:
            case "connect":
                if not self.connector.failed(name, reason, out):
                    # a late answer to a connect that gave up waiting
                    out.append(Show(System(reason, "error", name)))
            case "msg":
                talk = self.talks.get(name.lower())
                if talk is not None and not talk.plain:
                    # Frames of a conversation (chat, acks, key exchange): what was
                    # not confirmed is the conversation's to re-send or to mail, so
                    # the person is told nothing here (a late ack's refusal is no loss).
                    if failed.code == "offline" and talk.open and not talk.offline:
                        self.convs.partner_left(talk, f"{talk.partner} is offline", self.now, out)
                    return
                out.append(Show(System(f"Not delivered to {name}: {reason}", "warning", name)))
            case "punch":
                out.append(Note(name, f"punch refused: {reason}"))
            case "prekey":
                self.mail.prekeys_refused(name, reason, out)
            case _:
                out.append(Show(System(reason, "error", name)))

    def _on_address(self, addr: PeerAddress, *, answering: bool, out: list[Effect]) -> None:
        """A partner's candidates: the answer to a re-login's ``connect:``, or a CALL."""
        if self.directory.keyless_peer(addr):
            out.append(Show(System(keyless(addr.name), "warning", addr.name)))
            return
        cands = self.directory.learn(addr, called=not answering)
        talk = self.convs.open_talk(addr.name)
        if dict(addr.extra).get("state") == "offline":
            # The answer to a re-login's connect: the partner is away meanwhile.
            if talk is not None and not talk.offline:
                self.convs.partner_left(talk, f"{addr.name} is offline", self.now, out)
            return
        if answering or talk is not None:
            # Our re-login's answer, or the partner came back (maybe from a new network).
            if talk is not None and talk.offline:
                talk.offline = False
                out.append(Show(self.convs.status()))
                if not answering:
                    out.append(Show(System(f"{addr.name} is back online", about=addr.name)))
            if talk is not None and talk.link is None:
                self.convs.resend(talk, out)  # what waited on the relay goes now
            self.directory.upgrade(cands, out)
        else:
            out.append(Show(System(f"{addr.name} wants to talk to you", about=addr.name)))
            self.deferred[addr.name.lower()] = cands  # dialled once its key checks out
