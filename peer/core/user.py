"""What the user asks for: send, switch, end, trust, whois, history, users,
passwd, quit. (``connect`` is :mod:`peer.core.connecting`'s.)"""

from __future__ import annotations

from chathack.errors import RemoteProtocolError
from chathack.link import Bye
from chathack.protocol import Command, Msg, Password
from peer.core import security
from peer.core.connecting import Connector, unencrypted
from peer.core.conversations import Conversations, chat_id
from peer.core.directory import Directory
from peer.core.mailroom import Mailroom
from peer.core.records import (
    Answered,
    ChangePassword,
    Connect,
    Effect,
    End,
    ListUsers,
    Quit,
    Send,
    Show,
    ShowHistory,
    Switch,
    ToServer,
    Trust,
    UserCommand,
    Whois,
)
from peer.core.requests import PASSWD_TIMEOUT, PendingPasswd, Requests
from peer.events import Outgoing, System

#: What a session replaced by a login elsewhere says to every attempt to send.
REPLACED = (
    "This session was replaced by a login elsewhere: nothing can be sent from here. "
    "Restart chathack-peer to take it back"
)
NOT_IN_CONVERSATION = (
    'You are not in a conversation: type "connect: NAME" (::users shows who is online)'
)


class UserCommands:
    def __init__(
        self,
        convs: Conversations,
        directory: Directory,
        mail: Mailroom,
        requests: Requests,
        connector: Connector,
    ) -> None:
        self.convs = convs
        self.directory = directory
        self.mail = mail
        self.requests = requests
        self.connector = connector

    def handle(self, command: UserCommand, now: float, wall: float, out: list[Effect]) -> None:
        convs = self.convs
        match command:
            case Quit():
                self._quit(out)
            case _ if convs.closed:
                # After ::quit reported what leaves undelivered, nothing new
                # may be sent or recorded as sent.
                out.append(_error("chathack is closing: nothing more is done"))
                if isinstance(command, Connect):
                    out.append(Answered("connect", command.name, False))
            case Connect(name) | Send(name, _) if name and name.lower() == convs.me.lower():
                out.append(_error("You cannot talk to yourself"))
                if isinstance(command, Connect):
                    out.append(Answered("connect", name, False))
            case Connect(name) | Send(name, _) if convs.kicked:
                out.append(_error(REPLACED))
                if isinstance(command, Connect) and name:
                    out.append(Answered("connect", name, False))
            case Connect(name, activate):
                self.connector.start(name, now, out, activate)
            case Send(name, text):
                self._send(name, text, wall, out)
            case Switch(name):
                talk = convs.open_talk(name)
                if talk is None:
                    out.append(_error(no_conversation(name)))
                else:
                    self.connector.switched()
                    convs.make_active(talk, out)
            case End(name):
                self._end(name, out)
            case Trust(name):
                self._trust(name, out)
            case Whois(name):
                known = self.directory.listed(name)
                lines = security.describe(convs.keys, name, known)
                about = name if known else None  # a name nobody has opens no window
                out.extend(Show(System(line, about=about)) for line in lines)
            case ShowHistory(name, count):
                if self.directory.unknown(name) and not convs.mail.history.last(name, 1):
                    out.append(_error(f"There is no user named {name}: ::users lists who is there"))
                else:
                    convs.show_history(name, count, out)
            case ListUsers():
                if convs.server != "online":
                    out.append(_error("Not connected to the rendezvous"))
                else:
                    out.append(ToServer(Command("users")))
            case ChangePassword(old, new):
                self._passwd(old, new, now, out)

    def _send(self, name: str | None, text: str, wall: float, out: list[Effect]) -> None:
        convs = self.convs
        talk = convs.open_talk(name) if name else convs.open_talk(convs.active or "")
        if talk is None:
            if name is None:
                out.append(_error(NOT_IN_CONVERSATION))
            else:
                out.append(_error(no_conversation(name), name))
            return
        convs.encrypt_if_peer(talk, out)
        if talk.plain and not talk.plain_ok:
            out.append(_error(unencrypted(talk.partner), talk.partner))
            return
        msg_id: str | None = None
        state = "sent"
        if talk.plain:
            out.append(ToServer(Msg(talk.partner, text)))
        elif talk.offline:
            msg_id = self.mail.send(talk.partner, text, wall, out)
            if msg_id is None:
                return
            state = "queued"
        else:
            try:
                chat = talk.conv.send_text(text, wall)
            except RemoteProtocolError as e:
                out.append(_error(str(e)))
                return
            msg_id = chat_id(chat)
            self.mail.history.add_outgoing(talk.partner, text, wall, msg_id)
            convs.send_frame(talk, chat, out)
            if talk.link is None and convs.server != "online":
                state = "waiting"  # no path now: it goes when one opens
        out.append(Show(Outgoing(talk.partner, text, wall, msg_id, state)))

    def _end(self, name: str | None, out: list[Effect]) -> None:
        convs = self.convs
        cancelled = name is not None and self.connector.cancel(name, out)
        talk = convs.open_talk(name or convs.active or "")
        if talk is None:
            if not cancelled:
                out.append(_error("You are not in a conversation; there is nothing to end"))
            return
        if not talk.plain:
            convs.send_frame(talk, Bye("ended"), out)
        out.append(ToServer(Command("end", talk.partner)))
        convs.close_talk(talk, f"Conversation with {talk.partner} ended", out)

    def _trust(self, name: str, out: list[Effect]) -> None:
        """Accept ``name``'s new identity key (after checking the safety number)."""
        keys = self.convs.keys
        key = keys.blocked.pop(name.lower(), None)
        if key is None:
            out.append(_error(f"No changed key is waiting for {name}", name))
            return
        keys.pins.pin(name, key)
        out.append(Show(System(f"{name}'s new key is trusted and pinned", about=name)))
        self.mail.retry(name, out)  # mail that waited for a trusted key
        talk = self.convs.open_talk(name)
        if talk is not None and talk.offline:
            self.convs.mail_unconfirmed(talk, out)
        elif talk is not None:
            talk.relay_sec.reset()
            security.start(keys, talk.partner, talk.relay_sec, None, out)
            cands = self.directory.candidates.get(name.lower())
            if cands is not None:
                self.directory.upgrade(cands, out)

    # ------------------------------------------------------------- passwd
    def _passwd(self, old: str, new: str, now: float, out: list[Effect]) -> None:
        if self.requests.passwd is not None:
            out.append(_error("A password change is under way already"))
            return
        if self.convs.server != "online":
            self.passwd_over(False, "not connected to the rendezvous", out)
            return
        self.requests.passwd = PendingPasswd(old, new, now + PASSWD_TIMEOUT)
        out.append(ToServer(Command("passwd")))

    def passwd_prompted(self, out: list[Effect]) -> None:
        """The server asks for the current password, then the new one."""
        pending = self.requests.passwd
        assert pending is not None
        secrets = (pending.old, pending.new)
        if pending.asked < len(secrets):
            out.append(ToServer(Password(secrets[pending.asked])))
            pending.asked += 1

    def passwd_over(self, changed: bool, reason: str, out: list[Effect]) -> None:
        pending, self.requests.passwd = self.requests.passwd, None
        if changed and pending is not None:
            out.append(Show(System("Password changed")))
            out.append(Answered("passwd", "", True, pending.new))
        else:
            out.append(_error(f"The password was not changed: {reason}"))
            out.append(Answered("passwd", "", False))

    # --------------------------------------------------------------- quit
    def _quit(self, out: list[Effect]) -> None:
        """Report what leaves undelivered, say goodbye to every partner and to
        the rendezvous. (The driver flushes and stops.)"""
        convs = self.convs
        if convs.closed:
            return
        self._report_unsent(out)
        for talk in convs.talks.values():
            if talk.open and not talk.plain:
                convs.send_frame(talk, Bye("quit"), out)
        out.append(ToServer(Command("quit")))
        self.mail.flush(out)
        convs.closed = True

    def _report_unsent(self, out: list[Effect]) -> None:
        """Say what leaves with us undelivered: never a silent loss."""
        unsent = {
            t.partner: len(t.conv.unacked)
            for t in self.convs.talks.values()
            if not t.plain and t.conv.unacked
        }
        for p in self.mail.history.pending_mail():
            unsent[p.partner] = unsent.get(p.partner, 0) + 1
        if unsent:
            where = ", ".join(f"{n} to {partner}" for partner, n in unsent.items())
            out.append(
                Show(
                    System(
                        f"Not delivered: {where} (not confirmed by the partner or the server; "
                        "::history shows them as sent)",
                        "warning",
                    )
                )
            )


def no_conversation(name: str) -> str:
    return f"No open conversation with {name}: connect: {name} opens one"


def _error(text: str, about: str | None = None) -> Effect:
    return Show(System(text, "error", about))
