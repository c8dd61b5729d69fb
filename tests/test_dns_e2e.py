"""
Discovery against a real DNS server: dnsmasq (Debian's, installed by
.ci/run) serves SRV records for backends on loopback; a balancer made with
C{SockShareBalancer.fromDNS} follows its membership as it changes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections import Counter
from unittest import SkipTest

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.names import client
from twisted.trial.unittest import TestCase

from twisted_sockshare import SockShareBalancer, SockShareServerFactory

from .helpers import waitUntil

SERVICE = "_sockshare._tcp.example.test"


def _dnsmasq() -> str:
    path = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError("dnsmasq is not installed; .ci/run installs it: apt-get install dnsmasq-base")
        raise SkipTest("dnsmasq is not installed (apt-get install dnsmasq-base); .ci/run installs it")
    return path


def _freePort() -> int:
    """
    A loopback port free for both UDP and TCP: dnsmasq listens on both.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no loopback port free for both UDP and TCP")


class DNSServer:
    """
    dnsmasq on a loopback port, serving SRV records for C{SERVICE}; restarted
    (on the same port) to change them.
    """

    def __init__(self) -> None:
        self.path = _dnsmasq()
        self.port = _freePort()
        self.process: subprocess.Popen[bytes] | None = None

    async def serve(self, ports: list[int]) -> None:
        self.stop()
        args = [
            self.path, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
            "--user=" + (os.environ.get("USER") or "root"), "--host-record=backends.example.test,127.0.0.1",
        ]  # fmt: skip
        args += [f"--srv-host={SERVICE},backends.example.test,{port}" for port in ports]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        resolver = client.Resolver(servers=[("127.0.0.1", self.port)], reactor=reactor)
        last: object = None
        for _ in range(100):
            if self.process.poll() is not None:
                break
            try:
                answers, _, _ = await resolver.lookupService(SERVICE, timeout=(0.2,))
                last = sorted(rr.payload.port for rr in answers)
                if last == sorted(ports):
                    return
            except Exception as e:
                last = e
            await deferLater(reactor, 0.05)
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=10)
        self.process = None
        raise AssertionError(
            f"dnsmasq did not serve {ports} on port {self.port} (last answer: {last!r}): {stderr.decode()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.communicate(timeout=10)
            self.process = None


class DNSDiscoveryTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.dns = DNSServer()
        self.addCleanup(self.dns.stop)
        self.ports = {}
        for name in ("b1", "b2", "b3"):
            port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                SockShareServerFactory(lambda payload, name=name: name.encode() + b":" + payload)
            )
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port

    async def spread(self, balancer: SockShareBalancer, count: int = 60) -> Counter[str]:
        """Send C{count} requests, 20 at a time; which backend answered each."""
        answered: Counter[str] = Counter()
        for start in range(0, count, 20):
            replies = await gatherResults([balancer.request(b"%d" % i) for i in range(start, start + 20)])
            answered.update(reply.split(b":")[0].decode() for reply in replies)
        return answered

    async def test_membershipFollowsDNS(self) -> None:
        """
        Requests spread over every member; a member added in DNS takes
        requests within a refresh; a removed one takes no new request and
        no request fails; with the DNS server stopped, the last membership
        keeps working.
        """
        await self.dns.serve([self.ports["b1"], self.ports["b2"]])
        resolver = client.Resolver(servers=[("127.0.0.1", self.dns.port)], reactor=reactor, timeout=(0.3,))
        balancer = SockShareBalancer.fromDNS(SERVICE, reactor, resolver=resolver, refreshInterval=0.5)
        # After closing, let a lookup still in flight end (0.3 s at most).
        self.addCleanup(lambda: balancer.close().addCallback(lambda _: deferLater(reactor, 0.5)))
        self.assertEqual(set(await self.spread(balancer)), {"b1", "b2"})

        await self.dns.serve([self.ports["b1"], self.ports["b2"], self.ports["b3"]])
        await waitUntil(lambda: len(balancer.endpoints) == 3, "b3 found in DNS")
        self.assertEqual(set(await self.spread(balancer)), {"b1", "b2", "b3"})

        # Removed while requests are in flight: none of them fails.
        inFlight = [balancer.request(b"in flight %d" % i) for i in range(50)]
        await self.dns.serve([self.ports["b2"], self.ports["b3"]])
        await waitUntil(lambda: len(balancer.endpoints) == 2, "b1 gone from DNS")
        self.assertEqual(len(await gatherResults(inFlight)), 50)
        self.assertEqual(set(await self.spread(balancer)), {"b2", "b3"})

        self.dns.stop()
        failures = balancer.stats()["discoveryFailures"]
        await waitUntil(lambda: balancer.stats()["discoveryFailures"] > failures, "a lookup failed")
        self.assertEqual(set(await self.spread(balancer)), {"b2", "b3"})
        stats = balancer.stats()
        self.assertGreater(stats["discoveryFailures"], 0)
        self.assertEqual((stats["failures"], stats["endpoints"]), (0, 2))
        # DNS back, so that no lookup is left waiting on a silent server.
        await self.dns.serve([self.ports["b2"], self.ports["b3"]])
        await deferLater(reactor, 1.0)


