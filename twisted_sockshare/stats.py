"""
A client's counters as a record: what C{stats()} reports, and how the
counters of several clients add up (a pool's, a balancer's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Final


@dataclass(frozen=True, slots=True)
class ClientStats:
    """
    The counters of one client, or the sum of several.

    Adding two records sums every field but C{peakPending}, which takes the
    larger of the two: the sum of peaks reached at different moments would
    overstate what was ever pending at once.
    """

    #: Requests accepted whose Deferred has not fired (a gauge).
    pending: int = 0
    #: The most requests pending at once.
    peakPending: int = 0
    #: Usable connections now (a gauge; 0 or 1 for one client).
    connected: int = 0
    connectionsOpened: int = 0
    connectionsClosed: int = 0
    connectFailures: int = 0
    #: Requests accepted: C{responses + remoteErrors + failures + pending}.
    requests: int = 0
    responses: int = 0
    remoteErrors: int = 0
    #: Requests failed by the client side (timeouts and cancels among them).
    failures: int = 0
    timeouts: int = 0
    cancelled: int = 0
    #: Requests refused at once, never counted in C{requests}.
    rejected: int = 0
    lateResponses: int = 0
    connectionsRetired: int = 0
    #: GOAWAY frames received (each retires its connection).
    goawaysReceived: int = 0
    #: CANCEL frames sent for requests that timed out or were cancelled.
    cancelsSent: int = 0

    @classmethod
    def fromDict(cls, counters: Mapping[str, int]) -> ClientStats:
        """
        The record of a C{stats()} dict; keys it does not know are ignored.
        """
        return cls(**{key: counters[key] for key in STAT_KEYS if key in counters})

    def asDict(self) -> dict[str, int]:
        """
        The counters as C{stats()} reports them, in L{STAT_KEYS} order.
        """
        return asdict(self)

    def __add__(self, other: ClientStats) -> ClientStats:
        if not isinstance(other, ClientStats):
            return NotImplemented
        return ClientStats(
            **{
                key: max(mine, theirs) if key == "peakPending" else mine + theirs
                for key, mine, theirs in zip(STAT_KEYS, _values(self), _values(other), strict=True)
            }
        )

    @classmethod
    def total(cls, records: Iterable[ClientStats]) -> ClientStats:
        """
        The sum of C{records} (all zero if there is none).
        """
        result = cls()
        for record in records:
            result = result + record
        return result


def _values(record: ClientStats) -> list[int]:
    return [getattr(record, key) for key in STAT_KEYS]


#: The keys of a client's C{stats()}, in order.
STAT_KEYS: Final = tuple(field.name for field in fields(ClientStats))

#: The upper bounds, in seconds, of the reply latency histogram's buckets
#: (a last one, unbounded, holds the rest): from 100 microseconds, for a
#: backend on the same host, to 10 seconds.
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class LatencyHistogram:
    """
    How long the backend's replies took, from C{request()} to the chunk that
    brought the reply, counted in fixed buckets: responses and remote errors
    (requests that failed otherwise have no reply, and are counted in
    L{ClientStats}).

    @ivar bounds: each bucket's upper bound in seconds (L{LATENCY_BUCKETS}).
    @ivar counts: the replies in each bucket (not cumulative), one more than
        C{bounds}: the last holds those over the largest bound.
    @ivar sum: the seconds of every reply, added up.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """
        How many replies were counted.
        """
        return sum(self.counts)


class _ClientCounters:
    """
    The counters of L{twisted_sockshare.SockShareClientFactory}, mixed into
    it so that counting stays a plain attribute increment on the request
    path.  Each starts at 0 here, on the class.
    """

    _peakPending = 0
    _connectionsOpened = 0
    _connectionsClosed = 0
    _connectFailures = 0
    _responses = 0
    _remoteErrors = 0
    _failures = 0
    _timeouts = 0
    _cancelled = 0
    _rejected = 0
    _lateResponses = 0
    _retired = 0
    _goawaysReceived = 0
    _cancelsSent = 0
    _latencySum = 0.0
    #: Replies per latency bucket (set per client: a list is mutable).
    _latencyCounts: list[int]

    def latency(self) -> LatencyHistogram:
        """
        The reply latency histogram since the client was made.
        """
        return LatencyHistogram(LATENCY_BUCKETS, tuple(self._latencyCounts), self._latencySum)

    def _counters(self, pending: int, connected: bool) -> ClientStats:
        """
        The counters, with the two gauges the client knows.
        """
        return ClientStats(
            pending=pending,
            peakPending=self._peakPending,
            connected=int(connected),
            connectionsOpened=self._connectionsOpened,
            connectionsClosed=self._connectionsClosed,
            connectFailures=self._connectFailures,
            requests=self._responses + self._remoteErrors + self._failures + pending,
            responses=self._responses,
            remoteErrors=self._remoteErrors,
            failures=self._failures,
            timeouts=self._timeouts,
            cancelled=self._cancelled,
            rejected=self._rejected,
            lateResponses=self._lateResponses,
            connectionsRetired=self._retired,
            goawaysReceived=self._goawaysReceived,
            cancelsSent=self._cancelsSent,
        )


__all__ = ["ClientStats", "STAT_KEYS", "LATENCY_BUCKETS", "LatencyHistogram"]
