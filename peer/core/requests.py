"""The user's requests in flight: ``connect:`` (one per name) and ``::passwd``.

Each reply of the rendezvous names what it answers (``Servidor[PEER]: NAME
...``, ``Servidor[FAILED]: connect NAME ...``, ``Servidor[PASSWD]: ...``), so a
reply is matched to its request by that key, never by arrival order: a
refusal of a background ``msg:`` or ``punch:`` arriving while a ``connect:``
waits is not taken for its answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from chathack.protocol import PeerAddress

#: Seconds the rendezvous has to answer a ``connect:``.
CONNECT_REPLY_TIMEOUT = 10.0
#: Seconds before asking again about a partner that looks like a plain-text
#: client (it may be a peer that logged in a moment ago and not announced yet).
PLAIN_RECHECK = 0.5
#: Seconds ``connect`` waits for a direct link before opening on the relay.
DIRECT_GRACE = 0.5
#: Seconds the rendezvous has to end a ``::passwd`` dialogue (two argon2 hashes).
PASSWD_TIMEOUT = 30.0

Stage = Literal["asking", "recheck", "grace"]


@dataclass(eq=False)
class PendingConnect:
    """A ``connect: name`` the rendezvous has not fully answered yet.

    ``asking``: the question is out; ``recheck``: the answer looked like a
    plain-text client's, ask once more at ``deadline``; ``grace``: the answer
    came, a direct link may still come up before ``deadline``."""

    name: str
    stage: Stage
    deadline: float
    rechecked: bool = False
    answer: PeerAddress | None = None
    #: Whether it ends by making the conversation the active one: only while
    #: this is still the user's latest choice (a ::switch meanwhile wins).
    activate: bool = True
    #: Asked about a conversation a plain line opened: if the rendezvous knows
    #: no key, this connect is the user's word to talk unencrypted.
    consent: bool = False


@dataclass(eq=False)
class PendingPasswd:
    old: str
    new: str
    deadline: float
    asked: int = 0  # how many passwords the server has asked for so far


@dataclass(eq=False)
class Requests:
    connects: dict[str, PendingConnect] = field(default_factory=dict)  # folded name ->
    passwd: PendingPasswd | None = None

    def connect(self, name: str, now: float, activate: bool = True) -> PendingConnect:
        pending = PendingConnect(name, "asking", now + CONNECT_REPLY_TIMEOUT, activate=activate)
        self.connects[name.lower()] = pending
        return pending

    def waiting_for(self, name: str) -> PendingConnect | None:
        """The connect waiting for the rendezvous's answer about ``name``."""
        pending = self.connects.get(name.lower())
        return pending if pending is not None and pending.stage == "asking" else None

    def due(self, now: float) -> list[PendingConnect]:
        return [p for p in self.connects.values() if p.deadline <= now]

    def next_deadline(self) -> float | None:
        times = [p.deadline for p in self.connects.values()]
        if self.passwd is not None:
            times.append(self.passwd.deadline)
        return min(times, default=None)