class DNSBalancingTests(TestCase):
    """
    Balancing over members found in DNS, on loopback: no herding, outliers
    ejected, idempotent retries within their budget.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.dns = DNSServer()
        self.addCleanup(self.dns.stop)
        self.resolver = client.Resolver(servers=[("127.0.0.1", self.dns.port)], reactor=reactor, timeout=(0.3,))
        self.balancers: list[SockShareBalancer] = []
        self.addCleanup(self.closeBalancers)

    def closeBalancers(self) -> Deferred[object]:
        """
        Close every balancer at once; then let a lookup still in flight end
        (0.3 s at most).  A Deferred, not a coroutine: trial before Twisted
        24 does not wait for a coroutine a cleanup returns.
        """
        closed: Deferred[object] = gatherResults([balancer.close() for balancer in self.balancers])
        return closed.addCallback(lambda _: deferLater(reactor, 0.5) if self.balancers else None)

    async def backend(self, name: str, handler: object = None) -> int:
        factory = SockShareServerFactory(handler or (lambda payload: name.encode() + b":" + payload))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def balancer(self, **options: object) -> SockShareBalancer:
        balancer = SockShareBalancer.fromDNS(SERVICE, reactor, resolver=self.resolver, **options)  # type: ignore[arg-type]
        self.balancers.append(balancer)
        return balancer

    async def test_noHerding(self) -> None:
        """Thirty fresh balancers' first requests spread over the members."""
        ports = [await self.backend(name) for name in ("b1", "b2", "b3")]
        await self.dns.serve(ports)
        firsts: Counter[str] = Counter()
        for _ in range(30):
            reply = await self.balancer().request(b"first")
            firsts[reply.split(b":")[0].decode()] += 1
        self.assertEqual(set(firsts), {"b1", "b2", "b3"}, firsts)
        self.assertLess(max(firsts.values()), 20, firsts)

    async def test_timeoutsEjectAndTrafficMoves(self) -> None:
        """
        A member that accepts requests but never answers is ejected after
        five timeouts in a row, and the traffic moves to the others.
        """
        from twisted.internet.defer import Deferred

        silent = await self.backend("silent", lambda payload: Deferred())
        ports = [silent, await self.backend("b1"), await self.backend("b2")]
        await self.dns.serve(ports)
        balancer = self.balancer(requestTimeout=0.2)
        results = await gatherResults(
            [balancer.request(b"%d" % i).addErrback(lambda f: f.type.__name__) for i in range(40)]
        )
        self.assertIn("RequestTimeout", results)
        self.assertEqual(balancer.stats()["ejections"], 1)
        after = await self.spreadOf(balancer, 40)
        self.assertEqual(set(after), {"b1", "b2"}, after)

    async def spreadOf(self, balancer: SockShareBalancer, count: int) -> Counter[str]:
        replies = await gatherResults([balancer.request(b"%d" % i) for i in range(count)])
        return Counter(reply.split(b":")[0].decode() for reply in replies)

    async def test_idempotentRetriesWithinBudget(self) -> None:
        """
        With a member that drops every connection after taking its requests,
        idempotent requests are retried on the other member, and the retries
        stay within 10% of the requests plus 10 a second.
        """
        from twisted.internet.protocol import Factory, Protocol

        class Dropper(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

        flapping = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Dropper))
        self.addCleanup(flapping.stopListening)
        await self.dns.serve([flapping.getHost().port, await self.backend("good")])
        balancer = self.balancer()
        results = await gatherResults(
            [balancer.request(b"%d" % i, idempotent=True).addErrback(lambda f: f.type.__name__) for i in range(300)]
        )
        stats = balancer.stats()
        self.assertGreater(stats["retries"], 0)
        self.assertLessEqual(stats["retries"], 0.1 * 300 + 10 * 10)
        self.assertEqual(stats["requests"], 300)
        # Each request was answered by the good member, or failed as dropped
        # when the budget allowed no retry.
        outcomes = Counter("good" if isinstance(r, bytes) and r.startswith(b"good:") else r for r in results)
        self.assertEqual(set(outcomes) - {"good", "ConnectionDropped"}, set(), outcomes)
        self.assertEqual(stats["failures"], outcomes["ConnectionDropped"])


