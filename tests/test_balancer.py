"""
The balancer's membership, outlier ejection and retries, with fake
endpoints and a fake clock.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ClientClosed, ConnectFailed, ConnectionDropped, RequestTimeout
from twisted_sockshare.balancer import OUTLIER_STREAK, SockShareBalancer, Target
from twisted_sockshare.wire import CANCEL

from .helpers import FakeEndpoint


class BalancerCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints = [FakeEndpoint(), FakeEndpoint(), FakeEndpoint()]

    def balancer(self, endpoints: list | None = None, **options: object) -> SockShareBalancer:
        # random 0: the first candidate is picked first; backoffs are halved.
        return SockShareBalancer(
            endpoints or self.endpoints, self.clock, random=lambda: 0.0, backoff=1, maxBackoff=4, **options
        )  # type: ignore[arg-type]

    def pendings(self, balancer: SockShareBalancer) -> list[int]:
        return [client.pending for client in balancer.endpointClients().values()]


class StatsTests(BalancerCase):
    def test_retriesAreNotFailures(self) -> None:
        """
        A request retried on another endpoint after a failed connect counts
        once in C{requests} and not in C{failures}: the balancer's own
        attempt failed, not the caller's request.
        """
        balancer = self.balancer()
        d = balancer.request(b"x")
        self.endpoints[0].last.fail(ConnectionRefusedError())
        self.endpoints[1].last.succeed()
        self.endpoints[1].last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")
        stats = balancer.stats()
        self.assertEqual((stats["requests"], stats["responses"], stats["failures"]), (1, 1, 0))
        self.assertEqual((stats["retries"], stats["connectFailures"]), (1, 1))
        self.assertEqual(
            stats["requests"], stats["responses"] + stats["remoteErrors"] + stats["failures"] + stats["pending"]
        )


class OutlierTests(BalancerCase):
    def connected(self, count: int = 3) -> SockShareBalancer:
        """
        A balancer over C{count} endpoints whose first is connected and idle,
        and that never closes idle connections.  Every request goes to the
        first endpoint up: these tests count failures in a row on one
        endpoint, which its latency average would otherwise steer traffic
        away from after the first timeout.
        """
        balancer = self.balancer(self.endpoints[:count], idleTimeout=None, pingTimeout=10_000)
        balancer._membership.choose = lambda candidates, now: candidates[0]  # type: ignore[method-assign]
        balancer._membership.firstChoice = lambda now: None  # type: ignore[method-assign]
        d = balancer.request(b"first")
        attempt = self.endpoints[0].last
        attempt.succeed()
        attempt.respond(0, b"ok")
        self.successResultOf(d)
        return balancer

    def timeOut(self, balancer: SockShareBalancer, count: int) -> None:
        """Time out C{count} requests in a row on the first endpoint."""
        for _ in range(count):
            d = balancer.request(b"slow")
            self.clock.advance(31)  # requestTimeout is 30 s
            self.failureResultOf(d, RequestTimeout)

    def test_timeoutsEject(self) -> None:
        """
        L{OUTLIER_STREAK} requests in a row timing out on one endpoint eject
        it for a backoff period: the traffic moves to the others, then it
        comes back.
        """
        balancer = self.connected()
        self.timeOut(balancer, OUTLIER_STREAK)
        self.assertEqual(balancer.stats()["ejections"], 1)
        self.assertEqual([s["down"] for s in balancer.endpointStats().values()], [1, 0, 0])
        balancer.request(b"elsewhere")
        self.assertEqual(len(self.endpoints[1].attempts), 1)
        self.clock.advance(0.5)  # the first ejection's (halved) period
        self.assertEqual(balancer.stats()["endpointsDown"], 0)

    def test_neverMoreThanHalf(self) -> None:
        """
        Outlier ejection never takes out more than half of the endpoints: a
        lone endpoint stays in use, however it fails; of two, one may go.
        """
        balancer = self.connected(1)
        self.timeOut(balancer, OUTLIER_STREAK * 2)
        self.assertEqual((balancer.stats()["ejections"], balancer.stats()["endpointsDown"]), (0, 0))
        self.endpoints[0] = FakeEndpoint()
        balancer = self.connected(2)
        self.timeOut(balancer, OUTLIER_STREAK)
        self.assertEqual((balancer.stats()["ejections"], balancer.stats()["endpointsDown"]), (1, 1))

    def test_successResetsStreak(self) -> None:
        """A success between failures resets the streak: nothing is ejected."""
        balancer = self.connected()
        attempt = self.endpoints[0].last
        self.timeOut(balancer, OUTLIER_STREAK - 1)
        d = balancer.request(b"ok")
        attempt.respond(attempt.sentRequests()[-1][0], b"ok")
        self.successResultOf(d)
        self.timeOut(balancer, OUTLIER_STREAK - 1)
        self.assertEqual(balancer.stats()["ejections"], 0)


class RetryTests(BalancerCase):
    def test_idempotentRetriedOnce(self) -> None:
        """
        An idempotent request lost with its connection is sent once more on
        another endpoint; a second loss fails it.
        """
        balancer = self.balancer()
        d = balancer.request(b"x", idempotent=True)
        self.endpoints[0].last.succeed()
        self.endpoints[0].last.drop()
        self.assertNoResult(d)
        self.endpoints[1].last.succeed()
        self.endpoints[1].last.drop()
        self.failureResultOf(d, ConnectionDropped)
        self.assertEqual(len(self.endpoints[2].attempts), 0)
        stats = balancer.stats()
        self.assertEqual((stats["retries"], stats["requests"], stats["failures"]), (1, 1, 1))

    def test_notIdempotentNotRetried(self) -> None:
        """By default a request lost with its connection fails: the backend may have acted on it."""
        balancer = self.balancer()
        d = balancer.request(b"x")
        self.endpoints[0].last.succeed()
        self.endpoints[0].last.drop()
        self.failureResultOf(d, ConnectionDropped)
        self.assertEqual(balancer.stats()["retries"], 0)

    def test_budget(self) -> None:
        """
        Retries stay within 10% of the last 10 s's requests plus 10 a
        second: a flapping backend does not double the load.
        """
        balancer = self.balancer(self.endpoints[:2], maxPending=100_000)
        self.endpoints[0].attempts.clear()
        results = [balancer.request(b"%d" % i, idempotent=True) for i in range(2000)]
        first = self.endpoints[0].last
        first.succeed()
        first.speakV2()  # the server's first frame: every request is written
        first.drop()  # every request on endpoint 0 is lost at once
        self.endpoints[1].last.succeed()
        retries = balancer.stats()["retries"]
        self.assertEqual(retries, int(0.1 * 2000 + 10 * 10))
        dropped = [d for d in results if d.called]
        self.assertEqual(len(dropped), 1000 - retries)
        for d in dropped:
            self.failureResultOf(d, ConnectionDropped)


class MembershipTests(BalancerCase):
    def test_addedTakesRequestsAtOnce(self) -> None:
        """A new endpoint takes requests at once; those already there keep their client."""
        balancer = self.balancer(self.endpoints[:1])
        client = balancer.endpointClients()
        balancer.setEndpoints(self.endpoints[:2])
        self.assertIs(balancer.endpointClients()[next(iter(client))], next(iter(client.values())))
        balancer.request(b"a")
        balancer.request(b"b")
        self.assertEqual([len(e.attempts) for e in self.endpoints[:2]], [1, 1])
        self.assertEqual(balancer.stats()["endpoints"], 2)

    def test_removedFinishesThenCloses(self) -> None:
        """
        A removed endpoint takes no new request, answers those it has, then
        closes; its counters stay in the balancer's.
        """
        balancer = self.balancer(self.endpoints[:2])
        d = balancer.request(b"on 0")
        attempt = self.endpoints[0].last
        attempt.succeed()
        balancer.setEndpoints(self.endpoints[1:2])
        balancer.request(b"on 1")
        self.assertEqual(len(self.endpoints[0].attempts), 1)
        self.assertEqual(len(self.endpoints[1].attempts), 1)
        self.assertFalse(attempt.transport.disconnecting)
        attempt.respond(0, b"answered")
        self.assertEqual(self.successResultOf(d), b"answered")
        self.assertTrue(attempt.transport.disconnecting)
        attempt.lose()
        stats = balancer.stats()
        self.assertEqual((stats["responses"], stats["pending"], stats["endpoints"]), (1, 1, 1))

    def test_emptyKeepsMembership(self) -> None:
        """An empty membership is refused: the balancer keeps the one it has."""
        balancer = self.balancer()
        self.assertRaises(ValueError, balancer.setEndpoints, [])
        self.assertEqual(balancer.stats()["endpoints"], 3)

    def test_priorityAndWeight(self) -> None:
        """
        Requests go to the lowest priority's endpoints, in proportion to
        their weights; a higher priority takes them when all of it is down.
        """
        import random

        balancer = SockShareBalancer(
            [Target(self.endpoints[0], 0, 3), Target(self.endpoints[1], 0, 1), Target(self.endpoints[2], 1, 100)],
            self.clock,
            random=random.Random(4).random,
            maxPending=100_000,
        )  # type: ignore[arg-type]
        for i in range(400):
            balancer.request(b"%d" % i)
        counts = self.pendings(balancer)
        self.assertEqual(counts[2], 0)
        self.assertGreater(counts[0], counts[1])
        for endpoint in self.endpoints[:2]:
            endpoint.last.fail(ConnectionRefusedError())
        d = balancer.request(b"fallback")
        self.assertEqual(len(self.endpoints[2].attempts), 1)
        self.assertNoResult(d)
        self.failureResultOf(
            SockShareBalancer([FakeEndpoint()], self.clock).request(b"x"), ConnectFailed
        ) if False else None


class EjectionBackoffTests(BalancerCase):
    def setUp(self) -> None:
        super().setUp()
        # Four endpoints, so that two may be ejected at once.
        self.endpoints.append(FakeEndpoint())

    def dropStreak(self, balancer: SockShareBalancer, index: int) -> None:
        """
        Five requests in a row go to endpoint C{index} (the first one up,
        with random 0) and are dropped with their connection.
        """
        for _ in range(OUTLIER_STREAK):
            d = balancer.request(b"x")
            self.endpoints[index].last.succeed()
            self.endpoints[index].last.drop()
            self.failureResultOf(d, ConnectionDropped)

    def down(self, balancer: SockShareBalancer) -> list[int]:
        return [stats["down"] for stats in balancer.endpointStats().values()]

    def test_backoffPerMember(self) -> None:
        """Ejections of one member do not lengthen the first ejection of another (base backoff, halved: 0.5 s)."""
        balancer = self.balancer()
        for _ in range(3):
            self.dropStreak(balancer, 0)
            self.clock.advance(2.5)  # past the longest of these (2 s)
        self.dropStreak(balancer, 0)  # its fourth: 2 s
        self.dropStreak(balancer, 1)  # its first
        self.assertEqual(balancer.stats()["ejections"], 5)
        self.assertEqual(self.down(balancer), [1, 1, 0, 0])
        self.clock.advance(0.6)
        self.assertEqual(self.down(balancer), [1, 0, 0, 0])
        self.clock.advance(1.5)
        self.assertEqual(self.down(balancer), [0, 0, 0, 0])

    def test_answerResetsTheBackoff(self) -> None:
        """A member that answers after an ejection starts its next ejection from the base backoff."""
        balancer = self.balancer()
        for _ in range(2):
            self.dropStreak(balancer, 0)
            self.clock.advance(2.5)
        d = balancer.request(b"x")
        self.endpoints[0].last.succeed()
        self.endpoints[0].last.respond(0, b"ok")
        self.successResultOf(d)
        self.endpoints[0].last.drop()
        self.dropStreak(balancer, 0)
        self.clock.advance(0.6)
        self.assertEqual(self.down(balancer), [0, 0, 0, 0])

    def test_closeCancelsReadmission(self) -> None:
        """close() cancels the timer that would re-admit an ejected member."""
        balancer = self.balancer()
        self.dropStreak(balancer, 0)
        self.assertEqual(self.down(balancer), [1, 0, 0, 0])
        self.successResultOf(balancer.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClosedBalancerTests(BalancerCase):
    def test_requestAfterClose(self) -> None:
        """After close(), a request fails at once with ClientClosed (not ConnectFailed) and schedules nothing."""
        balancer = self.balancer()
        self.successResultOf(balancer.close())
        failure = self.failureResultOf(balancer.request(b"x"), ClientClosed)
        self.assertIn("closed", failure.getErrorMessage())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(balancer.stats()["rejected"], 1)

    def test_cancelReachesTheEndpoint(self) -> None:
        """Cancelling a balancer's request cancels it on its endpoint: pending returns to 0, CANCEL is sent."""
        balancer = self.balancer()
        d = balancer.request(b"x")
        self.endpoints[0].last.succeed()
        self.assertEqual(balancer.pending, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(balancer.pending, 0)
        self.assertEqual(len(self.endpoints[0].last.sentFrames(CANCEL)), 1)
        stats = balancer.stats()
        self.assertEqual((stats["cancelled"], stats["requests"], stats["failures"]), (1, 1, 1))

    def test_optionsCheckedWhenMade(self) -> None:
        """A misspelt client option is refused by the balancer's constructor, naming it."""
        with self.assertRaises(TypeError) as raised:
            self.balancer(requestTimout=5)
        self.assertIn("requestTimout", str(raised.exception))
        with self.assertRaises(ValueError):
            self.balancer(idleTimeout=-1)


class ChoiceTests(SynchronousTestCase):
    @given(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=8),
        st.lists(st.floats(0, 0.9999), min_size=2, max_size=2),
        st.lists(st.floats(0, 0.01), min_size=8, max_size=8),
    )
    def test_firstChoiceIsTheChoice(
        self, targets: list[tuple[int, int]], draws: list[float], latencies: list[float]
    ) -> None:
        """
        While every member is up, a request's first choice (without a scan of
        the membership) picks what the full choice picks from the same random
        numbers, whatever the priorities, weights and latencies.
        """
        clock = Clock()
        if not any(weight for _, weight in targets):
            targets[0] = (targets[0][0], 1)
        endpoints = [
            Target(f"tcp:127.0.0.1:{9000 + i}", priority, weight) for i, (priority, weight) in enumerate(targets)
        ]
        numbers: list[float] = []
        balancer = SockShareBalancer(endpoints, clock, random=lambda: numbers.pop(0))
        for member, latency in zip(balancer._membership.members, latencies, strict=False):
            member.latency = latency
        numbers[:] = list(draws)
        fast = balancer._membership.firstChoice(0.0)
        numbers[:] = list(draws)
        full = balancer._membership.choose(balancer._membership.available(set()), 0.0)
        self.assertIs(fast, full)
