"""What the rendezvous counts for its operators (sans-IO).

Plain integers and small histograms, bumped where things happen (an
attribute increment: nothing the relay can measure) and read only when
someone asks: the Prometheus exporter (:mod:`rendezvous.metrics`) turns
them into metric families at scrape time. Nothing here holds a user name,
an address or a message: every key is one of a few fixed words (a reason,
a kind, an exception type), so what is exported stays private and its
cardinality bounded.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

#: Upper bounds (seconds) of the latency histograms: relay (read to written)
#: from 100 us, password-hash queue waits up to a minute, Redis calls.
RELAY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
WAIT_BOUNDS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REDIS_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)


class Histogram:
    """Counts of observations at or under each bound, as Prometheus keeps them."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations at or under it)``, ending with ``+Inf``."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


class Counts:
    """Everything counted since the process started."""

    __slots__ = (
        "accepted",
        "logins",
        "mail",
        "outbox_overflows",
        "rate_limited",
        "refused",
        "relay_latency",
        "relayed_bytes",
        "relayed_lines",
        "slow_readers",
    )

    def __init__(self) -> None:
        self.accepted = 0
        #: Connections refused before any line, by reason: full, per_address, shutting_down.
        self.refused: Counter[str] = Counter()
        #: Login outcomes: password, registered, resumed, failed, throttled.
        self.logins: Counter[str] = Counter()
        self.relayed_lines = 0
        self.relayed_bytes = 0
        #: Seconds from a read to the end of handling it (its lines written or queued).
        self.relay_latency = Histogram(RELAY_BOUNDS)
        #: Mailbox events: stored, delivered, read, expired, and refused_CODE.
        self.mail: Counter[str] = Counter()
        #: Clients dropped for taking nothing for ``write_timeout`` seconds.
        self.slow_readers = 0
        #: Clients dropped because their outbox filled (``outbox_lines``).
        self.outbox_overflows = 0
        #: Pauses imposed by a rate limit, by kind: chat, command, login.
        self.rate_limited: Counter[str] = Counter()
