"""Account hardening, as plain objects that take ``now`` (sans-IO):

* :class:`FailedLogins` — wrong passwords slow down the next attempts, per
  account and per source address, with growing delays (``BASE_DELAY`` doubling
  up to ``MAX_DELAY``), forgotten after ``FORGET_AFTER`` quiet seconds or a
  success. An attacker trying passwords gets one guess every 30 s per account
  after a few tries, whichever addresses it uses; the owner, after a typo,
  waits a second. The delay is a *reservation* (:meth:`FailedLogins.reserve`):
  an attempt books its start time before it is hashed, and the next attempt
  from a key that has failed before starts a full delay after it, so attempts
  sent at once are spaced out instead of all passing together (the hash queue,
  :mod:`rendezvous.hashqueue`, also lets only one attempt per account be
  pending at a time).
* :class:`ResumeTokens` — after a login the server hands out a short-lived,
  single-use token; a peer that lost its connection logs back in with it
  (``resume: NAME TOKEN``) instead of sending its password again. A token is
  bound to the address it was issued to, works once (each resume issues the
  next one), and expires after ``TOKEN_TTL`` seconds. Only a hash of it is
  kept; a restart of the server forgets them all (peers fall back to the
  password).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: Seconds the first delay after a wrong password lasts; it doubles per failure.
BASE_DELAY = 0.5
#: The longest delay, in seconds.
MAX_DELAY = 30.0
#: Seconds without failures after which a counter is forgotten.
FORGET_AFTER = 900.0
#: Counters kept at most (oldest forgotten first): memory stays bounded.
MAX_ENTRIES = 65536
#: Seconds a resume token stays valid.
TOKEN_TTL = 600.0


@dataclass(slots=True)
class _Count:
    failures: int
    last: float  # when the last failure was recorded
    #: The latest start booked by an attempt from or at this key (reserve()):
    #: the next one may start a delay after it, even if its verdict is not in yet.
    booked: float


class FailedLogins:
    def __init__(
        self, base: float = BASE_DELAY, cap: float = MAX_DELAY, forget_after: float = FORGET_AFTER
    ) -> None:
        self.base, self.cap, self.forget_after = base, cap, forget_after
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def _live(self, key: str, now: float) -> _Count | None:
        c = self._counts.get(key)
        if c is None or now - c.last > self.forget_after:
            return None
        return c

    def _wait(self, failures: int) -> float:
        return 0.0 if failures == 0 else min(self.cap, self.base * 2 ** (failures - 1))

    def _free_at(self, key: str, now: float) -> float:
        """When the next attempt from or at ``key`` may start."""
        c = self._live(key, now)
        if c is None:
            return now
        return max(c.last + self._wait(c.failures), c.booked)

    def delay(self, account: str, source: str, now: float) -> float:
        """Seconds to wait before checking the next password for this pair."""
        keys = ("a:" + account.lower(), "s:" + source)
        return max(0.0, max(self._free_at(key, now) for key in keys) - now)

    def reserve(self, account: str, source: str, now: float) -> float:
        """Book the next attempt for this pair; return when it may start.

        Every key with failures behind it is booked until a full delay after
        that start, so a second attempt reserved meanwhile (the same address
        guessing at another account, say) starts that much later still: N
        attempts sent at once are N delays apart, not one. A key without
        failures books nothing: several people behind one NAT log in at once.
        """
        start = now + self.delay(account, source, now)
        for key in ("a:" + account.lower(), "s:" + source):
            c = self._live(key, now)
            if c is not None and c.failures:
                c.booked = max(c.booked, start + self._wait(c.failures))
        return start

    def bookings(self, account: str, source: str) -> tuple[float | None, float | None]:
        """What the account's and the source's counters have booked (None: no
        counter), to undo a reservation whose attempt never ran."""
        a, s = self._counts.get("a:" + account.lower()), self._counts.get("s:" + source)
        return (a.booked if a else None, s.booked if s else None)

    def unbook(
        self,
        account: str,
        source: str,
        before: tuple[float | None, float | None],
        after: tuple[float | None, float | None],
    ) -> None:
        """Undo a reservation (``bookings`` before and after it) whose attempt
        was given up unhashed, where no later one booked on top of it: a client
        that gives up in line must not push the next attempts later and later."""
        for key, old, new in zip(
            ("a:" + account.lower(), "s:" + source), before, after, strict=True
        ):
            c = self._counts.get(key)
            if c is not None and old is not None and new is not None and c.booked == new:
                c.booked = old

    def failed(self, account: str, source: str, now: float) -> None:
        for key in ("a:" + account.lower(), "s:" + source):
            c = self._live(key, now)
            if c is None:
                self._counts[key] = _Count(1, now, now)
            else:
                c.failures += 1
                c.last = now
            self._counts.move_to_end(key)
        while len(self._counts) > MAX_ENTRIES:
            self._counts.popitem(last=False)

    def succeeded(self, account: str, source: str) -> None:
        # The account's owner got in: its counter restarts. The source's does not,
        # or one good account would whitewash an address guessing at others.
        self._counts.pop("a:" + account.lower(), None)


@dataclass(slots=True)
class _Token:
    digest: bytes
    source: str
    expires: float


class ResumeTokens:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._tokens: OrderedDict[str, _Token] = OrderedDict()

    def issue(self, name: str, source: str, now: float) -> str:
        """A new token for ``name`` at ``source`` (the previous one stops working)."""
        token = secrets.token_urlsafe(24)
        self._tokens[name.lower()] = _Token(_digest(token), source, now + self.ttl)
        self._tokens.move_to_end(name.lower())
        while len(self._tokens) > MAX_ENTRIES:
            self._tokens.popitem(last=False)
        return token

    def redeem(self, name: str, token: str, source: str, now: float) -> bool:
        """Whether ``token`` lets ``name`` in from ``source`` now; it is used up."""
        entry = self._tokens.get(name.lower())
        if entry is None or not hmac.compare_digest(entry.digest, _digest(token)):
            return False
        del self._tokens[name.lower()]  # single use, even when refused below
        return entry.source == source and now < entry.expires

    def revoke(self, name: str) -> None:
        """Forget ``name``'s token (its password changed)."""
        self._tokens.pop(name.lower(), None)

    def export(self, now: float, wall: float) -> list[tuple[str, bytes, str, float]]:
        """The live tokens as ``(name, digest, source, expires)``, ``expires`` in
        wall-clock seconds (``now`` is this clock's time, ``wall`` the wall clock's)."""
        return [
            (name, t.digest, t.source, wall + (t.expires - now))
            for name, t in self._tokens.items()
            if t.expires > now
        ]

    def restore(self, saved: list[tuple[str, bytes, str, float]], now: float, wall: float) -> int:
        """Take back tokens from :meth:`export` (of an earlier run); how many are still live.
        A token issued since (by this run) is newer and wins."""
        live = 0
        for name, digest, source, expires in saved:
            left = expires - wall
            if 0 < left <= self.ttl and name.lower() not in self._tokens:
                self._tokens[name.lower()] = _Token(digest, source, now + left)
                live += 1
        return live


def _digest(token: str) -> bytes:
    return hashlib.blake2b(token.encode(), digest_size=32).digest()
