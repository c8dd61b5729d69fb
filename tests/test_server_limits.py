"""
The server's bounds with real sockets on loopback: a flood of pipelined
requests, a client that never reads, more connections than allowed, and a
slow-loris client.  The flooding client is another process (tests/flood.py)
with blocking sockets, so this process's memory is the server's.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.wire import CLIENT_RECEIVES, REQUEST, FrameDecoder, encodeFrame

from .helpers import waitUntil

FLOOD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flood.py")
MiB = 1 << 20


def residentBytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class _Silent(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class _OneRequest(Protocol):
    """Sends one request on connect; records its reply or the connection's end."""

    def __init__(self) -> None:
        self.outcome: Deferred[str] = Deferred()
        self._decoder = FrameDecoder(1024, CLIENT_RECEIVES)

    def connectionMade(self) -> None:
        self.transport.write(encodeFrame(7, REQUEST, b"hi"))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._decoder.feed(data) and not self.outcome.called:
            self.outcome.callback("served")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.outcome.called:
            self.outcome.callback("refused")


class ServerLimitTests(TestCase):
    timeout = 90

    async def listen(self, factory: SockShareServerFactory) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    async def test_floodOfPipelinedRequests(self) -> None:
        """
        200,000 pipelined 1 KiB requests on one connection to a handler that
        does not answer: at most maxInFlight are held, the rest wait in TCP;
        the server grows by less than 64 MiB; once the handler answers,
        every request is answered exactly once.
        """
        held: list[Deferred[bytes]] = []
        gate = {"open": False}

        def handler(payload: bytes) -> bytes | Deferred[bytes]:
            if gate["open"]:
                return b"done"
            d: Deferred[bytes] = Deferred()
            held.append(d)
            return d

        factory = SockShareServerFactory(handler, maxInFlight=1000)
        port = await self.listen(factory)
        gc.collect()
        before = residentBytes()
        flood = getProcessOutputAndValue(
            sys.executable, [FLOOD, str(port), "--requests", "200000", "--size", "1024"], env=os.environ
        )
        await waitUntil(lambda: factory.stats()["pausedConnections"] == 1, "the connection paused at the mark")
        # Paused, it stays at the mark however long the flood goes on.
        await sleep(0.5)
        growth = residentBytes() - before
        stats = factory.stats()
        self.assertEqual((len(held), stats["peakInFlight"], stats["pausedConnections"]), (1000, 1000, 1))
        self.assertLess(growth, 64 * MiB, f"grew by {growth / MiB:.1f} MiB")
        gate["open"] = True
        for d in held:
            d.callback(b"done")
        out, err, code = await flood
        self.assertEqual((out, code), (b"answered 200000\n", 0), err)
        self.assertEqual(factory.stats()["responses"], 200_000)

    async def test_clientThatNeverReads(self) -> None:
        """A client that sends but never reads its replies stalls its connection; memory stays bounded."""
        factory = SockShareServerFactory(lambda payload: payload)
        port = await self.listen(factory)
        gc.collect()
        before = residentBytes()
        flooder = _Silent()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            flooder, sys.executable, [sys.executable, FLOOD, str(port), "--no-read"], env=os.environ
        )
        await waitUntil(lambda: factory.stats()["pausedConnections"] == 1, "the connection paused, its replies unread")
        await sleep(0.5)
        growth = residentBytes() - before
        stats = factory.stats()
        self.assertEqual(stats["pausedConnections"], 1)
        self.assertLess(stats["responses"], 200_000)
        self.assertLess(growth, 64 * MiB, f"grew by {growth / MiB:.1f} MiB")
        process.signalProcess("KILL")
        await flooder.ended
        await waitUntil(lambda: factory.stats()["connections"] == 0, "the killed client's connection closed")

    async def test_connectionsBeyondTheLimit(self) -> None:
        """maxConnections + 100 connections at once: exactly 100 refused at once, the rest served."""
        factory = SockShareServerFactory(bytes.upper, maxConnections=50)
        port = await self.listen(factory)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        protocols = [_OneRequest() for _ in range(150)]
        connected = await gatherResults([connectProtocol(endpoint, p) for p in protocols])
        outcomes = await gatherResults([p.outcome for p in protocols])
        self.assertEqual((outcomes.count("served"), outcomes.count("refused")), (50, 100))
        self.assertEqual(factory.stats()["refusedConnections"], 100)
        for protocol in connected:
            protocol.transport.loseConnection()

    async def test_slowLoris(self) -> None:
        """A client that leaves a frame half-sent is cut after frameTimeout; the others are served."""
        factory = SockShareServerFactory(bytes.upper, frameTimeout=0.5)
        port = await self.listen(factory)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        loris = _OneRequest()
        loris.connectionMade = lambda: loris.transport.write(encodeFrame(1, REQUEST, b"never")[:7])  # type: ignore[method-assign,union-attr]
        started = time.monotonic()
        await connectProtocol(endpoint, loris)
        honest = await connectProtocol(endpoint, _OneRequest())
        self.assertEqual(await honest.outcome, "served")
        self.assertEqual(await loris.outcome, "refused")
        self.assertGreaterEqual(time.monotonic() - started, 0.45)
        self.assertEqual(factory.stats()["frameTimeouts"], 1)
        honest.transport.loseConnection()  # type: ignore[union-attr]
