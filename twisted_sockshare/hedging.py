# -*- test-case-name: tests.test_hedging -*-
"""
Hedged requests: a balancer sends a second copy of a slow idempotent request
to another endpoint, after the latency that only a small share of its
requests exceed, and takes the first answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: How the recent latencies decay: every count is halved after this many
#: seconds, so the delay follows a backend whose speed changes.
HALF_LIFE = 10.0
#: Buckets per doubling of the latency: a delay is at most 12.5% above the
#: exact quantile.
_PER_OCTAVE = 8
#: The shortest (about 15 microseconds) and the longest (about 2 minutes)
#: latencies told apart.
_LOWEST_EXPONENT, _HIGHEST_EXPONENT = -16, 7
_BUCKETS = (_HIGHEST_EXPONENT - _LOWEST_EXPONENT) * _PER_OCTAVE
#: The delay is computed again after this many latencies.
_REFRESH = 32


@dataclass(frozen=True)
class Hedge:
    """
    When a L{twisted_sockshare.SockShareBalancer} sends a backup copy of an
    idempotent request: after the latency at the C{100 * (1 - maxExtraLoad)}
    percentile of its recent requests, but never sooner than C{minDelay}
    seconds; and only while the retry budget allows it.

    @ivar maxExtraLoad: the share of requests that may get a backup, in
        (0, 1): 0.05 sends a backup for the slowest 5%.
    @ivar minDelay: the shortest wait, in seconds, before a backup.
    """

    maxExtraLoad: float = 0.05
    minDelay: float = 0.001

    def __post_init__(self) -> None:
        for name in ("maxExtraLoad", "minDelay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not 0 < self.maxExtraLoad < 1:
            raise ValueError(f"maxExtraLoad must be in (0, 1), not {self.maxExtraLoad!r}")
        if not 0 <= self.minDelay < math.inf:
            raise ValueError(f"minDelay must be >= 0 seconds, not {self.minDelay!r}")


class _Delays:
    """
    A balancer's recent latencies, in log-spaced buckets whose counts are
    halved every L{HALF_LIFE} seconds, and the delay they give a backup.

    Memory is bounded (a fixed number of buckets); recording is constant
    time, and the quantile is recomputed every L{_REFRESH} latencies (and at
    each one until there are enough).
    """

    def __init__(self, hedge: Hedge, now: float) -> None:
        self._quantile = 1.0 - hedge.maxExtraLoad
        self._minDelay = hedge.minDelay
        # Below this many latencies (decayed), the tail is not known: no backup.
        self._enough = math.ceil(2 / hedge.maxExtraLoad)
        self._counts = [0.0] * _BUCKETS
        self._total = 0.0
        self._halveAt = now + HALF_LIFE
        self._untilRefresh = _REFRESH
        self._delay: float | None = None

    def record(self, seconds: float, now: float) -> None:
        """
        Count one latency of C{seconds}, observed at C{now}.
        """
        if now >= self._halveAt:
            self._decay(now)
        self._counts[_bucket(seconds)] += 1.0
        self._total += 1.0
        self._untilRefresh -= 1
        if self._untilRefresh <= 0 or self._delay is None:
            self._refresh()

    def delay(self) -> float | None:
        """
        How long a request waits before its backup is sent, or L{None}: too
        few latencies yet to know.
        """
        return self._delay

    def _decay(self, now: float) -> None:
        halvings = 1 + int((now - self._halveAt) // HALF_LIFE)
        factor = 0.5**halvings
        self._counts = [count * factor for count in self._counts]
        self._total *= factor
        self._halveAt += halvings * HALF_LIFE
        self._refresh()

    def _refresh(self) -> None:
        self._untilRefresh = _REFRESH
        if self._total < self._enough:
            self._delay = None
            return
        wanted = self._quantile * self._total
        seen = 0.0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= wanted:
                self._delay = max(_upperBound(index), self._minDelay)
                return
        self._delay = max(_upperBound(_BUCKETS - 1), self._minDelay)


def _bucket(seconds: float) -> int:
    """
    The bucket of a latency of C{seconds}.
    """
    if seconds <= 0:
        return 0
    mantissa, exponent = math.frexp(seconds)  # seconds = mantissa * 2 ** exponent, 0.5 <= mantissa < 1
    index = (exponent - _LOWEST_EXPONENT) * _PER_OCTAVE + int((mantissa - 0.5) * 2 * _PER_OCTAVE)
    return min(max(index, 0), _BUCKETS - 1)


def _upperBound(index: int) -> float:
    """
    The largest latency of bucket C{index}.
    """
    exponent, step = divmod(index, _PER_OCTAVE)
    return math.ldexp(0.5 + (step + 1) / (2 * _PER_OCTAVE), exponent + _LOWEST_EXPONENT)


__all__ = ["Hedge"]
