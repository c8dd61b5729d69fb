"""
Tests of L{SockSharePool} and L{SockShareBalancer}: with fakes, and on
loopback with a backend that dies.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_sockshare import ClientClosed, ConnectFailed, ConnectionDropped, SockShareServerFactory
from twisted_sockshare.balancer import SockShareBalancer
from twisted_sockshare.pool import SockSharePool

from .contract import LoopbackReactor
from .faults import FaultyBackend, openFileDescriptors
from .helpers import FakeEndpoint


class PoolTests(SynchronousTestCase):
    def test_oneClientPerDestination(self) -> None:
        """Requests to one destination share its client; each destination has its own, made lazily."""
        clock = Clock()
        pool = SockSharePool(clock, idleTimeout=0)
        a, b = FakeEndpoint(), FakeEndpoint()
        self.assertEqual(pool.destinations, [])
        d1 = pool.request("a", b"1", a)
        d2 = pool.request("a", b"2", a)
        d3 = pool.request("b", b"3", b)
        self.assertIs(pool.clientFor("a"), pool.clientFor("a", a))
        self.assertEqual((len(a.attempts), len(b.attempts)), (1, 1))
        self.assertEqual(sorted(pool.destinations), ["a", "b"])
        a.last.succeed()
        b.last.succeed()
        for requestId, _ in a.last.sentRequests():
            a.last.respond(requestId, b"ok")
        self.assertEqual([self.successResultOf(d) for d in (d1, d2)], [b"ok", b"ok"])
        a.last.lose()
        self.assertEqual(pool.destinations, ["b"])  # a is idle and closed: dropped
        stats = pool.stats()
        self.assertEqual((stats["a"]["responses"], stats["a"]["connectionsOpened"]), (2, 1))
        self.assertEqual(stats["b"]["pending"], 1)
        closed = pool.close()
        self.failureResultOf(pool.request("c", b"x", FakeEndpoint()), ClientClosed)
        b.last.respond(0, b"3")
        self.assertEqual(self.successResultOf(d3), b"3")
        b.last.lose()
        self.successResultOf(closed)

    def test_keepsTheBackoffOfADestinationThatIsDown(self) -> None:
        """Five requests to a destination that refuses: one connect attempt, as from a bare client."""
        reactor = LoopbackReactor()  # nothing listens: every connect is refused at once
        pool = SockSharePool(reactor)
        for _ in range(5):
            self.failureResultOf(pool.request("tcp:127.0.0.1:9009", b"x"), ConnectFailed)
        self.assertEqual(len(reactor.tcpClients), 1)
        self.assertEqual(pool.destinations, ["tcp:127.0.0.1:9009"])
        self.assertEqual(pool.stats()["tcp:127.0.0.1:9009"]["connectFailures"], 1)
        # Once it answers, its client is dropped when idle, as any other.
        reactor.servers[9009] = SockShareServerFactory(bytes.upper, clock=reactor)
        reactor.advance(10)
        self.assertEqual(self.successResultOf(pool.request("tcp:127.0.0.1:9009", b"x")), b"X")
        reactor.advance(10)
        self.assertEqual(pool.destinations, [])
        self.successResultOf(pool.close())

    def test_endpointStrings(self) -> None:
        """A destination may be an endpoint string."""
        pool = SockSharePool(Clock())
        client = pool.clientFor("tcp:127.0.0.1:9999")
        self.assertEqual(client.endpointDescription, "tcp:127.0.0.1:9999")
        self.assertRaises(ValueError, SockSharePool, Clock(), maxPending=0)


class BalancerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints = [FakeEndpoint(), FakeEndpoint(), FakeEndpoint()]
        # random 0: the first of the candidates is picked first, and the
        # backoff periods are half their nominal length.
        self.balancer = SockShareBalancer(self.endpoints, self.clock, random=lambda: 0.0, backoff=1, maxBackoff=4)  # type: ignore[arg-type]

    def pendings(self, balancer: SockShareBalancer) -> list[int]:
        return [client.pending for client in balancer.endpointClients().values()]

    def test_powerOfTwoChoices(self) -> None:
        """
        Each request goes to the less busy of two endpoints picked at
        random; on a tie, to the first picked.
        """
        picks = iter([0.0, 0.0, 0.0, 0.0, 0.9, 0.9, 0.5, 0.9])
        balancer = SockShareBalancer(self.endpoints, self.clock, random=lambda: next(picks))  # type: ignore[arg-type]
        balancer.request(b"1")  # picks 0 then 1: a tie, so 0
        self.assertEqual(self.pendings(balancer), [1, 0, 0])
        balancer.request(b"2")  # picks 0 then 1: 1 is less busy
        self.assertEqual(self.pendings(balancer), [1, 1, 0])
        balancer.request(b"3")  # picks 2 then 1: 2 is idle
        self.assertEqual(self.pendings(balancer), [1, 1, 1])
        balancer.request(b"4")  # picks 1 then 2: a tie, so 1
        self.assertEqual(self.pendings(balancer), [1, 2, 1])
        self.assertEqual(balancer.pending, 4)

    def test_noHerding(self) -> None:
        """
        Many fresh balancers (each with its own random numbers) do not all
        send their first request to the same endpoint.
        """
        import random

        firsts = [0, 0, 0]
        for seed in range(90):
            endpoints = [FakeEndpoint(), FakeEndpoint(), FakeEndpoint()]
            SockShareBalancer(endpoints, self.clock, random=random.Random(seed).random).request(b"x")  # type: ignore[arg-type]
            firsts[[len(e.attempts) for e in endpoints].index(1)] += 1
        self.assertEqual(sum(firsts), 90)
        self.assertTrue(all(count >= 20 for count in firsts), firsts)

    def test_failoverAndBackoff(self) -> None:
        """A failed connect skips the endpoint for a growing backoff, and the request goes elsewhere."""
        d = self.balancer.request(b"x")
        self.endpoints[0].last.fail(ConnectionRefusedError())
        self.assertNoResult(d)
        self.assertEqual(len(self.endpoints[1].attempts), 1)
        self.endpoints[1].last.succeed()
        self.endpoints[1].last.respond(0, b"from 1")
        self.assertEqual(self.successResultOf(d), b"from 1")
        self.assertEqual(self.balancer.stats()["endpointsDown"], 1)
        self.clock.advance(1)
        self.assertEqual(self.balancer.stats()["endpointsDown"], 0)
        # Down again: the backoff doubles.
        self.balancer.request(b"y").addErrback(lambda f: None)
        self.endpoints[0].last.fail(ConnectionRefusedError())
        self.clock.advance(0.75)
        self.assertEqual([s["down"] for s in self.balancer.endpointStats().values()], [1, 0, 0])
        self.clock.advance(0.25)
        self.assertEqual(self.balancer.stats()["endpointsDown"], 0)

    def test_oneFailedConnectCountsOnce(self) -> None:
        """Many requests waiting on one failed connect count as one failure: the backoff does not jump to its cap."""
        balancer = SockShareBalancer(
            self.endpoints[:1] + self.endpoints[1:2], self.clock, random=lambda: 1.0, backoff=1, maxBackoff=60
        )  # type: ignore[arg-type]
        for i in range(16):
            balancer.request(b"%d" % i).addErrback(lambda f: None)
        self.endpoints[0].attempts[0].fail(ConnectionRefusedError())
        self.clock.advance(1)
        self.assertEqual(balancer.stats()["endpointsDown"], 0)

    def test_allDownFailsFast(self) -> None:
        """With every endpoint down, requests fail at once with ConnectFailed instead of queueing."""
        d = self.balancer.request(b"x")
        for endpoint in self.endpoints:
            endpoint.last.fail(ConnectionRefusedError())
        f = self.failureResultOf(d, ConnectFailed)
        self.assertIn("all 3 endpoints are down", str(f.value))
        f = self.failureResultOf(self.balancer.request(b"y"), ConnectFailed)
        self.assertIn("next retry in", str(f.value))
        self.assertEqual([len(e.attempts) for e in self.endpoints], [1, 1, 1])

    def test_droppedNotRetried(self) -> None:
        """A request lost with its connection is not sent again elsewhere (the backend may have acted on it)."""
        d = self.balancer.request(b"x")
        self.endpoints[0].last.succeed()
        self.endpoints[0].last.drop()
        self.failureResultOf(d, ConnectionDropped)
        self.assertEqual([len(e.attempts) for e in self.endpoints], [1, 0, 0])

    def test_badOptions(self) -> None:
        self.assertRaises(ValueError, SockShareBalancer, [], Clock())
        self.assertRaises(ValueError, SockShareBalancer, [FakeEndpoint()], Clock(), backoff=0)


class BalancerLoopbackTests(TestCase):
    timeout = 30

    async def test_failoverUnderLoad(self) -> None:
        """One of two backends dies under load: after it, every request goes to the other; none is lost."""
        fds = openFileDescriptors()
        backends = [FaultyBackend(reactor), FaultyBackend(reactor)]
        for backend in backends:
            await backend.start()
        balancer = SockShareBalancer([b.endpoint() for b in backends], reactor, backoff=5)
        first = await gatherResults([balancer.request(b"%d" % i) for i in range(100)])
        self.assertEqual(first, [b"%d" % i for i in range(100)])
        self.assertTrue(all(b.requests > 0 for b in backends))
        await backends[0].stop()
        served = backends[1].requests
        outcomes = []
        for i in range(100):
            try:
                outcomes.append(await balancer.request(b"after %d" % i))
            except ConnectionDropped:
                outcomes.append(b"dropped")
        self.assertEqual(outcomes[-90:], [b"after %d" % i for i in range(10, 100)])
        self.assertGreaterEqual(backends[1].requests - served, 90)
        await balancer.close()
        await backends[1].stop()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(openFileDescriptors(), fds)


class PoolLoopbackTests(TestCase):
    timeout = 30

    async def test_twoDestinations(self) -> None:
        """Concurrent requests to two real servers share one connection each; idle clients are dropped."""
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from twisted_sockshare import SockShareServerFactory

        fds = openFileDescriptors()
        ports = [
            await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(SockShareServerFactory(handler))
            for handler in (bytes.upper, bytes.lower)
        ]
        upper, lower = (f"tcp:127.0.0.1:{port.getHost().port}" for port in ports)
        pool = SockSharePool(reactor, idleTimeout=0)
        replies = await gatherResults(
            [pool.request(upper, b"Ab%d" % i) for i in range(50)]
            + [pool.request(lower, b"Ab%d" % i) for i in range(50)]
        )
        self.assertEqual(replies, [b"AB%d" % i for i in range(50)] + [b"ab%d" % i for i in range(50)])
        stats = pool.stats()
        self.assertEqual([stats[d]["connectionsOpened"] for d in (upper, lower)], [1, 1])
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(pool.destinations, [])
        self.assertEqual(pool.stats()[upper]["responses"], 50)
        await pool.close()
        for port in ports:
            await port.stopListening()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(openFileDescriptors(), fds)


class ImportPathTests(SynchronousTestCase):
    def test_balancerStillImportableFromPool(self) -> None:
        """twisted_sockshare.pool.SockShareBalancer, the name it was published under, is the balancer."""
        from twisted_sockshare import pool

        self.assertIs(pool.SockShareBalancer, SockShareBalancer)
