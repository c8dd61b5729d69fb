"""
The HTTP gateway against hostile clients, over real loopback sockets: huge
bodies, wrong methods, malformed requests and many slow clients.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_sockshare import SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.demo.gateway import GatewayResource, makeSite

from .faults import openFileDescriptors


class _Raw(Protocol):
    """
    Sends what it is given and collects the answer until the server closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(self.received)


class HostileHTTPTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.fds = openFileDescriptors()
        backendPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            SockShareServerFactory(bytes.upper, maxPayload=1000)
        )
        self.addCleanup(backendPort.stopListening)
        self.client = SockShareClientFactory(f"tcp:127.0.0.1:{backendPort.getHost().port}", reactor, maxPayload=1000)
        self.addCleanup(self.client.close)
        site = makeSite(GatewayResource(self.client, "shared", "backend"), maxPayload=1000, idleTimeout=2)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    async def send(self, data: bytes, limit: float = 10) -> bytes:
        raw = await connectProtocol(self.endpoint, _Raw())
        raw.transport.write(data)  # type: ignore[union-attr]
        return await raw.closed.addTimeout(limit, reactor)

    async def test_hugeBodyRefusedFromLength(self) -> None:
        """A 10 GB Content-Length gets 413 at once; the body is never read."""
        answer = await self.send(
            b"POST /request HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 5000
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertIn(b"10000000000 bytes exceeds the gateway's limit of 1000 bytes (--max-payload)", answer)
        self.assertEqual(self.client.stats()["requests"], 0)

    async def test_hugeBodyWithExpectContinue(self) -> None:
        """
        A client that asks for C{100 Continue} before sending a body over the
        limit gets the 413 alone: no C{100 Continue} after it invites the body.
        """
        answer = await self.send(
            b"POST /request HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertNotIn(b"100 Continue", answer)
        self.assertEqual(answer.count(b"HTTP/1.1"), 1, answer)

    async def test_expectContinueWithinLimit(self) -> None:
        """A body within the limit still gets its C{100 Continue}, then its answer."""
        raw = await connectProtocol(self.endpoint, _Raw())
        raw.transport.write(  # type: ignore[union-attr]
            b"POST /request HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        while b"100 Continue" not in raw.received:
            await deferLater(reactor, 0.01)
        raw.transport.write(b"abc")  # type: ignore[union-attr]
        answer = await raw.closed.addTimeout(10, reactor)
        self.assertTrue(answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), answer)
        self.assertIn(b"\r\n\r\n3\r\nABC\r\n0\r\n\r\n", answer)

    async def test_hugeChunkedBody(self) -> None:
        """A chunked body is cut off with 413 as soon as it passes the limit."""
        chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
        answer = await self.send(
            b"POST /request HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        # The size of a chunked body that is not read to its end is unknown.
        self.assertIn(b"the body grew past the gateway's limit of 1000 bytes (--max-payload)", answer)
        self.assertEqual(self.client.stats()["requests"], 0)

    async def test_headHealthz(self) -> None:
        """
        C{HEAD /healthz} answers GET's status and length with no body, and
        logs no warning.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        answer = await self.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"Content-Length: 3", head)
        self.assertEqual(body, b"")
        self.assertEqual([e for e in events if "HEAD request" in str(e.get("log_format"))], [])

    async def test_wrongMethodsAndGarbage(self) -> None:
        """Wrong methods get 405, garbage gets 400; nothing reaches the backend."""
        for request, status in [
            (b"GET /request HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
            (b"DELETE /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
            (b"\x00\x01\x02 garbage\r\n\r\n", b"400"),
            (b"POST /request HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        ]:
            answer = await self.send(request)
            self.assertIn(b" " + status + b" ", answer.split(b"\r\n", 1)[0], (request, answer[:80]))
        self.assertEqual(self.client.stats()["requests"], 0)

    async def test_manySlowClients(self) -> None:
        """
        200 clients that send half a request and stall do not stop others
        being served, and are disconnected after the site's timeout.
        """
        slow = [await connectProtocol(self.endpoint, _Raw()) for _ in range(200)]
        for raw in slow:
            raw.transport.write(b"POST /request HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")  # type: ignore[union-attr]
        answer = await self.send(
            b"POST /request HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertIn(b"\r\n\r\n2\r\nOK\r\n", answer)
        await gatherResults([raw.closed.addTimeout(10, reactor) for raw in slow])
        await self.client.close()
        self.assertEqual(openFileDescriptors() - self.fds, 2)  # the two listening ports
