# -*- test-case-name: tests.test_bench -*-
"""
Load generators: callers that each send a request as soon as their previous
one is answered (a closed loop), bursts of requests with gaps between them,
and the memory taken by requests left outstanding.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

Request = Callable[[bytes], "Deferred[bytes]"]


#: Latencies are counted in buckets 1% wide (a log scale from 1 µs), so a
#: run of any length takes the same memory and percentiles are within 1%.
_BUCKET = math.log(1.01)
_FLOOR = 1e-6


@dataclass
class Tally:
    """
    What a load observed.

    @ivar completed: how many requests were answered or failed.
    @ivar latencies: a histogram of the seconds from each request to its
        reply or failure: bucket number to count.
    @ivar errors: failures by kind (the exception's class name, or
        C{WrongReply} for a reply that was not the request's echo).
    """

    completed: int = 0
    latencies: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpuSeconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def succeeded(self) -> int:
        return self.completed - self.failed

    @property
    def requestsPerSecond(self) -> float:
        """
        Requests answered as expected per second: failures do not count, so
        a backend that refuses everything at once is not fast.
        """
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpuPerRequest(self) -> float:
        """
        CPU seconds this process spent per request: the load generator's
        own cost plus the client's.  Steadier than requests/s on a busy
        machine, since time taken by other processes does not count.
        """
        return self.cpuSeconds / self.completed if self.completed else 0.0

    def percentile(self, fraction: float) -> float:
        """
        The latency below which C{fraction} of the requests fell, in seconds
        (the upper edge of its 1%-wide bucket).
        """
        if not self.completed:
            return 0.0
        rank = min(self.completed - 1, int(fraction * self.completed))
        seen = 0
        for bucket in sorted(self.latencies):
            seen += self.latencies[bucket]
            if seen > rank:
                return _FLOOR * math.exp((bucket + 1) * _BUCKET)
        raise AssertionError("unreachable: the histogram counts every request")

    def addLatency(self, latency: float) -> None:
        self.completed += 1
        self.latencies[int(math.log(latency / _FLOOR) / _BUCKET) if latency > _FLOOR else 0] += 1

    def record(self, result: object, expected: bytes, latency: float) -> None:
        self.addLatency(latency)
        if isinstance(result, Failure):
            self.errors[type(result.value).__name__] += 1
        elif result != expected:
            self.errors["WrongReply"] += 1


def payloads(count: int, size: int) -> list[bytes]:
    """
    C{count} distinct payloads of C{size} bytes (or just big enough to be
    distinct), so a reply handed to the wrong caller is noticed.
    """
    return [(b"%d:" % i).ljust(size, b"x") for i in range(count)]


class ClosedLoop:
    """
    C{concurrency} callers, each sending its next request as soon as the
    previous one is answered, until C{total} requests were sent or
    C{duration} seconds passed.
    """

    def __init__(
        self,
        request: Request,
        payloads: Sequence[bytes],
        *,
        total: int | None = None,
        duration: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """
        @param request: sends one payload, returns a Deferred of the reply.
        @param payloads: one per caller.
        @param total: stop after this many requests.
        @param duration: stop sending after this many seconds.
        """
        if (total is None) == (duration is None):
            raise ValueError("give exactly one of total and duration")
        self._request = request
        self._payloads = payloads
        self._total = total
        self._duration = duration
        self._clock = clock
        self.tally = Tally()
        self.sent = 0
        self._deadline = 0.0
        self._active = 0
        self._calling: int | None = None
        self._again = False
        self._done: Deferred[Tally] = Deferred()

    def run(self) -> Deferred[Tally]:
        """
        Start every caller.

        @return: fires with the L{Tally} once every request has been answered.
        """
        self._start = self._clock()
        self._startCpu = time.process_time()
        if self._duration is not None:
            self._deadline = self._start + self._duration
        self._active = len(self._payloads)
        for caller in range(len(self._payloads)):
            self._call(caller)
        return self._done

    def abandon(self) -> None:
        """
        Stop now: count the requests still unanswered as C{Unanswered}
        errors, and fire the result.  Later replies are ignored.
        """
        if self._done.called:
            return
        self._total, self._duration = self.sent, None
        unanswered = self.sent - self.tally.completed
        if unanswered:
            self.tally.errors["Unanswered"] += unanswered
        self._finish()

    def _finish(self) -> None:
        self.tally.seconds = self._clock() - self._start
        self.tally.cpuSeconds = time.process_time() - self._startCpu
        self._done.callback(self.tally)

    def _more(self) -> bool:
        if self._total is not None:
            return self.sent < self._total
        return self._clock() < self._deadline

    def _call(self, caller: int) -> None:
        # A reply that fires synchronously (a refused request) loops here
        # rather than recursing.
        previous, self._calling = self._calling, caller
        try:
            while self._more():
                self.sent += 1
                self._again = False
                payload = self._payloads[caller]
                start = self._clock()
                try:
                    reply = self._request(payload)
                except Exception:
                    reply = fail()
                reply.addBoth(self._answered, caller, payload, start)
                if not self._again:
                    return
            self._active -= 1
            if not self._active and not self._done.called:
                self._finish()
        finally:
            self._calling = previous

    def _answered(self, result: object, caller: int, payload: bytes, start: float) -> None:
        if self._done.called:
            return  # abandoned
        self.tally.record(result, payload, self._clock() - start)
        if self._calling == caller:
            self._again = True
        else:
            self._call(caller)


async def bursts(
    reactor: IReactorTime,
    request: Request,
    payloads: Sequence[bytes],
    count: int,
    gap: float,
    clock: Callable[[], float] = time.perf_counter,
) -> Tally:
    """
    Send C{count} bursts of one request per payload, all at once; wait for
    the burst's replies, then C{gap} seconds, then the next burst.
    """
    tally = Tally()
    start = clock()

    def answered(result: object, payload: bytes, sent: float) -> None:
        tally.record(result, payload, clock() - sent)

    for burst in range(count):
        if burst:
            await deferLater(reactor, gap, lambda: None)
        now = clock()
        await gatherResults([request(p).addBoth(answered, p, now) for p in payloads])
    tally.seconds = clock() - start - gap * (count - 1)
    return tally


def residentBytes() -> int:
    """
    This process's resident memory now, in bytes (0 where unknown).
    """
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def openSockets() -> int:
    """
    How many sockets this process has open (-1 where unknown).
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return -1
    count = 0
    for name in names:
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return count


def peakResidentBytes() -> int:
    """
    This process's peak resident memory so far, in bytes.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Memory:
    """
    Memory held by outstanding requests.

    @ivar outstanding: how many requests were outstanding at the reading.
    @ivar tracedBytes: Python allocations they held (C{tracemalloc}).
    @ivar residentBytes: growth of the resident set while they were issued.
    @ivar peakResidentBytes: the process's peak resident set afterwards.
    """

    outstanding: int
    payloadSize: int
    tracedBytes: int
    residentBytes: int
    peakResidentBytes: int
    errors: dict[str, int]

    @property
    def bytesPerRequest(self) -> float:
        return self.tracedBytes / self.outstanding if self.outstanding else 0.0


async def outstandingMemory(
    reactor: IReactorTime,
    request: Request,
    count: int,
    hold: float,
    pending: Callable[[], int] | None = None,
) -> Memory:
    """
    Measure the memory C{count} outstanding requests hold.

    Each request is C{!sleep HOLD}, which the benchmark backend answers only
    after C{hold} seconds; the reading is taken while they all wait.

    @param pending: how many requests the client counts as pending, to
        check that the reading was taken with all of them outstanding.
    """
    payload = b"!sleep %g" % hold
    tally = Tally()
    await request(b"warm up")
    gc.collect()
    rss = residentBytes()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sent = time.perf_counter()

        def answered(result: object) -> None:
            tally.record(result, b"slept", time.perf_counter() - sent)

        replies = [request(payload).addBoth(answered) for _ in range(count)]
        # Let the reactor write them all; the backend holds the replies.
        await deferLater(reactor, min(hold / 4, 0.5), lambda: None)
        traced = tracemalloc.get_traced_memory()[0] - base
        grown = residentBytes() - rss
        outstanding = pending() if pending is not None else count
    finally:
        tracemalloc.stop()
    await gatherResults(replies)
    return Memory(outstanding, len(payload), traced, grown, peakResidentBytes(), dict(tally.errors))


__all__ = ["Tally", "ClosedLoop", "bursts", "payloads", "outstandingMemory", "Memory", "openSockets", "residentBytes"]
