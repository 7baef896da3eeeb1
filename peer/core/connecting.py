"""``connect: NAME``, from the question to the rendezvous to the open,
active conversation.

1. ``asking``: ``connect: NAME`` is out; the answer is the
   ``Servidor[PEER]`` or ``Servidor[FAILED]: connect NAME`` line about that
   name (:mod:`peer.core.requests`), or nothing within the timeout.
2. ``recheck``: the answer looked like a plain-text client's; a peer that
   logged in a moment ago may not have announced its key yet, so ask once
   more before talking to it in plain text.
3. ``grace``: a chathack peer; look for a direct link and give it
   :data:`~peer.core.requests.DIRECT_GRACE` to come up (on a LAN it does), else
   open on the relay (and go on looking in the background).

The conversation becomes the active one only here, at the end of the user's
own ``connect`` (or in :meth:`Connector.switch`).
"""

from __future__ import annotations

from chathack.link import Hello
from chathack.protocol import Connect as AskFor
from chathack.protocol import PeerAddress
from peer.core import security
from peer.core.conversations import Conversations
from peer.core.directory import Directory
from peer.core.records import Answered, Effect, Show, ToServer
from peer.core.requests import DIRECT_GRACE, PLAIN_RECHECK, PendingConnect, Requests
from peer.core.talk import Talk
from peer.events import System

NOT_ONLINE = "Not connected to the rendezvous: cannot look anybody up"


def keyless(name: str) -> str:
    return (
        f"The rendezvous gave no key for {name}, whom you know as a chathack peer: "
        f"refused. A rendezvous that withholds keys may be trying to make you talk "
        f"in clear; nothing was sent to {name}"
    )


def unencrypted(name: str) -> str:
    return (
        f"{name} is not a chathack peer (a plain text client): what you send {name} "
        f"travels unencrypted and the rendezvous can read it. Type connect: {name} "
        f"to talk to {name} unencrypted anyway"
    )


