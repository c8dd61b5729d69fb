"""
Hedged requests and latency-aware choice: the balancer's backup copies, the
recent latencies that time them, and the peak-EWMA cost that steers traffic
away from a slow endpoint.
"""

from __future__ import annotations

from random import Random
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    ClientClosed,
    ConnectionDropped,
    Hedge,
    RemoteError,
    RequestTimeout,
    SockShareBalancer,
    SockShareServerFactory,
)
from twisted_sockshare._retrybudget import BUDGET_FRACTION, BUDGET_PER_SECOND, BUDGET_WINDOW
from twisted_sockshare.hedging import HALF_LIFE, _Delays

from .contract import PORTS, Backends

DEFAULT = Hedge()


class HedgeOptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Hedge() sends backups for the slowest 5%, never sooner than 1 ms."""
        self.assertEqual((Hedge().maxExtraLoad, Hedge().minDelay), (0.05, 0.001))

    def test_badValues(self) -> None:
        """Out-of-range or mistyped values are refused when the Hedge is made, and a balancer takes only a Hedge."""
        for bad in (0, 1, -0.1, 1.5, float("nan")):
            self.assertRaises(ValueError, Hedge, maxExtraLoad=bad)
        for bad in (-1, float("inf"), float("nan")):
            self.assertRaises(ValueError, Hedge, minDelay=bad)
        for wrong in ("0.05", None, True):
            self.assertRaises(TypeError, Hedge, maxExtraLoad=wrong)
        self.assertRaises(TypeError, SockShareBalancer, ["tcp:127.0.0.1:1"], hedge=0.05)


class DelaysTests(SynchronousTestCase):
    def test_unknownUntilEnoughLatencies(self) -> None:
        """With fewer than 2 / maxExtraLoad latencies, there is no delay: no backup is sent."""
        delays = _Delays(Hedge(maxExtraLoad=0.05), 0.0)
        for _ in range(39):
            delays.record(0.01, 0.0)
        self.assertIsNone(delays.delay())
        for _ in range(64):
            delays.record(0.01, 0.0)
        self.assertIsNotNone(delays.delay())

    def test_quantile(self) -> None:
        """
        The delay is the latency at the 100 * (1 - maxExtraLoad) percentile,
        at most 12.5% above it, never below minDelay.
        """
        latencies = [0.001 * (1 + i % 100) for i in range(10_000)]  # 1 to 100 ms, evenly
        for load, percentile in [(0.05, 0.095), (0.5, 0.050), (0.2, 0.080)]:
            delays = _Delays(Hedge(maxExtraLoad=load, minDelay=0.0), 0.0)
            for latency in latencies:
                delays.record(latency, 0.0)
            delay = delays.delay()
            assert delay is not None
            self.assertTrue(percentile <= delay <= percentile * 1.125, (load, delay))
        floor = _Delays(Hedge(maxExtraLoad=0.5, minDelay=0.2), 0.0)
        for latency in latencies:
            floor.record(latency, 0.0)
        self.assertEqual(floor.delay(), 0.2)

    def test_decays(self) -> None:
        """Old latencies fade: after the backend got ten times faster, the delay follows within a few half-lives."""
        delays = _Delays(Hedge(maxExtraLoad=0.1, minDelay=0.0), 0.0)
        now = 0.0
        for _ in range(5000):
            delays.record(0.1, now)
        slow = delays.delay()
        for _ in range(60):
            now += HALF_LIFE / 10
            for _ in range(125):
                delays.record(0.01, now)
        fast = delays.delay()
        assert slow is not None and fast is not None
        self.assertGreater(slow, 0.1)
        self.assertLess(fast, 0.0115)

    def test_extremes(self) -> None:
        """Latencies of 0 and of hours are counted in the end buckets; nothing grows with the count."""
        delays = _Delays(Hedge(maxExtraLoad=0.5, minDelay=0.0), 0.0)
        for latency in [0.0, 1e-9, 3600.0, 1e9] * 100:
            delays.record(latency, 0.0)
        self.assertIsNotNone(delays.delay())
        self.assertEqual(len(delays._counts), len(_Delays(Hedge(), 0.0)._counts))


class HedgingTests(SynchronousTestCase):
    """
    A hedging balancer over the in-memory backends of the contract suite.
    """

    def setUp(self) -> None:
        self.backends = Backends()
        self.reactor, self.handler = self.backends.reactor, self.backends.handler

    def balancer(self, hedge: Hedge | None = DEFAULT, **options: Any) -> SockShareBalancer:
        options.setdefault("requestTimeout", 5.0)
        endpoints = [f"tcp:127.0.0.1:{port}" for port in PORTS]
        balancer = SockShareBalancer(endpoints, self.reactor, random=Random(3).random, hedge=hedge, **options)
        self.addCleanup(self.close, balancer)
        return balancer

    def close(self, balancer: SockShareBalancer) -> None:
        """Close C{balancer}: what is still held fails; nothing is left scheduled."""
        closed = balancer.close()
        self.reactor.advance(60)
        self.successResultOf(closed)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.flushLoggedErrors(RequestTimeout, ClientClosed)

    def warmUp(self, balancer: SockShareBalancer, count: int = 100) -> None:
        for i in range(count):
            self.successResultOf(balancer.request(b"echo %d" % i))

    def test_backupAfterTheDelay(self) -> None:
        """
        A slow idempotent request gets one backup, on another endpoint, once
        the delay passed (minDelay here: every latency so far was 0); the
        first answer wins.
        """
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(0.0009)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 1)
        self.reactor.advance(0.0002)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 2)
        self.reactor.advance(1)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 2)  # one backup at most
        servers = [port for port, server in self.backends.servers.items() if server.stats()["inFlight"]]
        self.assertEqual(len(servers), 2)
        self.handler.answer(b"hold 1")
        self.assertEqual(self.successResultOf(slow), b"hold 1")
        self.assertEqual(self.handler.cancelled, [b"hold 1"])
        stats = balancer.stats()
        self.assertEqual((stats["hedges"], stats["hedgeWins"], stats["requests"], stats["failures"]), (1, 0, 101, 0))

    def test_backupWins(self) -> None:
        """When the backup answers first, it wins (counted in hedgeWins) and the first copy is cancelled."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(0.01)
        self.handler.answerCopy(b"hold 1")
        self.assertEqual(self.successResultOf(slow), b"hold 1 (copy)")
        self.assertEqual(self.handler.cancelled, [b"hold 1"])
        stats = balancer.stats()
        self.assertEqual((stats["hedges"], stats["hedgeWins"], stats["cancelled"]), (1, 1, 0))

    def test_countsSettledForTheCaller(self) -> None:
        """When the caller's callback runs, the losing copy is already cancelled and the counters add up."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(0.01)
        seen: list[tuple[int, ...]] = []
        slow.addCallback(
            lambda _: seen.append(tuple(balancer.stats()[k] for k in ("failures", "cancelled", "pending")))
        )
        seen.append((len(self.handler.cancelled),))
        self.handler.answer(b"hold 1")
        self.assertEqual(seen, [(0,), (0, 0, 0)])
        self.assertEqual(self.handler.cancelled, [b"hold 1"])

    def test_onlyIdempotentRequests(self) -> None:
        """A request that is not idempotent never gets a backup."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1")
        self.reactor.advance(1)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 1)
        self.handler.answer(b"hold 1")
        self.successResultOf(slow)
        self.assertEqual(balancer.stats()["hedges"], 0)

    def test_offByDefault(self) -> None:
        """Without hedge, nothing is ever sent twice."""
        balancer = self.balancer(hedge=None)
        self.warmUp(balancer)
        balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(1)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 1)
        self.assertEqual(balancer.stats()["hedges"], 0)

    def test_noBackupBeforeLatenciesAreKnown(self) -> None:
        """A fresh balancer knows no latencies yet: no backup."""
        balancer = self.balancer()
        balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(1)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 1)

    def test_aFailedCopyWaitsForTheOther(self) -> None:
        """A copy lost with its connection does not fail the request while the other copy may still answer."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(0.01)
        first = self.backends.servers[self.busyPorts()[0]]
        for link in self.reactor.openLinks:
            if link.ends[0].protocol.factory is first:  # type: ignore[attr-defined]
                link.closeFromServer(False)
        self.assertNoResult(slow)
        self.handler.answerCopy(b"hold 1")
        self.assertEqual(self.successResultOf(slow), b"hold 1 (copy)")
        stats = balancer.stats()
        self.assertEqual((stats["requests"], stats["failures"]), (101, 0))

    def busyPorts(self) -> list[int]:
        """The ports whose server holds a request, in the order they took it."""
        return [port for port, server in self.backends.servers.items() if server.stats()["inFlight"]]

    def test_anErrorIsAnAnswer(self) -> None:
        """The backend's error (RemoteError) from either copy answers the request; the other is cancelled."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(0.01)
        self.handler.copies.pop(b"hold 1").errback(ValueError("no"))
        self.failureResultOf(slow, RemoteError)
        self.assertEqual(self.handler.cancelled, [b"hold 1"])
        self.flushLoggedErrors(ValueError)

    def test_copiesShareTheDeadline(self) -> None:
        """Both copies run out with the request's timeout: it fails once with RequestTimeout."""
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = balancer.request(b"hold 1", idempotent=True, timeout=2.0)
        self.reactor.advance(1.9)
        self.assertEqual(self.handler.seen.count(b"hold 1"), 2)
        self.assertNoResult(slow)
        self.reactor.advance(0.2)
        self.failureResultOf(slow, RequestTimeout)
        stats = balancer.stats()
        self.assertEqual((stats["requests"], stats["failures"], stats["timeouts"], stats["cancelled"]), (101, 1, 1, 0))

    def test_backupsWithinTheRetryBudget(self) -> None:
        """
        Every backend slow (an overload): no more backups than the retry
        budget allows, which they share with retries.
        """
        balancer = self.balancer()
        self.warmUp(balancer)
        slow = [balancer.request(b"hold %d" % i, idempotent=True) for i in range(2000)]
        self.reactor.advance(0.01)
        allowed = int(BUDGET_FRACTION * 2100 + BUDGET_PER_SECOND * BUDGET_WINDOW)
        self.assertEqual(balancer.stats()["hedges"], allowed)
        dropped = balancer.request(b"hold dropped", idempotent=True)
        for link in self.reactor.openLinks:
            link.closeFromServer(False)
        # The budget is spent: a request lost with its connection is not retried.
        self.failureResultOf(dropped, ConnectionDropped)
        for d in slow:
            self.assertIsNotNone(self.failureResultOf(d))

    def test_noBackupWithoutAnotherEndpoint(self) -> None:
        """With one endpoint, there is nowhere to send a backup: none is sent, and the budget is not charged."""
        balancer = SockShareBalancer([f"tcp:127.0.0.1:{PORTS[0]}"], self.reactor, hedge=Hedge(), requestTimeout=5.0)
        self.addCleanup(self.close, balancer)
        self.warmUp(balancer)
        balancer.request(b"hold 1", idempotent=True)
        self.reactor.advance(1)
        self.assertEqual((self.handler.seen.count(b"hold 1"), balancer.stats()["hedges"]), (1, 0))


