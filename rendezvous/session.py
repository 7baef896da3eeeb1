"""One client connection as the domain sees it (sans-IO): the hub, the
mailbox, the prekey desk and the commands all act on :class:`Session`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from chathack.protocol import format_server_line
from chathack.server_events import ServerFlagEvent, format_server_event


class Outbox(Protocol):
    """Where the hub puts a session's outgoing bytes (must never block)."""

    def send(self, data: bytes, lines: int = 1) -> None: ...
    def close(self) -> None: ...


@dataclass(eq=False, slots=True)
class Session:
    """One client connection, as the domain sees it."""

    outbox: Outbox
    ip: str
    remote_port: int | None = None  # the client's port as we see it (after any NAT)
    name: str | None = None
    port: int | None = None  # where it accepts direct links
    lan: tuple[str, ...] | None = None  # its own addresses; None: not a chathack peer
    pubkey: str | None = None  # its identity key, as registered
    passwd_step: str | None = None  # in a ::passwd dialogue: "old", then "new"
    current: str | None = None  # partner that plain text goes to
    partners: set[str] = field(default_factory=set)  # lower-case names
    #: Users this one asked to talk to (``connect:``), lower-case: only they
    #: learn where it is (its addresses) and may punch a hole toward it.
    invited: set[str] = field(default_factory=set)
    #: The fencing token of this login when several instances share a store
    #: (rendezvous/roster.py); 0 on a single instance.
    epoch: int = 0
    closed: bool = False
    #: ``NAME: `` as bytes, made once at login: what a relayed line starts with.
    relay_prefix: bytes = b""

    def say(self, flag: str, text: str) -> None:
        self.outbox.send(format_server_line(flag, text))

    def tell(self, event: ServerFlagEvent) -> None:
        self.outbox.send(format_server_event(event))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.close()
