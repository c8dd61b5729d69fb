"""
The retry budget: how many requests lost with their connection may be sent
again, so that retries never multiply the load on a struggling backend.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

#: Retries may be this fraction of the retryable requests of the last
#: BUDGET_WINDOW seconds, plus BUDGET_PER_SECOND a second.
BUDGET_FRACTION, BUDGET_WINDOW, BUDGET_PER_SECOND = 0.1, 10, 10


class _RetryBudget:
    """
    Retries allowed: L{BUDGET_FRACTION} of the requests of the last
    L{BUDGET_WINDOW} seconds, plus L{BUDGET_PER_SECOND} a second, counted
    in one-second buckets.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buckets: dict[int, list[int]] = {}

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        bucket = self._buckets.get(second)
        if bucket is None:
            for old in [s for s in self._buckets if s <= second - BUDGET_WINDOW]:
                del self._buckets[old]
            bucket = self._buckets[second] = [0, 0]
        return bucket

    def request(self, now: float | None = None) -> None:
        """
        Count one request that may be retried, made at C{now} (the clock's
        time if L{None}).
        """
        self._bucket(self._clock.seconds() if now is None else now)[0] += 1

    def withdraw(self) -> bool:
        """
        Take one retry, if the budget allows it.
        """
        bucket = self._bucket(self._clock.seconds())
        requests = sum(b[0] for b in self._buckets.values())
        retries = sum(b[1] for b in self._buckets.values())
        if retries >= BUDGET_FRACTION * requests + BUDGET_PER_SECOND * BUDGET_WINDOW:
            return False
        bucket[1] += 1
        return True
