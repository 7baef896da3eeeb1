"""Token buckets for the rendezvous's rate limits (sans-IO: time is a parameter).

Theory of operation
-------------------
A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second.
Each action *reserves* a token with :meth:`TokenBucket.take`, which always
succeeds and returns how many seconds the caller must wait before acting
(0 when a token was there). The balance may go negative: it is the debt of
reservations made ahead of time, so several callers sharing one bucket (the
connections of one source address) queue up in order instead of all waking
at the same instant. The server applies the wait by not reading from the
client meanwhile: an over-eager client is slowed down, and nothing it sent is
dropped.

``rate == 0`` means unlimited: :meth:`take` always returns 0.
"""

from __future__ import annotations

from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"bad bucket: rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Reserve ``cost`` tokens; return the seconds to wait before acting."""
        if self.rate == 0:
            return 0.0
        self._refill(now)
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def give_back(self, now: float, cost: float = 1.0) -> None:
        """Return ``cost`` tokens taken for something that did not happen."""
        self._refill(now)
        self._tokens = min(self.burst, self._tokens + cost)

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (negative: reserved ahead)."""
        self._refill(now)
        return self._tokens

    def is_full(self, now: float) -> bool:
        """True when the bucket is as good as a new one (it may be forgotten)."""
        return self.rate == 0 or self.tokens(now) >= self.burst


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a source address), at most ``max_keys`` kept.

    Full buckets are indistinguishable from new ones, so they are forgotten
    first when the table grows past ``max_keys``; if every key is in debt (a
    flood from very many addresses), the oldest are forgotten as well, which
    costs those addresses their limit but never memory.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        TokenBucket(rate, burst)  # validate early
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        if self.rate == 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now, cost)

    def give_back(self, key: Hashable, now: float, cost: float = 1.0) -> None:
        """Return ``cost`` tokens taken for something that did not happen."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give_back(now, cost)

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
        # Still too many: drop the oldest tenth in one go, so that pruning
        # (a scan of the table) happens rarely even under a wide flood.
        excess = len(self._buckets) - self.max_keys + max(1, self.max_keys // 10)
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]
