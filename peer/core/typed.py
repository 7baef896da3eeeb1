"""What a typed line means: a ``::command``, ``connect: NAME``, ``msg: NAME
TEXT``, or chat text for the active conversation. Shared by every UI.

:func:`parse_typed` only reads the line; the core decides what it does (a
line of chat goes to the conversation that is active when it is handled,
which only the user's own ``connect``/``::switch`` ever changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.protocol import check_name
from peer.commands import PEER_COMMANDS
from peer.core.records import (
    AcceptFile,
    CancelTransfer,
    Connect,
    End,
    ListTransfers,
    ListUsers,
    Quit,
    RejectFile,
    Send,
    ShowHistory,
    Switch,
    Trust,
    UserCommand,
    Whois,
)

#: ``::history NAME`` without a count shows this many.
HISTORY_DEFAULT = 20


@dataclass(frozen=True, slots=True)
class Problem:
    """The line cannot be acted on; ``text`` says how to write it."""

    text: str


@dataclass(frozen=True, slots=True)
class Local:
    """A command the program answers itself: ``::help``, ``::netcheck``."""

    word: str


@dataclass(frozen=True, slots=True)
class OfferFile:
    """``::send PATH``: the driver reads the file (size, SHA-256) and then
    hands the core a :class:`~peer.core.records.SendFile`."""

    path: str


Typed = UserCommand | Problem | Local | OfferFile | None


def _named(word: str, arg: str, make: type) -> Typed:
    return make(arg) if arg else Problem(f"Write {word} NAME")


def _history(arg: str) -> Typed:
    name, _, count = arg.partition(" ")
    if not name or (count and not count.strip().isdigit()):
        return Problem("Write ::history NAME [N]")
    return ShowHistory(name, int(count) if count.strip() else HISTORY_DEFAULT)


def _connect(arg: str) -> Typed:
    try:
        return Connect(check_name(arg))
    except RemoteProtocolError as e:
        return Problem(str(e))


def _command(word: str, arg: str) -> Typed:
    match word:
        case "::users":
            return ListUsers()
        case "::end":
            return End(arg or None)
        case "::switch" | "::whois" | "::trust":
            make = {"::switch": Switch, "::whois": Whois, "::trust": Trust}[word]
            return _named(word, arg, make)
        case "::history":
            return _history(arg)
        case "::passwd":
            # The UIs ask for the passwords themselves (no echo in a terminal);
            # a line reaching here came from elsewhere.
            return Problem("::passwd asks for the passwords itself: type it alone on a line")
        case "::help" | "::netcheck" | "::reconnect":
            return Local(word)
        case "::quit":
            return Quit()
        case "::send":
            return OfferFile(arg) if arg else Problem("Write ::send PATH")
        case "::accept":
            return AcceptFile(arg or None)
        case "::reject":
            return RejectFile()
        case "::transfers":
            return ListTransfers()
        case "::cancel":
            if not arg.isascii() or not arg.isdigit():
                return Problem("Write ::cancel N (::transfers lists them)")
            return CancelTransfer(int(arg))
    return Problem(f"Unknown command {word}: ::help lists the commands")


def parse_typed(line: str) -> Typed:
    """One typed line as a record; None for a blank line."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("::"):
        word, _, arg = line.partition(" ")
        return _command(word.lower(), arg.strip())
    word, sep, rest = line.partition(":")
    if sep and word.lower() == "connect":
        return _connect(rest.strip())
    if sep and word.lower() == "msg":
        to, _, text = rest.strip().partition(" ")
        if not to or not text.strip():
            return Problem('Write "msg: NAME TEXT"')
        return Send(to, text.strip())
    return Send(None, line)


#: Every word of :data:`peer.commands.PEER_COMMANDS` has a meaning above.
HANDLED = {"::users", "::end", "::switch", "::whois", "::trust", "::history", "::passwd"}
HANDLED |= {"::help", "::netcheck", "::reconnect", "::quit", "connect:"}
HANDLED |= {"::send", "::accept", "::reject", "::transfers", "::cancel"}
assert {c.name for c in PEER_COMMANDS} == HANDLED, "every command needs a meaning"
