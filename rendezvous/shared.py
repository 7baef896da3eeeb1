"""The state the login dialogue shares with every other instance, behind ports.

Three async interfaces, each with an embedded implementation here (one
process: the :class:`~rendezvous.store.Store` and memory) and a Redis one
(:mod:`rendezvous.redis_shared`) for several instances. The contract every
implementation keeps -- ``tests/test_shared_contract.py`` runs the same tests
against each:

:class:`AccountBook`
    ``register`` creates a name exactly once: of two registrations of the same
    name (or of two names that read alike) racing on any instances, one gets
    the account and the other a :class:`Taken`; once ``register`` returned the
    account, every ``get`` on every instance finds it (read-your-writes, no
    cache). Names are case-insensitive; the registered spelling is kept.
:class:`TokenBook`
    A resume token is single use on the whole service: ``redeem`` deletes it,
    so of two instances redeeming the same token at once one says yes. A token
    is bound to the address it was issued to and expires after ``ttl``;
    ``issue`` replaces a user's previous token, ``revoke`` drops it.
:class:`PresenceClaims`
    ``claim(name)`` returns a fencing epoch for a new login of ``name``,
    higher than any earlier one of that name anywhere; a session with a lower
    epoch than the newest claim is the older one and gives way.

Errors: an implementation that cannot reach its store raises
:class:`SharedStoreDown` (never a false success): the login is refused with
its reason and the client tries again, or another instance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

from rendezvous.accounts import TOKEN_TTL, ResumeTokens
from rendezvous.store import Account, Store


class SharedStoreDown(Exception):
    """The shared store (Redis) did not answer: the instance cannot promise anything now."""


class SharedStoreFault(SharedStoreDown):
    """The shared store refused a command (a script error, a value of the wrong
    shape): a bug or damaged data, not an outage, so trying again does not help;
    the user is answered as for an outage, the operator reads the log."""


@dataclass(frozen=True, slots=True)
class Taken:
    """Why a registration failed: the name, or one reading like it, is someone's."""

    registered: str  # the name in the way
    same: bool  # True: the very name (another spelling of it); False: a look-alike


class AccountBook(Protocol):
    async def get(self, name: str) -> Account | None: ...
    async def lookalike(self, name: str) -> str | None: ...
    async def register(self, name: str, pw_hash: str, now: float) -> Account | Taken: ...
    async def set_password_hash(self, name: str, pw_hash: str) -> None: ...


class TokenBook(Protocol):
    ttl: float

    async def issue(self, name: str, source: str, now: float) -> str: ...
    async def redeem(self, name: str, token: str, source: str, now: float) -> bool: ...
    async def revoke(self, name: str) -> None: ...


class PresenceClaims(Protocol):
    async def claim(self, name: str) -> int: ...


class LocalAccountBook:
    """:class:`AccountBook` on this process's :class:`Store` (SQLite)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, name: str) -> Account | None:
        return self.store.get_account(name)

    async def lookalike(self, name: str) -> str | None:
        return self.store.find_lookalike(name)

    async def register(self, name: str, pw_hash: str, now: float) -> Account | Taken:
        # No await between the checks and the insert: nothing else runs in between.
        held = self.store.get_account(name)
        if held is not None:
            return Taken(held.name, True)
        lookalike = self.store.find_lookalike(name)
        if lookalike is not None:
            return Taken(lookalike, False)
        return self.store.create_account(name, pw_hash, now)

    async def set_password_hash(self, name: str, pw_hash: str) -> None:
        self.store.set_password_hash(name, pw_hash)


class LocalTokenBook:
    """:class:`TokenBook` in memory (kept across a graceful restart by the server)."""

    def __init__(self, tokens: ResumeTokens | None = None) -> None:
        self.tokens = tokens or ResumeTokens()

    @property
    def ttl(self) -> float:
        return self.tokens.ttl

    async def issue(self, name: str, source: str, now: float) -> str:
        return self.tokens.issue(name, source, now)

    async def redeem(self, name: str, token: str, source: str, now: float) -> bool:
        return self.tokens.redeem(name, token, source, now)

    async def revoke(self, name: str) -> None:
        self.tokens.revoke(name)


class LocalClaims:
    """:class:`PresenceClaims` of a single instance: a counter in memory."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    async def claim(self, name: str) -> int:
        return next(self._next)


__all__ = [
    "TOKEN_TTL",
    "AccountBook",
    "LocalAccountBook",
    "LocalClaims",
    "LocalTokenBook",
    "PresenceClaims",
    "SharedStoreDown",
    "SharedStoreFault",
    "Taken",
    "TokenBook",
]
