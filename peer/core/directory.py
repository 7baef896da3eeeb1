"""What this peer knows of other users: who exists, where each may be
reached, and which key the rendezvous vouches for."""

from __future__ import annotations

import base64
import binascii
from contextlib import suppress

from chathack.protocol import PeerAddress, UserState
from peer.core.candidates import Candidates, candidates_of
from peer.core.records import Effect, Upgrade
from peer.core.security import Keys


class Directory:
    def __init__(self, keys: Keys, relay_only: bool) -> None:
        self.keys = keys
        self.relay_only = relay_only
        self.users: list[UserState] = []
        #: The last users list named every registered user (no "+N more").
        self.complete = False
        self.candidates: dict[str, Candidates] = {}  # folded name -> last known

    def listed(self, name: str) -> bool:
        """``name`` is on the last users list (or was learnt since)."""
        return any(u.name.lower() == name.lower() for u in self.users)

    def unknown(self, name: str) -> bool:
        """True when the rendezvous's full list of users lacks ``name``."""
        return self.complete and not self.listed(name)

    def know(self, name: str) -> None:
        if not self.listed(name):
            self.users.append(UserState(name, True))

    def learn(self, addr: PeerAddress, called: bool = False) -> Candidates:
        """Remember the key the rendezvous vouches for and where ``addr.name``
        is (``called``: from a ``CALL``)."""
        self.know(addr.name)
        key = dict(addr.extra).get("key")
        if key:
            with suppress(binascii.Error, ValueError):
                self.keys.vouched[addr.name.lower()] = base64.b64decode(key, validate=True)
        cands = self.candidates[addr.name.lower()] = candidates_of(addr, called)
        return cands

    def upgrade(self, cands: Candidates, out: list[Effect]) -> bool:
        """Look for a direct path to ``cands.name``, if this peer may have one
        and knows where to look; False: no search started."""
        if self.relay_only or not cands.frames:
            return False
        if not cands.addrs and not (cands.called and cands.public is not None):
            return False
        out.append(Upgrade(cands))
        return True

    def keyless_peer(self, addr: PeerAddress) -> bool:
        """Whether ``addr`` leaves out the key of someone known to be a chathack
        peer (pinned, or vouched for before): a rendezvous that withholds keys
        may be trying to make this peer talk in clear."""
        return (
            dict(addr.extra).get("state") != "offline"
            and "key" not in dict(addr.extra)
            and self.keys.is_peer(addr.name)
        )

    def looks_plain(self, addr: PeerAddress) -> bool:
        """Whether ``addr`` is a plain-text client's (``nc``): it announced no
        addresses and no key, and no key of that name was ever pinned or
        vouched for (a known chathack peer is never talked to in plain text)."""
        return (
            dict(addr.extra).get("state") != "offline"
            and not candidates_of(addr).frames
            and "key" not in dict(addr.extra)
            and not self.keys.is_peer(addr.name)
        )
