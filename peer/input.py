"""What a typed line means: a ``::command``, ``connect: NAME``, ``msg: NAME
TEXT``, or chat text for the active conversation. Shared by every UI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from chathack.errors import RemoteProtocolError
from chathack.protocol import check_name
from peer.commands import PEER_COMMANDS, help_lines
from peer.events import System

if TYPE_CHECKING:
    from peer.node import PeerNode

Handler = Callable[["PeerNode", str], Awaitable[bool]]


async def _users(node: PeerNode, arg: str) -> bool:
    node.request_users()
    return True


async def _end(node: PeerNode, arg: str) -> bool:
    node.end(arg or None)
    return True


async def _switch(node: PeerNode, arg: str) -> bool:
    if not arg:
        node.emit(System("Write ::switch NAME", "error"))
    else:
        node.switch(arg)
    return True


async def _help(node: PeerNode, arg: str) -> bool:
    for line in help_lines():
        node.emit(System(line))
    return True


async def _history(node: PeerNode, arg: str) -> bool:
    name, _, count = arg.partition(" ")
    if not name or (count and not count.strip().isdigit()):
        node.emit(System("Write ::history NAME [N]", "error"))
    else:
        node.show_history(name, int(count) if count.strip() else 20)
    return True


async def _whois(node: PeerNode, arg: str) -> bool:
    if not arg:
        node.emit(System("Write ::whois NAME", "error"))
    else:
        node.whois(arg)
    return True


async def _trust(node: PeerNode, arg: str) -> bool:
    if not arg:
        node.emit(System("Write ::trust NAME", "error"))
    else:
        node.trust(arg)
    return True


async def _passwd(node: PeerNode, arg: str) -> bool:
    # The UIs ask for the passwords themselves (no echo in a terminal) and call
    # node.change_password; a line reaching here came from elsewhere.
    node.emit(System("::passwd asks for the passwords itself: type it alone on a line", "error"))
    return True


async def _netcheck(node: PeerNode, arg: str) -> bool:
    await node.netcheck()
    return True


async def _quit(node: PeerNode, arg: str) -> bool:
    await node.quit()
    return False


async def _connect(node: PeerNode, arg: str) -> bool:
    try:
        name = check_name(arg)
    except RemoteProtocolError as e:
        node.emit(System(str(e), "error"))
        return True
    await node.connect(name)
    return True


#: One handler per entry of :data:`peer.commands.PEER_COMMANDS`.
HANDLERS: dict[str, Handler] = {
    "::users": _users,
    "::end": _end,
    "::switch": _switch,
    "::help": _help,
    "::netcheck": _netcheck,
    "::passwd": _passwd,
    "::whois": _whois,
    "::history": _history,
    "::trust": _trust,
    "::quit": _quit,
    "connect:": _connect,
}
assert set(HANDLERS) == {c.name for c in PEER_COMMANDS}, "every command needs a handler"


async def dispatch(node: PeerNode, line: str) -> bool:
    """Act on one typed line; False once the user has quit."""
    line = line.strip()
    if not line:
        return True
    if line.startswith("::"):
        word, _, arg = line.partition(" ")
        handler = HANDLERS.get(word.lower())
        if handler is None:
            node.emit(System(f"Unknown command {word}: ::help lists the commands", "error"))
            return True
        return await handler(node, arg.strip())
    word, sep, rest = line.partition(":")
    if sep and word.lower() == "connect":
        return await _connect(node, rest.strip())
    if sep and word.lower() == "msg":
        to, _, text = rest.strip().partition(" ")
        if not to or not text.strip():
            node.emit(System('Write "msg: NAME TEXT"', "error"))
            return True
        await node.send(to, text.strip())
        return True
    if node.active is None:
        node.emit(
            System(
                'You are not in a conversation: type "connect: NAME" (::users shows who is online)',
                "error",
            )
        )
        return True
    await node.send(node.active, line)
    return True
