"""What goes into the peer's core and what comes out of it.

:class:`peer.core.state.PeerState` takes one *input* at a time (a line from
the rendezvous, something on a direct link, a command of the user, the clock)
and answers with a list of *effects* for its driver to carry out (send a line
to the rendezvous, a frame on a link, close a link, look for a direct path,
show something). Both are frozen records: the core holds no socket, task or
lock, so every decision it makes can be tested by feeding it records.

Links are named by the integer the driver gave them (:class:`LinkInfo.id`);
the core never holds the link itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from chathack.link import Frame
from chathack.protocol import ClientEvent, ServerEvent
from peer.core.candidates import Candidates
from peer.events import PathName, UIEvent

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """A direct link the driver set up: who is at the other end, how it was
    made, and who dialled it ("" for a simultaneous open)."""

    id: int
    partner: str
    path: PathName
    dialer: str

    def rank(self) -> tuple[int, str]:
        """Both ends order two links to each other alike; the higher is kept."""
        return (1 if self.path == "direct" else 0, self.dialer.lower())


@dataclass(frozen=True, slots=True)
class FromServer:
    """One line from the rendezvous (``Servidor[FLAG]: ...`` or ``origin: text``)."""

    line: ServerEvent


@dataclass(frozen=True, slots=True)
class ServerState:
    """The rendezvous session changed: ``online``, or a word for what is wrong."""

    state: str
    sentence: str = ""  # what to tell the user, if anything


@dataclass(frozen=True, slots=True)
class LinkUp:
    link: LinkInfo


@dataclass(frozen=True, slots=True)
class LinkFrame:
    link_id: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class LinkDown:
    link_id: int
    why: str = "The direct link broke"


@dataclass(frozen=True, slots=True)
class PunchFailed:
    """Hole punching toward ``name`` gave up (``why``)."""

    name: str
    why: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The session is up (``relogin``: again, after a loss, maybe from a new
    address); the driver has announced where this peer can be reached."""

    relogin: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: deadlines and re-send timers are due."""


@dataclass(frozen=True, slots=True)
class FlushMail:
    """Send the batched mailbox acknowledgements now (one line per batch)."""


# User commands: what the person asked for.


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a conversation with ``name``; ``activate``: and make it the one
    typed lines go to (False for ``msg: NAME TEXT``, which only sends there)."""

    name: str
    activate: bool = True


@dataclass(frozen=True, slots=True)
class Send:
    """``text`` for ``name`` (None: the active conversation)."""

    name: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Switch:
    name: str


@dataclass(frozen=True, slots=True)
class End:
    name: str | None


@dataclass(frozen=True, slots=True)
class Trust:
    name: str


@dataclass(frozen=True, slots=True)
class Whois:
    name: str


@dataclass(frozen=True, slots=True)
class ShowHistory:
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class ListUsers:
    pass


@dataclass(frozen=True, slots=True)
class ChangePassword:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class SendFile:
    """Offer the file at ``source`` to ``partner`` (None: the active
    conversation); the driver read its size and SHA-256 (hex)."""

    partner: str | None
    source: str
    name: str
    size: int
    sha256: str
    kind: str


@dataclass(frozen=True, slots=True)
class AcceptFile:
    """Take the file ``partner`` offered (None: in the active conversation),
    into ``folder`` (None: the downloads folder)."""

    folder: str | None = None
    partner: str | None = None


@dataclass(frozen=True, slots=True)
class RejectFile:
    """Say no to the file ``partner`` offered (None: in the active conversation)."""

    partner: str | None = None


@dataclass(frozen=True, slots=True)
class ListTransfers:
    pass


@dataclass(frozen=True, slots=True)
class CancelTransfer:
    number: int


FileCommand = SendFile | AcceptFile | RejectFile | ListTransfers | CancelTransfer
UserCommand = (
    Connect
    | Send
    | Switch
    | End
    | Trust
    | Whois
    | ShowHistory
    | ListUsers
    | ChangePassword
    | Quit
    | FileCommand
)
Input = (
    FromServer
    | ServerState
    | LoggedIn
    | LinkUp
    | LinkFrame
    | LinkDown
    | PunchFailed
    | Tick
    | FlushMail
) | UserCommand

# --------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class ToServer:
    event: ClientEvent


@dataclass(frozen=True, slots=True)
class ToLink:
    link_id: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class CloseLink:
    link_id: int


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Look for a direct path to ``candidates.name`` (replacing any search)."""

    candidates: Candidates


@dataclass(frozen=True, slots=True)
class StopUpgrade:
    name: str


@dataclass(frozen=True, slots=True)
class PunchTo:
    """The rendezvous timed a hole punch toward ``name`` at ``host:port``."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Show:
    event: UIEvent


@dataclass(frozen=True, slots=True)
class Answered:
    """A request of the user's is over (``what``: "connect" or "passwd").
    ``ok``: it succeeded; ``secret``: the new password, once it is in use."""

    what: str
    name: str
    ok: bool
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """How a search for a direct path to ``name`` went (for ``::netcheck``)."""

    name: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Fault:
    """Handling ``where`` met a bug (``error``); ``consequence`` says what it cost."""

    where: str
    error: Exception
    consequence: str


Effect = (
    Fault | ToServer | ToLink | CloseLink | Upgrade | StopUpgrade | PunchTo | Show | Answered | Note
)
