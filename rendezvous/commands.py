"""The rendezvous's ``::commands``: a registry of small records, so that
``::help`` is generated from the same table the dispatcher reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chathack.errors import RemoteProtocolError
from chathack.protocol import UserState
from chathack.server_events import UsersInfo
from rendezvous.mailbox import MailService
from rendezvous.session import Session


class Hub(Protocol):
    """What the commands ask of the hub (rendezvous/hub.py is one)."""

    mailbox: MailService

    def users(self) -> tuple[list[UserState], int]: ...
    def end(self, session: Session, name: str | None) -> None: ...
    def detach(self, session: Session, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    help: str
    run: Callable[[Hub, Session, str, float], None]


def _users(hub: Hub, s: Session, arg: str, now: float) -> None:
    users, more = hub.users()
    s.tell(UsersInfo(tuple(users), more))


def _help(hub: Hub, s: Session, arg: str, now: float) -> None:
    for line in help_lines():
        s.say("HELP", line)


def _end(hub: Hub, s: Session, arg: str, now: float) -> None:
    hub.end(s, arg or None)


def _ping(hub: Hub, s: Session, arg: str, now: float) -> None:
    s.say("PONG", arg or "-")


def _mailbox(hub: Hub, s: Session, arg: str, now: float) -> None:
    hub.mailbox.tell_summary(s)


def _passwd(hub: Hub, s: Session, arg: str, now: float) -> None:
    # The I/O layer answers the two password: lines (hashing is slow, off the loop).
    s.passwd_step = "old"
    s.say("PASSWORD", f"Current password for {s.name}")


def _quit(hub: Hub, s: Session, arg: str, now: float) -> None:
    s.say("BYE", f"Goodbye {s.name}")
    hub.detach(s, now)
    s.close()


COMMANDS: dict[str, CommandSpec] = {
    c.name: c
    for c in (
        CommandSpec("users", "::users", "list users, online first", _users),
        CommandSpec("end", "::end [NAME]", "end the conversation (with NAME)", _end),
        CommandSpec(
            "mailbox", "::mailbox", "messages waiting for you, and yours for others", _mailbox
        ),
        CommandSpec("quit", "::quit", "log out and close the connection", _quit),
        CommandSpec(
            "ping", "::ping [TOKEN]", "answer Servidor[PONG]: TOKEN (keepalive, RTT)", _ping
        ),
        CommandSpec(
            "passwd", "::passwd", "change your password (asks the old, then the new)", _passwd
        ),
        CommandSpec("help", "::help", "this list", _help),
    )
}

#: Lines that are not ``::commands`` but belong in the help all the same.
KEYWORD_HELP = (
    ("connect: NAME", "start a conversation with NAME (NAME's address if NAME called you)"),
    ("msg: NAME TEXT", "send one line to NAME through the server"),
    ("TEXT", "a line with no keyword goes to your current conversation"),
    ("port: N", "tell the server the TCP port you accept direct links on"),
    ("key: BASE64", "register your identity key (chathack peers do it at login)"),
    ("resume: NAME TOKEN", "log in again with the token of your last login (no password)"),
    ("lan: HOST:PORT ...", "your own addresses, for peers on your network (a chathack peer)"),
    ("punch: NAME", "hole punching: both of you get the other's public endpoint now"),
    ("mail: NAME ID TEXT", "keep TEXT for NAME until NAME logs in (ID: yours, unique)"),
    ("ack: NAME ID ...", "these MAIL lines arrived: the server forgets them"),
    ("read: NAME ID ...", "these MAIL lines were read: their senders are told"),
    ("receipt: FLAG NAME ID ...", "these DELIVERED/READ/EXPIRED lines arrived"),
    ("prekeys: SPK [OPK ...]", "publish your prekeys, for mail with forward secrecy"),
    ("prekey: NAME N", "NAME's prekeys, to seal N messages for NAME's mailbox"),
)


def help_lines() -> list[str]:
    rows = [(c.usage, c.help) for c in COMMANDS.values()] + list(KEYWORD_HELP)
    width = max(len(u) for u, _ in rows)
    return [f"{u.ljust(width)}  {h}" for u, h in rows]


def run_command(hub: Hub, session: Session, name: str, arg: str, now: float) -> None:
    spec = COMMANDS.get(name)
    if spec is None:
        raise RemoteProtocolError(f"Unknown command ::{name}: ::help lists the commands")
    spec.run(hub, session, arg, now)
