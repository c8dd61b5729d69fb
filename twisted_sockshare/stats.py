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
    #: Idempotent requests sent again after their connection was lost
    #: without their reply (never counted as failures).
    retries: int = 0
    #: Connections retired (among C{connectionsRetired}) because they had
    #: written C{maxRequestsPerConnection} requests.
    retiredAtRequestLimit: int = 0
    #: Connections retired (among C{connectionsRetired}) because every id of
    #: the codec's id space (C{maxRequestId}) was held.
    retiredOutOfIds: int = 0
    #: Requests the server refused (REFUSED, wire version 3: their handler
    #: was not called) that were sent again (never counted as failures).
    refusedRetried: int = 0

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


class _Events:
    """
    The counters of a client that are not touched on the request path (the
    two that are, C{responses} and C{peakPending}, are the client's own), and
    its latency histogram.
    """

    __slots__ = (
        "connectionsOpened",
        "connectionsClosed",
        "connectFailures",
        "remoteErrors",
        "failures",
        "timeouts",
        "cancelled",
        "rejected",
        "lateResponses",
        "retired",
        "goawaysReceived",
        "cancelsSent",
        "retries",
        "retiredAtRequestLimit",
        "retiredOutOfIds",
        "refusedRetried",
        "latencySum",
        "latencyCounts",
    )

    def __init__(self) -> None:
        self.connectionsOpened = self.connectionsClosed = self.connectFailures = 0
        self.remoteErrors = self.failures = self.timeouts = self.cancelled = self.rejected = 0
        self.lateResponses = self.retired = self.goawaysReceived = self.cancelsSent = 0
        self.retries = self.retiredAtRequestLimit = self.retiredOutOfIds = 0
        self.refusedRetried = 0
        self.latencySum = 0.0
        #: Replies per latency bucket (counted with C{latencyHistogram} only).
        self.latencyCounts = [0] * (len(LATENCY_BUCKETS) + 1)

    def latency(self) -> LatencyHistogram:
        """
        The reply latency histogram.
        """
        return LatencyHistogram(LATENCY_BUCKETS, tuple(self.latencyCounts), self.latencySum)

    def stats(self, pending: int, peakPending: int, responses: int, connected: bool) -> ClientStats:
        """
        Every counter, with those the client keeps itself.
        """
        return ClientStats(
            pending=pending,
            peakPending=peakPending,
            connected=int(connected),
            connectionsOpened=self.connectionsOpened,
            connectionsClosed=self.connectionsClosed,
            connectFailures=self.connectFailures,
            requests=responses + self.remoteErrors + self.failures + pending,
            responses=responses,
            remoteErrors=self.remoteErrors,
            failures=self.failures,
            timeouts=self.timeouts,
            cancelled=self.cancelled,
            rejected=self.rejected,
            lateResponses=self.lateResponses,
            connectionsRetired=self.retired,
            goawaysReceived=self.goawaysReceived,
            cancelsSent=self.cancelsSent,
            retries=self.retries,
            retiredAtRequestLimit=self.retiredAtRequestLimit,
            retiredOutOfIds=self.retiredOutOfIds,
            refusedRetried=self.refusedRetried,
        )


class ServerCounters:
    """
    The event counters of a L{twisted_sockshare.SockShareServerFactory}: the
    factory makes one and hands it to each of its connections, which count
    what happens to them here.  C{SockShareServerFactory.stats()} says what
    each one counts (C{deadlineOnArrival} and C{deadlineRunning} add up to
    its C{deadlineExceeded}).
    """

    __slots__ = (
        "connectionsOpened", "refusedConnections", "requests", "responses", "errors", "violations", "idleClosed",
        "pausedConnections", "pauses", "handlerTimeouts", "frameTimeouts", "peakInFlight", "cancelsReceived",
        "unanswered", "goawaysSent", "drainAborted", "deadlineOnArrival", "deadlineRunning", "refused",
    )  # fmt: skip

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    connectionsOpened: int
    refusedConnections: int
    requests: int
    responses: int
    errors: int
    violations: int
    idleClosed: int
    pausedConnections: int
    pauses: int
    handlerTimeouts: int
    frameTimeouts: int
    peakInFlight: int
    cancelsReceived: int
    unanswered: int
    goawaysSent: int
    drainAborted: int
    deadlineOnArrival: int
    deadlineRunning: int
    refused: int


__all__ = ["ClientStats", "STAT_KEYS", "LATENCY_BUCKETS", "LatencyHistogram", "ServerCounters"]
