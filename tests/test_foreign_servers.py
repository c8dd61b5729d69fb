"""
Servers this project did not write, through the DNS-over-TCP codec of
docs/examples/dns_codec.py: dnsmasq (a cap of 100 queries per TCP
connection, then a clean close) and Twisted's own DNS server (16-bit ids,
one connection kept open).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.names import client, dns, server
from twisted.trial.unittest import TestCase

from twisted_sockshare import SockShareClientFactory

from .test_dns_e2e import _dnsmasq, _freePort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples"))

from dns_codec import DNSCodec, Zone, answerName, query  # noqa: E402

#: The names dnsmasq and the Twisted server answer for.
NAMES = [f"h{i}.example.test" for i in range(50)]


def _address(name: str) -> str:
    return f"10.0.0.{NAMES.index(name)}"


class DNSMasq:
    """
    dnsmasq on a loopback port, answering A queries for L{NAMES}.
    """

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        self.port = _freePort()
        args = [
            _dnsmasq(), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
            "--user=" + (os.environ.get("USER") or "root"),
        ]  # fmt: skip
        args += [f"--host-record={name},{_address(name)}" for name in NAMES]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def ready(self) -> None:
        """
        Start dnsmasq and wait until it answers (within about 25 s); on a
        fresh port again if it exits at once (another process took the port
        between _freePort and its bind).
        """
        stderr = b""
        for _ in range(3):
            self._start()
            assert self.process is not None
            resolver = client.Resolver(servers=[("127.0.0.1", self.port)], reactor=reactor)
            for _ in range(100):
                if self.process.poll() is not None:
                    break
                try:
                    await resolver.lookupAddress(NAMES[0], timeout=(0.2,))
                    return
                except Exception:
                    await deferLater(reactor, 0.05)
            stderr = self.stop()
        raise AssertionError(f"dnsmasq did not answer on port {self.port}: {stderr.decode()[-2000:]}")

    def stop(self) -> bytes:
        """
        Stop dnsmasq: what it wrote on stderr.
        """
        process, self.process = self.process, None
        if process is None:
            return b""
        if process.poll() is None:
            process.terminate()
        return process.communicate(timeout=10)[1]


async def ask(client: SockShareClientFactory, count: int, **options: Any) -> list[object]:
    """
    Send C{count} queries at once, for L{NAMES} in turn: the name each
    answer is for, or the failure's type.
    """
    names = [NAMES[i % len(NAMES)] for i in range(count)]
    results = await DeferredList(
        [client.request(query(name), **options) for name in names],
        consumeErrors=True,
    )
    return [answerName(value) if ok else value.type for ok, value in results]


async def closedLoop(
    client: SockShareClientFactory, count: int, window: int, check: Callable[[str, bytes], bool]
) -> int:
    """
    Send C{count} queries, C{window} at a time (each answer sends the next):
    how many answers C{check} refused or failed.
    """
    done: Deferred[None] = Deferred()
    state = {"sent": 0, "left": count, "bad": 0}

    def sendOne() -> None:
        name = NAMES[state["sent"] % len(NAMES)]
        state["sent"] += 1

        def answered(reply: bytes) -> None:
            if not check(name, reply):
                state["bad"] += 1

        def failed(reason: object) -> None:
            state["bad"] += 1

        def next(_: object) -> None:
            state["left"] -= 1
            if state["sent"] < count:
                sendOne()
            elif state["left"] == 0:
                done.callback(None)

        client.request(query(name)).addCallbacks(answered, failed).addBoth(next)

    for _ in range(window):
        sendOne()
    await done
    return state["bad"]


class DNSMasqTests(TestCase):
    """
    dnsmasq answers at most 100 queries on a TCP connection, then closes it
    cleanly.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.dns = DNSMasq()
        self.addCleanup(self.dns.stop)
        await self.dns.ready()

    def client(self, **options: Any) -> SockShareClientFactory:
        client = SockShareClientFactory(f"tcp:127.0.0.1:{self.dns.port}", reactor, codec=DNSCodec(), **options)
        self.addCleanup(client.close)
        return client

    async def test_withoutCapDrops(self) -> None:
        """
        The server's cap, unknown to the client: 500 queries at once, 100
        answered, the rest dropped when dnsmasq closes the connection.
        """
        outcomes = await ask(self.client(), 500)
        self.assertEqual(sum(isinstance(o, str) for o in outcomes), 100)

    async def test_maxRequestsPerConnection(self) -> None:
        """
        With maxRequestsPerConnection=100, 2,000 queries at once all succeed,
        each answered for its own name, over 20 to 40 connections.
        """
        client = self.client(maxRequestsPerConnection=100)
        outcomes = await ask(client, 2000)
        self.assertEqual(outcomes, [NAMES[i % len(NAMES)] for i in range(2000)])
        stats = client.stats()
        self.assertTrue(20 <= stats["connectionsOpened"] <= 40, stats)
        self.assertEqual(stats["retiredAtRequestLimit"], 20)
        self.assertEqual((stats["failures"], stats["retries"]), (0, 0))

    async def test_idempotentRetried(self) -> None:
        """
        With no cap, 500 idempotent queries at once all succeed: those the
        server closed the connection on are sent again on a fresh one.
        """
        client = self.client()
        outcomes = await ask(client, 500, idempotent=True)
        self.assertEqual(outcomes, [NAMES[i % len(NAMES)] for i in range(500)])
        stats = client.stats()
        self.assertEqual(stats["failures"], 0)
        self.assertGreaterEqual(stats["retries"], 400)
        self.assertEqual(stats["requests"], 500)


class TwistedNamesTests(TestCase):
    """
    Twisted's own DNS server keeps a TCP connection open: past 65,536
    queries the 16-bit ids wrap.
    """

    timeout = 120

    async def test_idsWrapOnOneConnection(self) -> None:
        """
        70,000 queries over one connection, 100 in flight: with the codec's
        maxRequestId = 0xFFFF every one is answered for its own name.
        """
        zone = Zone([
            ("example.test", dns.Record_SOA(mname="ns.example.test", rname="root.example.test")),
            *[(name, dns.Record_A(_address(name))) for name in NAMES],
        ])  # fmt: skip
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.DNSServerFactory(authorities=[zone])
        )
        self.addCleanup(port.stopListening)
        client = SockShareClientFactory(
            f"tcp:127.0.0.1:{port.getHost().port}", reactor, codec=DNSCodec(), idleTimeout=None
        )
        self.addCleanup(client.close)
        bad = await closedLoop(client, 70_000, 100, lambda name, reply: answerName(reply) == name)
        self.assertEqual(bad, 0)
        stats = client.stats()
        self.assertEqual((stats["responses"], stats["connectionsOpened"]), (70_000, 1))
