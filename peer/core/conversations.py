"""Every conversation and every direct link: which path each conversation
uses, what goes on it, what comes back, and what the user is shown.

The rules held here:

* the active conversation (where a typed line goes) changes only by the
  user's own action (:meth:`Conversations.make_active`); a partner opening a
  conversation or writing is announced, never made active;
* a message is shown at most once, whatever delivered it: its id is the one
  it would have as mail, and the history refuses an id it holds;
* chat, ack and goodbye frames travel only sealed for the path they take; a
  direct link carries a conversation only after its own key exchange;
* whatever a path lost is re-sent on the next (fallback, spare link, relay
  key agreed), and on a timer on the relay (:mod:`chathack.retransmit`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from chathack.delivery import Conversation
from chathack.file_frames import FileAccept, FileAck, FileCancel, FileChunk, FileDone, FileOffer
from chathack.link import Ack, Bye, Chat, Frame, Hello, Ping, Pong, Sealed, SealedChunk
from chathack.retransmit import (
    CaughtUp,
    Gap,
    GapFilled,
    Late,
    Resend,
    RetryKeyExchange,
    Timing,
)
from chathack.secure import KeyConfirm, KeyInit, KeyReply
from peer.core import security
from peer.core.mailroom import Mailroom
from peer.core.records import CloseLink, Effect, LinkInfo, Show, StopUpgrade
from peer.core.security import Keys, PathId
from peer.core.talk import LinkState, Talk
from peer.events import Delivery, Incoming, PathName, Recalled, Status, System

#: Messages of a conversation shown again when it reopens.
REOPEN_LINES = 3
#: Seconds a direct link has, from its Hello, to verify the partner's key.
LINK_VERIFY_TIMEOUT = 10.0


class Conversations:
    def __init__(
        self, keys: Keys, mail: Mailroom, epoch: str, timing: Timing, wall: Callable[[], float]
    ) -> None:
        self.keys = keys
        self.mail = mail
        self.epoch = epoch
        self.timing = timing
        self.wall = wall
        self.talks: dict[str, Talk] = {}  # folded name -> talk (open or not)
        self.links: dict[int, LinkState] = {}  # every link up, verified or not
        self.active: str | None = None
        self.connecting: set[str] = set()  # folded names the user is connecting to
        self.server = "connecting"  # the rendezvous session's state
        self.kicked = False  # replaced by a login of the same user elsewhere
        self.closed = False
        #: Where file frames go, and who hears of a new path: the transfers
        #: (:mod:`peer.core.transfers`, which sits above this module).
        self.on_file: Callable[[Talk, Any, list[Effect]], None] = _ignore
        self.on_path: Callable[[Talk, list[Effect]], None] = _ignore

    @property
    def me(self) -> str:
        return self.keys.me

    # ----------------------------------------------------------- lookups
    def open_talk(self, name: str) -> Talk | None:
        talk = self.talks.get(name.lower())
        return talk if talk is not None and talk.open else None

    def status(self) -> Status:
        talk = self.open_talk(self.active) if self.active else None
        return Status(
            self.me, talk.partner if talk else None, talk.path if talk else None, self.server
        )

    def unacknowledged(self) -> int:
        return sum(len(t.conv.unacked) for t in self.talks.values() if t.open and not t.plain)

    # ------------------------------------------------------------- talks
    def talk_for(self, partner: str, out: list[Effect], path: PathName = "relayed") -> Talk:
        """The open talk with ``partner``, opened (and announced) if needed.

        Opening a talk never makes it the active one: only the user's own
        action does, so what the user types next goes where the user chose.
        """
        key = partner.lower()
        talk = self.talks.get(key)
        if talk is not None and talk.open:
            self.encrypt_if_peer(talk, out)
            return talk
        if talk is not None:
            conv = talk.conv
        else:
            # A random epoch per conversation: a message's id (its mail id,
            # should it go to the mailbox) is unique among all this run sends,
            # and derived from nothing the rendezvous ever sees in clear.
            conv = Conversation(self.me, partner, secrets.token_hex(8))
        talk = Talk(partner, conv, self.timing, path)
        self.talks[key] = talk
        # Only lines of earlier runs: what this run recorded, it has shown already.
        self.show_history(partner, REOPEN_LINES, out, "earlier", before_this_run=True)
        if key not in self.connecting:  # the user's own connect announces itself
            out.append(
                _info(
                    f"{partner} opened a conversation with you ({talk.path}): "
                    f"::switch {partner} to answer",
                    partner,
                )
            )
        out.append(Show(self.status()))
        return talk

    def encrypt_if_peer(self, talk: Talk, out: list[Effect]) -> None:
        """A talk opened in plain text whose partner turned out to be a chathack
        peer (its key vouched or pinned) never sends in clear again."""
        if talk.plain and self.keys.is_peer(talk.partner):
            talk.make_encrypted()
            out.append(
                _warn(
                    f"{talk.partner} is a chathack peer: the conversation is encrypted from now "
                    f"on. Earlier unencrypted lines under that name may not have been "
                    f"{talk.partner}'s",
                    talk.partner,
                )
            )
            out.append(Show(self.status()))

    def make_active(self, talk: Talk, out: list[Effect]) -> None:
        """The user chose ``talk``: what they type goes there from now on."""
        self.active = talk.partner
        out.append(_info(f"Talking to {talk.partner} ({talk.path})", talk.partner))
        self.mail.mark_read(talk.partner)
        out.append(Show(self.status()))

    def replaced(self, out: list[Effect]) -> None:
        """A login of the same user elsewhere took over: this session lets go
        of every direct link (its partners' frames belong to the new one)."""
        self.kicked = True
        for talk in self.talks.values():
            out.append(StopUpgrade(talk.partner))
            talk.links.clear()
            talk.link = None
        out.extend(CloseLink(link_id) for link_id in sorted(self.links))
        self.links.clear()

    def close_talk(self, talk: Talk, why: str, out: list[Effect]) -> None:
        talk.open = False
        out.append(StopUpgrade(talk.partner))
        out.extend(CloseLink(link_id) for link_id in sorted(talk.links))
        talk.links.clear()
        talk.link = None
        out.append(_info(why, talk.partner))
        if talk.conv.unacked and not talk.plain:
            # Never a silent loss: they stay unconfirmed in the history, and
            # the conversation re-sends them if it opens again.
            n = _n(len(talk.conv.unacked), "message")
            out.append(
                _warn(
                    f"Not delivered: {n} to {talk.partner} not confirmed before the "
                    "conversation closed; they go again if it reopens",
                    talk.partner,
                )
            )
        if self.active and self.active.lower() == talk.partner.lower():
            # Not another open conversation: lines typed next would go to
            # someone the user did not choose.
            self.active = None
            others = [t.partner for t in self.talks.values() if t.open]
            if others:
                out.append(
                    _info(f"Still open: {', '.join(others)}; ::switch NAME to talk to one of them")
                )
        out.append(Show(self.status()))

    def show_history(
        self,
        name: str,
        n: int,
        out: list[Effect],
        label: str = "history",
        before_this_run: bool = False,
    ) -> None:
        """The last ``n`` messages with ``name``, oldest first, with their states."""
        entries = self.mail.history.last(name, n, before_this_run)
        if not entries and label == "history":
            out.append(_info(f"No messages with {name} yet", name))
        for e in entries:
            who = self.me if e.outgoing else e.partner
            state = e.state if e.outgoing else ""
            out.append(Show(Recalled(e.partner, who, e.text, e.at, state, label)))

    # ------------------------------------------------------------ sending
    def send_frame(self, talk: Talk, frame: Frame, out: list[Effect]) -> None:
        """Send on the talk's current path; chat, acks and goodbyes only sealed."""
        if talk.link is not None:
            sealed = security.seal(self.links[talk.link].sec, frame)
            if sealed is not None:
                out.append(security.raw(talk.partner, sealed, talk.link))
                return
        sealed = security.seal(talk.relay_sec, frame)
        if sealed is None:
            # No key agreed on the relay yet: start one; chat frames wait in the
            # conversation (unacknowledged) and go once it is done.
            security.start(self.keys, talk.partner, talk.relay_sec, None, out)
            return
        if self.server != "online" and isinstance(frame, Chat):
            out.append(
                _warn(f"No path to {talk.partner} right now; the message waits", talk.partner)
            )
        out.append(security.raw(talk.partner, sealed, None))

    def send_chunk(self, talk: Talk, chunk: FileChunk, out: list[Effect]) -> bool:
        """File data on the talk's current path; False if it has no key yet."""
        if talk.link is not None:
            sealed = security.seal_chunk(self.links[talk.link].sec, chunk)
            if sealed is not None:
                out.append(security.raw(talk.partner, sealed, talk.link))
                return True
            return False
        sealed = security.seal_chunk(talk.relay_sec, chunk)
        if sealed is None:
            return False
        out.append(security.raw(talk.partner, sealed, None))
        return True

    def rekey_relay(self, talk: Talk, out: list[Effect]) -> None:
        """The relay's session seems out of step with the partner's (what goes
        on it stalls): agree a new one; what waits goes once it is agreed."""
        if talk.link is None and self.server == "online" and not self.closed:
            security.restart(self.keys, talk.partner, talk.relay_sec, out, forget=True)

    def resend(self, talk: Talk, out: list[Effect]) -> None:
        """The talk has a (new) path: what it lost goes again, chats and files."""
        for chat in talk.conv.to_resend():
            self.send_frame(talk, chat, out)
        self.on_path(talk, out)

    # ---------------------------------------------------------- receiving
    def on_frame(self, origin: str, frame: Frame, link_id: PathId, out: list[Effect]) -> None:
        link = self.links.get(link_id) if link_id is not None else None
        if link_id is not None and link is None:
            return  # a frame of a link already let go
        match frame:
            case KeyInit() | KeyReply() | KeyConfirm():
                if link is not None:
                    self._link_handshake(link, frame, out)
                else:
                    talk = self.talk_for(origin, out)
                    outcome = security.on_handshake(
                        self.keys, talk.partner, talk.relay_sec, None, frame, out
                    )
                    if outcome == "secured" and talk.open and talk.link is None:
                        self.resend(talk, out)  # what waited for the key goes now
            case Sealed():
                if link is not None and link.id not in self._carrying(link.partner):
                    return  # a spare or unverified link carries no conversation
                talk = self.talk_for(origin, out, link.info.path if link else "relayed")
                sec = link.sec if link is not None else talk.relay_sec
                inner = security.open_sealed(self.keys, talk.partner, sec, link_id, frame, out)
                if inner is not None:
                    self._on_inner(talk, inner, out)
            case SealedChunk():
                if link is not None and link.id not in self._carrying(link.partner):
                    return
                talk = self.talks.get(origin.lower())
                if talk is None or not talk.open:
                    return  # file data opens no conversation
                sec = link.sec if link is not None else talk.relay_sec
                chunk = security.open_chunk(talk.partner, sec, frame, out)
                if chunk is not None:
                    self.on_file(talk, chunk, out)
            case Hello() if link is None:  # the caller announces a relayed conversation
                talk = self.talk_for(origin, out)
                security.start(self.keys, talk.partner, talk.relay_sec, None, out)
            case Hello() | Ping() | Pong():
                pass  # a link's keepalives are its driver's
            case _:
                out.append(
                    _warn(f"Dropped an unencrypted message claiming to be from {origin}", origin)
                )

    def _carrying(self, partner: str) -> set[int]:
        talk = self.talks.get(partner.lower())
        return talk.links if talk is not None else set()

    def _on_inner(self, talk: Talk, frame: Frame, out: list[Effect]) -> None:
        """A frame that arrived sealed, so it is really from ``talk.partner``."""
        match frame:
            case Chat():
                got = talk.conv.receive_chat(frame)
                now = self.wall()
                for chat in got.deliver:
                    msg_id = chat_id(chat)  # the id it would have as mail
                    if self.mail.history.add_incoming(talk.partner, chat.text, now, msg_id):
                        out.append(Show(Incoming(talk.partner, chat.text, now, talk.path)))
                self.send_frame(talk, got.ack, out)
            case Ack():
                for chat in talk.conv.receive_ack(frame):
                    msg_id = chat_id(chat)
                    if self.mail.history.advance(talk.partner, msg_id, "delivered"):
                        out.append(Show(Delivery(talk.partner, msg_id, "delivered", live=True)))
            case FileAck() | FileOffer() | FileAccept() | FileDone() | FileCancel():
                self.on_file(talk, frame, out)
            case Bye():
                if talk.open:
                    self.close_talk(talk, f"{talk.partner} ended the conversation", out)

    # -------------------------------------------------------------- links
    def link_up(self, info: LinkInfo, now: float, out: list[Effect]) -> None:
        link = self.links[info.id] = LinkState(info, now)
        if link.initiator(self.me):
            security.start(self.keys, info.partner, link.sec, info.id, out)

    def _link_handshake(
        self, link: LinkState, frame: KeyInit | KeyReply | KeyConfirm, out: list[Effect]
    ) -> None:
        outcome = security.on_handshake(self.keys, link.partner, link.sec, link.id, frame, out)
        if outcome == "refused" or (outcome == "secured" and not self._adopt(link, out)):
            out.append(CloseLink(link.id))  # an unverified or unneeded link is closed

    def _adopt(self, link: LinkState, out: list[Effect]) -> bool:
        """Make ``link`` the talk's path unless a better one is up; False: not taken."""
        talk = self.talk_for(link.partner, out, link.info.path)
        current = self.links.get(talk.link) if talk.link is not None else None
        if current is not None and current is not link and current.info.rank() >= link.info.rank():
            return False  # both ends keep the same (higher-ranked) link
        talk.links.add(link.id)
        talk.link, talk.plain = link.id, False
        was, talk.path = talk.path, link.info.path
        if current is not None and current is not link:
            out.append(CloseLink(current.id))
        if was != talk.path:
            how = "directly" if talk.path == "direct" else "through a punched hole"
            out.append(_info(f"Now talking to {talk.partner} {how} ({talk.path})", talk.partner))
            out.append(Show(self.status()))
        self.resend(talk, out)
        return True

    def expire_links(self, now: float, out: list[Effect]) -> None:
        """A link whose key exchange did not verify the partner in time is closed
        (a stranger's Hello plus pings would hold it, and a descriptor, forever)."""
        carrying = {i for t in self.talks.values() for i in t.links}
        for link in list(self.links.values()):
            if link.id not in carrying and now - link.since > LINK_VERIFY_TIMEOUT:
                del self.links[link.id]
                out.append(CloseLink(link.id))

    def linked(self, name: str) -> bool:
        talk = self.talks.get(name.lower())
        return talk is not None and talk.link is not None

    def link_down(self, link_id: int, why: str, out: list[Effect]) -> None:
        link = self.links.pop(link_id, None)
        if link is None:
            return
        talk = self.talks.get(link.partner.lower())
        if talk is None:
            return
        talk.links.discard(link_id)
        if talk.link != link_id:
            return
        talk.link = None
        spares = [self.links[i] for i in talk.links if i in self.links]
        spare = max(spares, key=lambda x: x.info.rank(), default=None)
        if spare is not None and talk.open:
            self._adopt(spare, out)
        elif talk.open and not self.closed:
            self.fall_back(talk, why, out)

    def fall_back(self, talk: Talk, why: str, out: list[Effect]) -> None:
        talk.path = "relayed"
        out.append(
            _warn(f"{why}; talking to {talk.partner} through the relay (relayed)", talk.partner)
        )
        out.append(Show(self.status()))
        self.resend(talk, out)

    def partner_left(self, talk: Talk, text: str, now: float, out: list[Effect]) -> None:
        """The partner went offline: what it did not confirm goes to the mailbox."""
        if talk.link is not None:
            out.append(_info(f"{text}; your direct link to {talk.partner} goes on", talk.partner))
            return
        talk.offline = True
        held = self.mail_unconfirmed(talk, out)
        if held:
            out.append(_warn(f"{text}; {_n(held, 'message')} to {talk.partner} wait", talk.partner))
        else:
            out.append(
                _warn(
                    f"{text}; what you type is kept for {talk.partner} on the server", talk.partner
                )
            )
        out.append(Show(self.status()))

    def mail_unconfirmed(self, talk: Talk, out: list[Effect]) -> int:
        """What the partner did not confirm goes to the mailbox, each under the
        id it had on the link (the partner shows it once). What cannot be
        sealed for the mailbox (a changed key not yet trusted: the mailroom
        said why) stays unconfirmed in the conversation: reported at ::quit,
        mailed after ::trust. Returns how many stay."""
        for chat in talk.conv.to_resend():
            if not self.mail.send(talk.partner, chat.text, chat.sent_at, out, chat_id(chat)):
                break
            del talk.conv.unacked[chat.seq]
        return len(talk.conv.unacked)

    # ------------------------------------------------------- retransmits
    def poll_timers(
        self, now: float, out: list[Effect], report: Callable[[str, Exception, str], None]
    ) -> None:
        """Every live conversation's re-send, gap and key-exchange timers."""
        if self.kicked:
            return  # nothing is sent from here any more: no re-sends, no warnings
        for talk in self.talks.values():
            if not talk.framed or talk.watch is None:
                continue
            try:
                self._poll_one(talk, now, out)
            except Exception as exc:
                talk.watch = None
                report(
                    f"the retransmission timers of {talk.partner}",
                    exc,
                    "nothing is re-sent there until it reopens",
                )

    def _poll_one(self, talk: Talk, now: float, out: list[Effect]) -> None:
        assert talk.watch is not None
        sec, relay, handshake = talk.relay_sec, None, None
        if talk.link is None and self.server == "online" and not self.closed:
            # A new session: everything was re-sent when it was agreed. No
            # session: a re-send starts the key exchange (send_frame).
            relay = sec.session.sid if sec.session is not None else ""
            if sec.hs is not None:
                handshake = (sec.hs.sid, sec.hs.initiator)
        partner = talk.partner
        for action in talk.watch.poll(talk.conv, now, relay=relay, handshake=handshake):
            match action:
                case RetryKeyExchange(forget):
                    security.restart(self.keys, partner, sec, out, forget)
                case Resend(chats):
                    for chat in chats:
                        self.send_frame(talk, chat, out)
                case Late():
                    out.append(
                        _warn(
                            f"Not delivered yet: {_n(action.count, 'message')} to {partner} "
                            f"not confirmed after {action.waited:.0f} s; still trying "
                            f"(kept until {partner} confirms)",
                            partner,
                        )
                    )
                case CaughtUp(count):
                    out.append(
                        _info(
                            f"Delivered after all: {partner} confirmed {_n(count, 'late message')}",
                            partner,
                        )
                    )
                case Gap(missing, waiting, waited):
                    them = "it" if missing == 1 else "them"
                    wait = "waits" if waiting == 1 else "wait"
                    out.append(
                        _warn(
                            f"{_n(missing, 'message')} from {partner} did not arrive "
                            f"(for {waited:.0f} s); the {_n(waiting, 'message')} after {them} "
                            f"{wait} to be shown in order. {partner}'s side sends {them} again",
                            partner,
                        )
                    )
                case GapFilled():
                    out.append(
                        _info(
                            f"The missing messages from {partner} arrived; all shown, in order",
                            partner,
                        )
                    )


def chat_id(chat: Chat) -> str:
    """The id of a chat message: the same on the link, in the mailbox and in
    both histories, so whatever path delivered it, it is shown once. A hash of
    its (sealed, never seen in clear) epoch and number: the mailbox cannot
    tell which messages one sender sent in one run."""
    return blake2b(f"{chat.epoch}-{chat.seq}".encode(), digest_size=12).hexdigest()


def _ignore(*_args: object) -> None:
    pass


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _info(text: str, about: str | None = None) -> Effect:
    return Show(System(text, "info", about))


def _warn(text: str, about: str | None = None) -> Effect:
    return Show(System(text, "warning", about))
