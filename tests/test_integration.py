"""
Loopback integration tests: the client and server over real sockets.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from twisted_sockshare import (
    ConnectFailed,
    ConnectionDropped,
    RemoteError,
    RequestTimeout,
    SockShareClientFactory,
    SockShareServerFactory,
)

from .helpers import tempPath


async def waitFor(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """
    Poll C{condition} on the reactor until it holds; fail after C{timeout}.
    """
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError("condition not met in time")


def handler(payload: bytes) -> bytes | Deferred[bytes]:
    if payload.startswith(b"sleep:"):
        return deferLater(reactor, float(payload[6:]), lambda: payload)
    if payload == b"fail":
        raise KeyError("no such thing")
    return payload


class LoopbackTests(TestCase):
    """
    The main paths over TCP on 127.0.0.1.
    """

    timeout = 30

    async def listen(self, endpoint: object = None) -> SockShareServerFactory:
        self.server = SockShareServerFactory(handler)
        self.serverProtocols: list = []
        build = self.server.buildProtocol

        def record(addr: object) -> object:
            protocol = build(addr)  # type: ignore[arg-type]
            self.serverProtocols.append(protocol)
            return protocol

        self.server.buildProtocol = record  # type: ignore[method-assign,assignment]
        endpoint = endpoint or TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(self.server)  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        return self.server

    def client(self, **options: object) -> SockShareClientFactory:
        address = self.port.getHost()
        client = SockShareClientFactory(
            TCP4ClientEndpoint(reactor, address.host, address.port),
            reactor,
            **options,  # type: ignore[arg-type]
        )
        self.addCleanup(client.close)
        return client

    async def test_concurrentRequestsShareOneConnection(self) -> None:
        """200 concurrent requests all succeed over one connection, closed afterwards."""
        server = await self.listen()
        client = self.client()
        payloads = [b"request %d" % i for i in range(200)]
        results = await gatherResults([client.request(p) for p in payloads])
        self.assertEqual(results, payloads)
        self.assertEqual(server.stats()["connectionsOpened"], 1)
        self.assertEqual(client.stats()["peakPending"], 200)
        await waitFor(lambda: server.stats()["connections"] == 0)
        self.assertEqual(client.stats()["connectionsClosed"], 1)

    async def test_lingerReusesConnection(self) -> None:
        """With an idle timeout, separate waves reuse one connection."""
        server = await self.listen()
        client = self.client(idleTimeout=5.0)
        for wave in range(3):
            await gatherResults([client.request(b"w%d" % wave) for _ in range(10)])
            await deferLater(reactor, 0.05)
        self.assertEqual(server.stats()["connectionsOpened"], 1)
        await client.close()
        await waitFor(lambda: server.stats()["connections"] == 0)

    async def test_outOfOrderAndRemoteError(self) -> None:
        """A slow request does not hold back a fast one; a handler error fails only its request."""
        await self.listen()
        client = self.client()
        slow = client.request(b"sleep:0.2")
        failing = client.request(b"fail")
        fast = await client.request(b"fast")
        self.assertEqual(fast, b"fast")
        self.assertNoResult(slow)
        with self.assertRaises(RemoteError) as caught:
            await failing
        self.assertEqual(str(caught.exception), "KeyError: 'no such thing'")
        self.assertEqual(await slow, b"sleep:0.2")
        self.flushLoggedErrors(KeyError)

    async def test_connectRefused(self) -> None:
        """Nobody listening: ConnectFailed, and the next request tries again."""
        await self.listen()
        client = self.client()
        await self.port.stopListening()
        with self.assertRaises(ConnectFailed) as caught:
            await client.request(b"x")
        self.assertIn("refused", str(caught.exception).lower())
        self.assertEqual(client.stats()["connectFailures"], 1)

    async def test_serverGoesAway(self) -> None:
        """The server dropping the connection fails what is in flight; the client recovers."""
        server = await self.listen()
        client = self.client()
        inFlight = client.request(b"sleep:10")
        await waitFor(lambda: server.stats()["requests"] == 1)
        for protocol in self.serverProtocols:
            protocol.transport.abortConnection()
        with self.assertRaises(ConnectionDropped):
            await inFlight
        self.assertEqual(await client.request(b"again"), b"again")
        self.assertEqual(server.stats()["connectionsOpened"], 2)

    async def test_requestTimeoutCancels(self) -> None:
        """A request slower than requestTimeout fails alone: CANCEL goes out, the connection serves on."""
        server = await self.listen()
        client = self.client(requestTimeout=0.1)
        with self.assertRaises(RequestTimeout):
            await client.request(b"sleep:2")
        self.assertEqual(await client.request(b"ok"), b"ok")
        self.assertEqual(server.stats()["connectionsOpened"], 1)
        # The server stops the handler itself at the deadline the request
        # carried, or at the CANCEL, whichever it reads first.
        stats = server.stats()
        self.assertEqual(stats["cancelsReceived"] + stats["deadlineExceeded"], 1)
        self.assertEqual(client.stats()["cancelsSent"], 1)

    async def test_requestTimeoutResets(self) -> None:
        """With resetOnTimeout=True a request slower than requestTimeout resets its connection."""
        server = await self.listen()
        client = self.client(requestTimeout=0.1, resetOnTimeout=True)
        with self.assertRaises(RequestTimeout):
            await client.request(b"sleep:2")
        self.assertEqual(await client.request(b"ok"), b"ok")
        self.assertEqual(server.stats()["connectionsOpened"], 2)

    async def test_unixSocket(self) -> None:
        """Any stream endpoint works: a UNIX socket, given as a string."""
        path = tempPath(self)
        server = await self.listen(UNIXServerEndpoint(reactor, path))
        client = SockShareClientFactory(f"unix:{path}", reactor)
        self.addCleanup(client.close)
        self.assertEqual(
            await gatherResults([client.request(b"u%d" % i) for i in range(20)]), [b"u%d" % i for i in range(20)]
        )
        self.assertEqual(server.stats()["connectionsOpened"], 1)

    async def test_ipv6(self) -> None:
        """The shared client works over IPv6 loopback."""
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            raise self.skipTest("this machine has no IPv6 loopback (::1)") from None
        await self.listen(TCP6ServerEndpoint(reactor, 0, interface="::1"))
        client = SockShareClientFactory(f"tcp:host=\\:\\:1:port={self.port.getHost().port}", reactor)
        self.addCleanup(client.close)
        self.assertEqual(await client.request(b"six"), b"six")