class LatencyChoiceTests(SynchronousTestCase):
    """
    Member choice by peak-EWMA cost: backends that answer after a delay of
    their own, on a fake clock.
    """

    def fleet(self, delays: dict[int, float]) -> tuple[SockShareBalancer, dict[int, int]]:
        """
        A balancer over backends that answer after C{delays[port]} seconds
        (read at each request, so a test may change them).

        @return: the balancer, and how many requests each port served.
        """
        self.backends = Backends()
        self.reactor = self.backends.reactor
        served = dict.fromkeys(delays, 0)

        def answerAfter(port: int) -> Any:
            def handler(payload: bytes) -> Deferred[bytes]:
                served[port] += 1
                return deferLater(self.reactor, delays[port], lambda: payload)

            return handler

        for port in delays:
            self.reactor.servers[port] = SockShareServerFactory(answerAfter(port), clock=self.reactor)
        endpoints = [f"tcp:127.0.0.1:{port}" for port in delays]
        balancer = SockShareBalancer(endpoints, self.reactor, random=Random(5).random)
        self.addCleanup(self.close, balancer)
        return balancer, served

    def close(self, balancer: SockShareBalancer) -> None:
        closed = balancer.close()
        self.reactor.advance(60)
        self.successResultOf(closed)

    def drive(self, balancer: SockShareBalancer, callers: int, rounds: int) -> None:
        """C{callers} concurrent callers each send C{rounds} requests, one after the other."""

        async def caller() -> None:
            for _ in range(rounds):
                await balancer.request(b"x")

        done = gatherResults([ensureDeferred(caller()) for _ in range(callers)])
        while not done.called:
            self.reactor.advance(0.0005)
        self.successResultOf(done)

    def test_slowMemberLosesTraffic(self) -> None:
        """
        One backend 5x slower than the others (5 ms against 1 ms), 20
        callers: it gets less than a third of its even share.
        """
        balancer, served = self.fleet({PORTS[0]: 0.005, PORTS[1]: 0.001, PORTS[2]: 0.001})
        self.drive(balancer, callers=20, rounds=100)
        self.assertLess(served[PORTS[0]] / sum(served.values()), 1 / 9, served)

    def test_evenFleetEvenShares(self) -> None:
        """Backends of one speed share the requests about evenly."""
        balancer, served = self.fleet({PORTS[0]: 0.001, PORTS[1]: 0.001, PORTS[2]: 0.001})
        self.drive(balancer, callers=20, rounds=100)
        for count in served.values():
            self.assertTrue(0.25 < count / 2000 < 0.42, served)

    def test_slowOnceTriedAgain(self) -> None:
        """
        A backend that was slow once gets no traffic while that is recent,
        and some again once its latency average has decayed: a slow moment
        does not exile it for good.
        """
        delays = {PORTS[0]: 2.0, PORTS[1]: 2.0}
        balancer, served = self.fleet(delays)
        self.drive(balancer, callers=1, rounds=1)
        [slow] = [port for port, count in served.items() if count]
        delays.update(dict.fromkeys(delays, 0.001))
        self.drive(balancer, callers=1, rounds=20)
        self.assertEqual(served[slow], 1)
        self.reactor.advance(120)  # 12 decay periods
        self.drive(balancer, callers=1, rounds=20)
        self.assertGreater(served[slow], 1)