class Connector:
    def __init__(self, convs: Conversations, directory: Directory, requests: Requests) -> None:
        self.convs = convs
        self.directory = directory
        self.requests = requests

    def start(self, name: str, now: float, out: list[Effect], activate: bool = True) -> None:
        talk = self.convs.open_talk(name)
        if talk is not None and talk.plain and not talk.plain_ok and talk.plain_checked:
            self._consent(talk, out)
        if talk is not None and not (talk.plain and not talk.plain_ok):
            if activate:
                self.convs.make_active(talk, out)
            out.append(Answered("connect", name, True))
            return
        # No conversation yet, or one a plain line opened that the rendezvous
        # has not been asked about: its answer (a key, or none) decides.
        waiting = self.requests.connects.get(name.lower())
        if waiting is not None:
            waiting.activate = waiting.activate or activate
            return  # asked already: that answer ends both
        if self.convs.server != "online":
            out.append(Show(System(NOT_ONLINE, "error", name)))
            out.append(Answered("connect", name, False))
            return
        self.requests.connect(name, now, activate).consent = talk is not None
        self.convs.connecting.add(name.lower())
        out.append(ToServer(AskFor(name)))

    def _consent(self, talk: Talk, out: list[Effect]) -> None:
        talk.plain_ok = True  # the user's word, after being told
        why = f"Talking to {talk.partner} UNENCRYPTED: the rendezvous can read it"
        out.append(Show(System(why, "warning", talk.partner)))

    def switched(self) -> None:
        """The user chose a conversation: no connect still on its way takes
        that choice away when it ends."""
        for pending in self.requests.connects.values():
            pending.activate = False

    def cancel(self, name: str, out: list[Effect]) -> bool:
        """``::end NAME`` while its connect is on its way: it ends there."""
        pending = self.requests.connects.get(name.lower())
        if pending is None:
            return False
        out.append(Show(System(f"connect: {pending.name} cancelled", about=pending.name)))
        self.over(pending, False, out)
        return True

    def answered(
        self, pending: PendingConnect, addr: PeerAddress, now: float, out: list[Effect]
    ) -> None:
        """The rendezvous's answer about ``pending.name``."""
        directory = self.directory
        suspect = directory.looks_plain(addr) or directory.keyless_peer(addr)
        if suspect and not pending.rechecked:
            pending.stage, pending.deadline = "recheck", now + PLAIN_RECHECK
            return
        if directory.keyless_peer(addr):
            out.append(Show(System(keyless(addr.name), "error", addr.name)))
            self.over(pending, False, out)
            return
        cands = directory.learn(addr)
        pending.name = addr.name
        if dict(addr.extra).get("state") == "offline":
            self.convs.talk_for(addr.name, out).offline = True
            out.append(
                Show(
                    System(
                        f"{addr.name} is offline: what you type is kept for "
                        f"{addr.name} on the server and delivered at the next login",
                        about=addr.name,
                    )
                )
            )
            self.over(pending, True, out)
        elif directory.looks_plain(addr):
            talk = self.convs.talk_for(addr.name, out, "unencrypted")
            talk.make_plain()
            talk.plain_checked = True
            if pending.consent:
                self._consent(talk, out)  # the user's connect: to a talk already marked plain
                self.over(pending, True, out)
                return
            out.append(Show(System(unencrypted(addr.name), "warning", addr.name)))
            self.over(pending, False, out)  # not active until the user says so
        else:
            pending.stage, pending.deadline = "grace", now + DIRECT_GRACE
            if not directory.upgrade(cands, out):
                # Nothing to dial (addresses withheld, or relay-only): open on
                # the relay now; the partner dials us once our key checked out.
                self.over(pending, True, out)

    def failed(self, name: str, reason: str, out: list[Effect]) -> bool:
        """The rendezvous says ``connect: name`` cannot be; False: none waits."""
        pending = self.requests.connects.get(name.lower())
        if pending is None:
            return False
        out.append(Show(System(reason, "error", name)))
        self.over(pending, False, out)
        return True

    def tick(self, now: float, out: list[Effect]) -> None:
        for pending in self.requests.due(now):
            match pending.stage:
                case "asking":
                    why = "The rendezvous did not answer in time"
                    out.append(Show(System(why, "error", pending.name)))
                    self.over(pending, False, out)
                case "recheck":
                    again = self.requests.connect(pending.name, now, pending.activate)
                    again.rechecked, again.consent = True, pending.consent
                    out.append(ToServer(AskFor(pending.name)))
                case "grace":
                    self.over(pending, True, out)

    def settle(self, out: list[Effect]) -> None:
        """A connect in its grace ends as soon as a direct link carries the talk."""
        for pending in list(self.requests.connects.values()):
            if pending.stage == "grace" and self.convs.linked(pending.name):
                self.over(pending, True, out)

    def over(self, pending: PendingConnect, ok: bool, out: list[Effect]) -> None:
        key = pending.name.lower()
        if self.requests.connects.get(key) is not pending:
            return
        del self.requests.connects[key]
        # Whatever happens below, whoever awaits this connect gets its answer.
        opened = False
        try:
            if ok:
                self._open(pending, out)
                opened = True
        finally:
            self.convs.connecting.discard(key)
            out.append(Answered("connect", pending.name, opened))

    def _open(self, pending: PendingConnect, out: list[Effect]) -> None:
        convs = self.convs
        talk = convs.talk_for(pending.name, out)
        if pending.stage == "grace" and talk.link is None:
            hello = Hello(convs.me, talk.partner, convs.epoch)
            out.append(security.raw(talk.partner, hello, None))
            security.start(convs.keys, talk.partner, talk.relay_sec, None, out)
        if pending.activate:
            convs.make_active(talk, out)
        else:
            who = talk.partner
            why = f"Conversation with {who} open ({talk.path}); ::switch {who} to talk there"
            out.append(Show(System(why, about=who)))
