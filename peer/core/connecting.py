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
from peer.events import ServerNotice, System

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
        f"again to talk to {name} unencrypted anyway"
    )


class Connector:
    def __init__(self, convs: Conversations, directory: Directory, requests: Requests) -> None:
        self.convs = convs
        self.directory = directory
        self.requests = requests

    def start(self, name: str, now: float, out: list[Effect]) -> None:
        talk = self.convs.open_talk(name)
        if talk is not None:
            if talk.plain and not talk.plain_ok:
                talk.plain_ok = True  # the user's word, after being told
                why = f"Talking to {talk.partner} UNENCRYPTED: the rendezvous can read it"
                out.append(Show(System(why, "warning", talk.partner)))
            self.convs.make_active(talk, out)
            out.append(Answered("connect", name, True))
            return
        if name.lower() in self.requests.connects:
            return  # asked already: that answer ends both
        if self.convs.server != "online":
            out.append(Show(ServerNotice("ERROR", NOT_ONLINE, name)))
            out.append(Answered("connect", name, False))
            return
        self.requests.connect(name, now)
        self.convs.connecting.add(name.lower())
        out.append(ToServer(AskFor(name)))

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
            self.convs.talk_for(addr.name, out, "unencrypted").make_plain()
            out.append(Show(System(unencrypted(addr.name), "warning", addr.name)))
            self.over(pending, False, out)  # not active until the user says so
        else:
            directory.upgrade(cands, out)
            pending.stage, pending.deadline = "grace", now + DIRECT_GRACE

    def failed(self, name: str, reason: str, out: list[Effect]) -> bool:
        """The rendezvous says ``connect: name`` cannot be; False: none waits."""
        pending = self.requests.connects.get(name.lower())
        if pending is None:
            return False
        out.append(Show(ServerNotice("ERROR", reason, name)))
        self.over(pending, False, out)
        return True

    def tick(self, now: float, out: list[Effect]) -> None:
        for pending in self.requests.due(now):
            match pending.stage:
                case "asking":
                    why = "The rendezvous did not answer in time"
                    out.append(Show(ServerNotice("ERROR", why, pending.name)))
                    self.over(pending, False, out)
                case "recheck":
                    self.requests.connect(pending.name, now).rechecked = True
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
        convs = self.convs
        if ok:
            talk = convs.talk_for(pending.name, out)
            if pending.stage == "grace" and talk.link is None:
                hello = Hello(convs.me, talk.partner, convs.epoch)
                out.append(security.raw(talk.partner, hello, None))
                security.start(convs.keys, talk.partner, talk.relay_sec, None, out)
            convs.make_active(talk, out)
        convs.connecting.discard(key)
        out.append(Answered("connect", pending.name, ok))
