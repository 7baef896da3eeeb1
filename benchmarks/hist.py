"""A latency histogram cheap enough for the load generator's hot loop.

Buckets are 1 us wide below 1 ms, 10 us wide up to 10 ms and 1 ms wide above,
so p50/p99 are exact to that resolution (a percentile is reported as its
bucket's upper edge); histograms from several processes merge by adding their
counts (they travel as JSON: ``{bucket: count}``).
"""

from __future__ import annotations

from collections import Counter

_US = 1_000
_MS = 1_000_000
_TIER2 = 1_000  # first bucket of the 10 us tier (1 ms)
_TIER3 = _TIER2 + 900  # first bucket of the 1 ms tier (10 ms)


def bucket(ns: int) -> int:
    if ns < _MS:
        return ns // _US if ns > 0 else 0
    if ns < 10 * _MS:
        return _TIER2 + (ns - _MS) // (10 * _US)
    return _TIER3 + (ns - 10 * _MS) // _MS


def bucket_ms(b: int) -> float:
    """The upper edge of bucket ``b``, in milliseconds."""
    if b < _TIER2:
        return (b + 1) / 1000
    if b < _TIER3:
        return 1 + (b - _TIER2 + 1) / 100
    return 10 + (b - _TIER3 + 1)


def merge(hists: list[dict]) -> Counter[int]:
    total: Counter[int] = Counter()
    for h in hists:
        for k, v in h.items():
            total[int(k)] += v
    return total


def percentile_ms(hist: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds, or None for an empty histogram."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_ms(b)
    return bucket_ms(max(hist))