class DNSGatewayTests(TestCase):
    """
    The demo gateway (twistd) with --backend-dns in front of twistd
    backends found through dnsmasq.
    """

    timeout = 120

    async def test_gatewayFollowsDNSAndDrains(self) -> None:
        """
        Every HTTP request is answered through the members DNS names,
        /stats shows each endpoint, and SIGTERM still drains and exits 0.
        """
        from twisted.internet.defer import ensureDeferred
        from twisted.web.client import Agent, HTTPConnectionPool

        from .helpers import readAll
        from .processes import Twistd
        from .test_e2e import _Body

        dns = DNSServer()
        self.addCleanup(dns.stop)
        backends = []
        for _ in range(2):
            backend = Twistd("sockshare-server", "--listen", "tcp:0:interface=127.0.0.1")
            self.addCleanup(backend.kill)
            await backend.started()
            backends.append(backend)
        await dns.serve([backend.port for backend in backends])
        gateway = Twistd(
            "sockshare-client", "--listen", "tcp:0:interface=127.0.0.1", "--backend-dns", SERVICE,
            "--dns-server", f"127.0.0.1:{dns.port}", "--dns-refresh", "1",
        )  # fmt: skip
        self.addCleanup(gateway.kill)
        await gateway.started()
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        base = b"http://127.0.0.1:%d" % gateway.port

        async def post(body: bytes) -> tuple[int, bytes]:
            response = await agent.request(b"POST", base + b"/request", None, _Body(body))
            return response.code, await readAll(response)

        replies = await gatherResults([ensureDeferred(post(b"%d" % i)) for i in range(40)])
        self.assertEqual(replies, [(200, b"%d" % i) for i in range(40)])
        response = await agent.request(b"GET", base + b"/stats")
        stats = json.loads(await readAll(response))
        self.assertEqual(len(stats["endpointStats"]), 2)
        self.assertEqual((stats["responses"], stats["failures"], stats["endpoints"]), (40, 0, 2))
        inFlight = ensureDeferred(post(b"!sleep 1"))

        async def atTheBackend() -> bool:
            response = await agent.request(b"GET", base + b"/stats")
            return bool(json.loads(await readAll(response))["pending"])

        await waitUntil(atTheBackend, "the request in flight at a backend")
        gateway.terminate()
        self.assertEqual(await inFlight, (200, b"slept"))
        self.assertEqual(await gateway.exited(), 0)
