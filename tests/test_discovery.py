"""
A balancer's membership from DNS, with a fake resolver and a fake reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ClientClosed, ConnectFailed
from twisted_sockshare.balancer import SockShareBalancer
from twisted_sockshare.discovery import endpointString, isServiceName


def srv(target: str, port: int, priority: int = 0, weight: int = 1) -> dns.RRHeader:
    return dns.RRHeader(type=dns.SRV, payload=dns.Record_SRV(priority, weight, port, target))


def a(address: str) -> dns.RRHeader:
    return dns.RRHeader(type=dns.A, payload=dns.Record_A(address))


def aaaa(address: str) -> dns.RRHeader:
    return dns.RRHeader(type=dns.AAAA, payload=dns.Record_AAAA(address))


class FakeResolver:
    """
    Answers from C{records} (name to records, or an exception); a name in
    C{held} answers only when the test fires its Deferred.
    """

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.held: dict[str, Deferred[Any]] = {}
        self.lookups: list[str] = []

    def _lookup(self, name: str, kinds: tuple[int, ...]) -> Deferred[Any]:
        self.lookups.append(name)
        if name in self.held:
            return self.held[name]
        answer = self.records.get(name, DNSNameError(name))
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(([rr for rr in answer if rr.type in kinds], [], []))

    def lookupService(self, name: str) -> Deferred[Any]:
        return self._lookup(name, (dns.SRV,))

    def lookupAddress(self, name: str) -> Deferred[Any]:
        return self._lookup(name, (dns.A,))

    def lookupIPV6Address(self, name: str) -> Deferred[Any]:
        return self._lookup(name, (dns.AAAA,))


SERVICE = "_sockshare._tcp.example.test"


class DiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver()
        self.resolver.records = {
            SERVICE: [srv("one.example.test", 9001), srv("10.0.0.2", 9002, weight=3)],
            "one.example.test": [a("10.0.0.1"), aaaa("fd00::1")],
        }

    def balancer(self, name: str = SERVICE, **options: Any) -> SockShareBalancer:
        balancer = SockShareBalancer.fromDNS(
            name, self.reactor, resolver=self.resolver, refreshInterval=30.0, idleTimeout=None, **options
        )
        self.addCleanup(balancer.close)
        return balancer

    def connected(self) -> list[tuple[str, int]]:
        return [(host, port) for host, port, *_ in self.reactor.tcpClients]

    def test_names(self) -> None:
        """SRV names look like _service._tcp.domain; the rest are A/AAAA names."""
        self.assertTrue(isServiceName(SERVICE))
        self.assertFalse(isServiceName("backend.example.test"))
        self.assertFalse(isServiceName("_tcp.example.test"))
        self.assertEqual(endpointString("10.0.0.1", 9000), "tcp:host=10.0.0.1:port=9000")
        self.assertEqual(endpointString("fd00::1", 9000), "tcp:host=fd00\\:\\:1:port=9000")

    def test_srv(self) -> None:
        """
        An SRV name's targets become the members, each resolved through the
        same resolver (A and AAAA), or taken as they are if IP literals.
        """
        balancer = self.balancer()
        self.assertEqual(
            sorted(balancer.endpoints),
            sorted(["tcp:host=fd00\\:\\:1:port=9001", "tcp:host=10.0.0.1:port=9001", "tcp:host=10.0.0.2:port=9002"]),
        )
        self.assertEqual(self.resolver.lookups, [SERVICE, "one.example.test", "one.example.test"])

    def test_addressName(self) -> None:
        """Any other name is an A/AAAA lookup on the given port; without a port it is refused."""
        self.resolver.records["backend.example.test"] = [a("10.0.0.7"), a("10.0.0.8")]
        balancer = self.balancer("backend.example.test", port=9000)
        self.assertEqual(balancer.endpoints, ["tcp:host=10.0.0.7:port=9000", "tcp:host=10.0.0.8:port=9000"])
        self.assertRaises(
            ValueError, SockShareBalancer.fromDNS, "backend.example.test", self.reactor, resolver=self.resolver
        )

    def test_refreshAddsAndRemoves(self) -> None:
        """
        Every refreshInterval the name is looked up again: a new member takes
        requests, a removed one takes none and closes once its requests are done.
        """
        balancer = self.balancer()
        self.resolver.records[SERVICE] = [srv("10.0.0.2", 9002), srv("10.0.0.3", 9003)]
        self.reactor.advance(29)
        self.assertEqual(len(balancer.endpoints), 3)
        self.reactor.advance(1)
        self.assertEqual(sorted(balancer.endpoints), ["tcp:host=10.0.0.2:port=9002", "tcp:host=10.0.0.3:port=9003"])
        for i in range(4):
            balancer.request(b"%d" % i)
        self.assertEqual(sorted(set(self.connected())), [("10.0.0.2", 9002), ("10.0.0.3", 9003)])
        self.assertEqual(balancer.stats()["endpoints"], 2)

    def test_failureKeepsMembership(self) -> None:
        """A failed lookup, or an empty answer, keeps the last membership and is counted."""
        balancer = self.balancer()
        self.resolver.records[SERVICE] = DNSServerError("SERVFAIL")
        self.reactor.advance(30)
        self.assertEqual(len(balancer.endpoints), 3)
        self.resolver.records[SERVICE] = []
        self.reactor.advance(30)
        self.assertEqual(len(balancer.endpoints), 3)
        self.assertEqual(balancer.stats()["discoveryFailures"], 2)
        self.resolver.records[SERVICE] = [srv("10.0.0.9", 9009)]
        self.reactor.advance(30)
        self.assertEqual(balancer.endpoints, ["tcp:host=10.0.0.9:port=9009"])

    def test_requestsWaitForTheFirstAnswer(self) -> None:
        """Requests made before the first answer wait for it, then go to a member."""
        answer = self.resolver.held[SERVICE] = Deferred()
        balancer = self.balancer()
        d = balancer.request(b"early")
        self.assertNoResult(d)
        self.assertEqual(self.connected(), [])
        answer.callback(([srv("10.0.0.5", 9005)], [], []))
        self.assertEqual(self.connected(), [("10.0.0.5", 9005)])
        self.assertNoResult(d)

    def test_noAnswerFailsAfterConnectTimeout(self) -> None:
        """
        Requests made while the name does not resolve fail after
        connectTimeout with ConnectFailed naming the DNS error.
        """
        self.resolver.records[SERVICE] = DNSNameError(SERVICE)
        balancer = self.balancer(connectTimeout=5.0)
        d = balancer.request(b"x")
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        f = self.failureResultOf(d, ConnectFailed)
        self.assertIn(
            f"no endpoint for {SERVICE} after 5.0 s: DNS lookup of {SERVICE} failed: DNSNameError", str(f.value)
        )

    def test_closeBeforeAnswer(self) -> None:
        """Closing before the first answer fails the waiting requests and stops the lookups."""
        self.resolver.held[SERVICE] = Deferred()
        balancer = self.balancer()
        d = balancer.request(b"x")
        balancer.close()
        self.failureResultOf(d, ClientClosed)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_cancelWhileWaitingForTheFirstAnswer(self) -> None:
        """A request cancelled before the first answer fails at once, frees its timer, and is never sent."""
        answer = self.resolver.held[SERVICE] = Deferred()
        balancer = self.balancer(connectTimeout=5.0)
        d = balancer.request(b"cancelled")
        self.assertEqual(balancer.pending, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(balancer.pending, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        answer.callback(([srv("10.0.0.5", 9005)], [], []))
        self.assertEqual(self.connected(), [])
        stats = balancer.stats()
        self.assertEqual((stats["requests"], stats["cancelled"], stats["failures"]), (1, 1, 1))

    def test_closedWhileLookingUp(self) -> None:
        """An answer that comes after close() makes no client; a request after close() schedules nothing."""
        answer = self.resolver.held[SERVICE] = Deferred()
        balancer = self.balancer()
        self.successResultOf(balancer.close())
        answer.callback(([srv("10.0.0.5", 9005)], [], []))
        self.assertEqual(balancer.endpoints, [])
        self.failureResultOf(balancer.request(b"late"), ClientClosed)
        self.assertEqual(self.connected(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_optionsCheckedWhenMade(self) -> None:
        """fromDNS refuses a misspelt or out-of-range client option at once, not at the first answer."""
        with self.assertRaises(TypeError) as raised:
            SockShareBalancer.fromDNS(SERVICE, self.reactor, resolver=self.resolver, requestTimout=5)
        self.assertIn("requestTimout", str(raised.exception))
        with self.assertRaises(ValueError) as negative:
            SockShareBalancer.fromDNS(SERVICE, self.reactor, resolver=self.resolver, idleTimeout=-1)
        self.assertIn("idleTimeout", str(negative.exception))
        self.assertEqual(self.resolver.lookups, [])

    def test_connectFailureRefreshesEarly(self) -> None:
        """A member that cannot be reached brings the next lookup forward, at most once a second."""
        balancer = self.balancer()
        self.reactor.advance(1)
        lookups = len(self.resolver.lookups)

        def failOne() -> None:
            balancer.request(b"x").addErrback(lambda f: None)
            connector = self.reactor.connectors[-1]
            self.reactor.tcpClients[-1][2].clientConnectionFailed(connector, Exception("refused"))

        failOne()
        self.assertEqual(self.resolver.lookups[lookups], SERVICE)
        lookups = len(self.resolver.lookups)
        failOne()  # within the second: no lookup
        self.assertEqual(len(self.resolver.lookups), lookups)
