"""The peer's own commands, as data: ``::help`` and tab completion read this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerCommand:
    name: str  # the word the user types: "::users", "connect:"
    usage: str
    help: str


PEER_COMMANDS: tuple[PeerCommand, ...] = (
    PeerCommand("connect:", "connect: NAME", "talk to NAME (directly when the network allows)"),
    PeerCommand("::users", "::users", 'who is registered and online ("Who do you want...?")'),
    PeerCommand("::switch", "::switch NAME", "make the open conversation with NAME the active one"),
    PeerCommand("::end", "::end", "end the active conversation (both sides are told)"),
    PeerCommand("::history", "::history NAME [N]", "the last N (20) messages with NAME"),
    PeerCommand("::whois", "::whois NAME", "NAME's key fingerprint and your safety number"),
    PeerCommand("::trust", "::trust NAME", "accept NAME's new identity key, after checking it"),
    PeerCommand("::send", "::send PATH", "offer a file to the active partner (encrypted)"),
    PeerCommand("::accept", "::accept [DIR]", "save the file offered to you (in DIR)"),
    PeerCommand("::reject", "::reject", "say no to the file offered to you"),
    PeerCommand("::transfers", "::transfers", "every file transfer and where it stands"),
    PeerCommand("::cancel", "::cancel N", "stop file transfer N"),
    PeerCommand("::passwd", "::passwd", "change your password (asked without echo)"),
    PeerCommand("::netcheck", "::netcheck", "your public endpoint, your NAT, paths, relay delay"),
    PeerCommand("::reconnect", "::reconnect", "the rendezvous is lost: try again now"),
    PeerCommand("::help", "::help", "this list"),
    PeerCommand("::quit", "::quit", "leave chathack (Ctrl-D does the same)"),
)

#: Words offered by tab completion at the start of a line.
COMPLETION_WORDS: tuple[str, ...] = tuple(
    c.name + (" " if c.name.endswith(":") else "") for c in PEER_COMMANDS
)


def help_lines() -> list[str]:
    width = max(len(c.usage) for c in PEER_COMMANDS)
    lines = [f"{c.usage.ljust(width)}  {c.help}" for c in PEER_COMMANDS]
    lines.append(f"{'TEXT'.ljust(width)}  any other line goes to the active conversation")
    return lines
