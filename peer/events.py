"""What the peer's network side tells its UI (and the library API's users).

The node (:mod:`peer.node`) never touches the terminal: it sends these
frozen records over a channel, and exactly one UI task renders them
(:mod:`peer.plain` for pipes, :mod:`peer.tty` for a terminal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from chathack.protocol import UserState
from chathack.text import neutralise

#: How a conversation's messages travel. ``unencrypted``: with a plain-text
#: client (nc), in clear through the rendezvous, only after the user said so.
PathName = Literal["direct", "punched", "relayed", "unencrypted"]
Level = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A chat message from ``origin``, shown once, in order."""

    origin: str
    text: str
    at: float
    path: PathName


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A line this user sent to ``partner`` (the terminal UI shows it formatted).

    ``msg_id`` names it in later :class:`Delivery` events; ``state`` is where
    it stands now: ``sent`` (on its way to the partner), ``waiting`` (no
    path yet: it goes when one opens), or ``queued`` (for the mailbox)."""

    partner: str
    text: str
    at: float
    msg_id: str | None = None
    state: str = ""


@dataclass(frozen=True, slots=True)
class System:
    """A line from this program itself (not from a person or the server)."""

    text: str
    level: Level = "info"
    about: str | None = None  # the conversation (partner) it concerns, if one
    #: What it reports the state of ("rendezvous": the connection to the
    #: server), when a newer line on the same topic supersedes it: the
    #: windowed UI shows only the newest, where the older one was.
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """A ``Servidor[FLAG]: text`` line worth showing as it is (errors, help)."""

    flag: str
    text: str
    about: str | None = None  # the conversation (partner) it concerns, if one


@dataclass(frozen=True, slots=True)
class UsersList:
    """Answer to ``::users``: the "Who do you want to talk to?" menu."""

    users: tuple[UserState, ...]
    more: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """Who this user is, who the active partner is, and over which path."""

    me: str
    partner: str | None
    path: PathName | None
    server: str  # "online" or a word saying what is wrong
    retry_in: float | None = None  # reconnecting: seconds until the next try


@dataclass(frozen=True, slots=True)
class Delivery:
    """A sent message moved on: ``stored`` on the server (partner offline),
    ``delivered``, ``read``, or ``expired`` unread. ``live``: a message of a
    live conversation, acknowledged by the partner's machine (the windowed
    UI marks it; the line UIs say nothing, as before)."""

    partner: str
    msg_id: str
    state: str
    live: bool = False


@dataclass(frozen=True, slots=True)
class Recalled:
    """A message of the conversation with ``partner`` read back from the
    history: for ``::history`` (``label`` "history") or as context when a
    conversation reopens ("earlier"). ``author`` wrote it; ``state`` is where
    one of yours stands (``sent``, ``stored``, ``delivered``, ``read``), empty
    for theirs. ``at`` is when it was written, not when it is shown."""

    partner: str
    author: str
    text: str
    at: float
    state: str = ""
    label: str = "history"

    def line(self) -> str:
        """``history: 2026-12-03 10:00 bob: text [read]``, on one line whatever
        the stored text holds (it is the partner's words)."""
        try:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.at))
        except (OverflowError, OSError, ValueError):  # a time no calendar holds
            when = "----------"
        state = f" [{self.state}]" if self.state else ""
        return f"{self.label}: {when} {neutralise(self.author)}: {neutralise(self.text)}{state}"


UIEvent = Incoming | Outgoing | System | ServerNotice | UsersList | Status | Delivery | Recalled
