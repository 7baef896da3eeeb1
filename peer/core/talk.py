"""One conversation with one partner, and one direct link, as the core sees them."""

from __future__ import annotations

from dataclasses import dataclass, field

from chathack.delivery import Conversation
from chathack.retransmit import Retransmit, Timing
from peer.core.records import LinkInfo
from peer.core.security import PathSec
from peer.events import PathName


@dataclass(eq=False)
class Talk:
    """The conversation with ``partner`` and the path it currently uses."""

    partner: str
    conv: Conversation
    timing: Timing
    path: PathName = "relayed"
    link: int | None = None  # the id of the direct link carrying it, if one
    plain: bool = False  # the partner is a plain text client (e.g. nc): no frames
    plain_ok: bool = False  # the user said to talk to it unencrypted anyway
    #: The rendezvous, asked in this session, knew no key for the partner: only
    #: then can the user's ``connect:`` consent to plain text (a plain line
    #: claiming a name proves nothing; the name may be a peer's not yet known).
    plain_checked: bool = False
    open: bool = True
    offline: bool = False  # the partner is offline: messages go to the mailbox
    links: set[int] = field(default_factory=set)  # verified links, the current one and spares
    relay_sec: PathSec = field(default_factory=PathSec)  # key exchange on the relay path
    #: Re-send and gap timers; None once they met a bug (reported once, then
    #: left alone until the conversation reopens).
    watch: Retransmit | None = None

    def __post_init__(self) -> None:
        self.watch = Retransmit(self.timing)

    def make_plain(self) -> None:
        """The partner is a plain-text client: no frames, and marked as such."""
        self.plain, self.path = True, "unencrypted"

    def make_encrypted(self) -> None:
        """The partner turned out to be a chathack peer: frames only, from now on."""
        self.plain = self.plain_ok = self.plain_checked = False
        if self.path == "unencrypted":
            self.path = "relayed"

    @property
    def framed(self) -> bool:
        """Whether its messages travel as frames on a path (not mail, not plain text)."""
        return self.open and not self.plain and not self.offline


@dataclass(eq=False)
class LinkState:
    """A direct link: who is there, and its own key exchange."""

    info: LinkInfo
    since: float = 0.0  # when it came up (the core's clock)
    sec: PathSec = field(default_factory=PathSec)

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def partner(self) -> str:
        return self.info.partner

    def initiator(self, me: str) -> bool:
        """Who starts the link's key exchange: the side that dialled (for a
        simultaneous open, the smaller name)."""
        if self.info.dialer:
            return self.info.dialer.lower() == me.lower()
        return me.lower() < self.info.partner.lower()
