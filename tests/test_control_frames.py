"""
The control frames, rule by rule and race by race, with fake transports and
a Clock: CANCEL, GOAWAY, PING/PONG on the client and the server, and the
defaults that keep requests on one connection from sharing a fate.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    ConnectionDropped,
    ProtocolViolation,
    RequestTimeout,
    SockShareServerFactory,
)
from twisted_sockshare.codecs import Delimited
from twisted_sockshare.connection import ConnectionState
from twisted_sockshare.wire import (
    CANCEL,
    CLIENT_RECEIVES,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REQUEST,
    RESPONSE,
    FrameDecoder,
    encodeFrame,
)

from .helpers import ClientTestCase, connectServer


def frames(transport: StringTransport) -> list[tuple[int, int, bytes]]:
    return FrameDecoder(2**31, CLIENT_RECEIVES).feed(transport.value())


class ServerControlFrameTests(SynchronousTestCase):
    def serve(self, **options: object) -> tuple:
        self.clock = Clock()
        self.held: dict[bytes, Deferred[bytes]] = {}

        def handler(payload: bytes) -> Deferred[bytes]:
            # b"partial": cancelling it gives what is ready instead of failing.
            d: Deferred[bytes] = Deferred(lambda d: d.callback(b"partial") if payload == b"partial" else None)
            self.held[payload] = d
            return d

        self.factory = SockShareServerFactory(handler, clock=self.clock, **options)  # type: ignore[arg-type]
        return connectServer(self.factory)

    def test_cancelAnsweredOnce(self) -> None:
        """CANCEL cancels a running handler; the request is still answered, once, with ERROR CancelledError."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b"b"))
        protocol.dataReceived(encodeFrame(1, CANCEL, b""))
        self.assertEqual(frames(transport), [(1, ERROR, b"CancelledError")])
        self.held[b"b"].callback(b"B")
        self.assertEqual(frames(transport)[1:], [(2, RESPONSE, b"B")])
        self.assertEqual(self.factory.stats()["cancelsReceived"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_cancelCrossingTheAnswer(self) -> None:
        """A CANCEL for a request already answered (or never seen) is ignored, not a violation."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a"))
        self.held[b"a"].callback(b"A")
        protocol.dataReceived(encodeFrame(1, CANCEL, b"") + encodeFrame(99, CANCEL, b""))
        self.assertEqual(frames(transport), [(1, RESPONSE, b"A")])
        self.assertFalse(transport.disconnecting)

    def test_cancelWithResultReady(self) -> None:
        """A handler whose canceller gives a result is answered with RESPONSE."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"partial"))
        protocol.dataReceived(encodeFrame(1, CANCEL, b""))
        self.assertEqual(frames(transport), [(1, RESPONSE, b"partial")])

    def test_pingPong(self) -> None:
        """A PING is answered at once with a PONG carrying its token and payload; a PONG is ignored."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(77, PING, b"x" * 64) + encodeFrame(5, PONG, b"unsolicited"))
        self.assertEqual(frames(transport), [(77, PONG, b"x" * 64)])
        self.assertFalse(transport.disconnecting)

    def test_oversizedPing(self) -> None:
        """A PING payload over 64 bytes is a violation."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, PING, b"x" * 65))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["violations"], 1)

    def test_wrongDirection(self) -> None:
        """A RESPONSE, ERROR or GOAWAY sent to a server is a violation."""
        for kind in (RESPONSE, ERROR, GOAWAY):
            protocol, transport = self.serve()
            protocol.dataReceived(encodeFrame(0, kind, b""))
            self.assertTrue(transport.disconnecting, kind)

    def test_maxConnectionAge(self) -> None:
        """After maxConnectionAge the server sends GOAWAY, keeps answering, and aborts after drainTimeout."""
        protocol, transport = self.serve(maxConnectionAge=60, drainTimeout=5)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a"))
        self.clock.advance(60)
        self.assertEqual(frames(transport), [(0, GOAWAY, b"maxConnectionAge reached")])
        protocol.dataReceived(encodeFrame(2, REQUEST, b"crossed"))  # crossed the GOAWAY: answered
        self.held[b"crossed"].callback(b"C")
        self.held[b"a"].callback(b"A")
        self.assertEqual([f[0] for f in frames(transport)[1:]], [2, 1])
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["drainAborted"], 1)

    def test_drainWaitsForClients(self) -> None:
        """drain() sends GOAWAY everywhere, refuses new connections, and fires when the clients have closed."""
        protocol, transport = self.serve(drainTimeout=30)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a"))
        drained = self.factory.drain()
        self.assertEqual(frames(transport), [(0, GOAWAY, b"the server is shutting down")])
        self.assertIsNone(self.factory.buildProtocol(None))
        self.assertNoResult(drained)
        self.held[b"a"].callback(b"A")
        protocol.connectionLost(Failure(ConnectionDone()))  # the client closed after its answer
        self.assertEqual(self.successResultOf(drained), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopFactoryDrains(self) -> None:
        """The last listening port stopping starts a drain."""
        protocol, transport = self.serve()
        self.factory.doStart()
        self.factory.doStop()
        self.assertEqual(frames(transport), [(0, GOAWAY, b"the server is shutting down")])


class ClientControlFrameTests(ClientTestCase):
    def test_timeoutFailsAlone(self) -> None:
        """By default a timeout fails its request alone and sends CANCEL; the others and the connection live on."""
        client = self.makeClient(requestTimeout=10)
        slow = client.request(b"slow")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(5)
        others = [client.request(b"%d" % i) for i in range(1000)]
        attempt.respond(1, b"fast")  # something came after the slow request was written
        self.clock.advance(5)
        self.failureResultOf(slow, RequestTimeout)
        self.assertEqual(attempt.sentFrames(CANCEL), [(0, b"")])
        self.assertFalse(attempt.transport.disconnecting)
        self.assertEqual(attempt.sentFrames(PING), [])
        for requestId, _ in attempt.sentRequests()[2:]:
            attempt.respond(requestId, b"fast")
        self.assertEqual([self.successResultOf(d) for d in others], [b"fast"] * 1000)
        attempt.respond(0, b"late")  # the server's answer to the cancelled request frees its id
        s = client.stats()
        self.assertEqual((s["timeouts"], s["failures"], s["cancelsSent"], s["lateResponses"]), (1, 1, 1, 1))

    def test_idHeldUntilAnswered(self) -> None:
        """A cancelled request's id is not reused until the server's answer comes."""
        client = self.makeClient(requestTimeout=None)
        first = client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol = attempt.protocol
        protocol._nextId = 0  # type: ignore[attr-defined]
        client.request(b"b")
        self.assertEqual([i for i, _ in attempt.sentRequests()], [0, 1])
        attempt.respondError(0, "CancelledError")
        self.assertEqual(protocol.orphans, 0)  # type: ignore[attr-defined]

    def test_silentConnectionPinged(self) -> None:
        """A timeout with nothing received since the request was written sends CANCEL and PING; silence resets."""
        client = self.makeClient(requestTimeout=10, pingTimeout=3)
        d1 = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        d2 = client.request(b"2")
        self.clock.advance(10)
        self.failureResultOf(d1, RequestTimeout)
        self.failureResultOf(d2, RequestTimeout)
        self.assertEqual(len(attempt.sentFrames(PING)), 1)
        d3 = client.request(b"3")
        self.clock.advance(3)
        f = self.failureResultOf(d3, ConnectionDropped)
        self.assertIn("pingTimeout=3", str(f.value))
        self.assertTrue(attempt.transport.aborted)

    def test_anyByteAnswersThePing(self) -> None:
        """Any byte received before pingTimeout keeps the connection."""
        client = self.makeClient(requestTimeout=10, pingTimeout=3)
        d1 = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(5)
        d2 = client.request(b"2")
        self.clock.advance(5)
        self.failureResultOf(d1, RequestTimeout)
        ((token, _),) = attempt.sentFrames(PING)
        attempt.protocol.dataReceived(encodeFrame(token, PONG, b""))  # type: ignore[attr-defined]
        self.clock.advance(3)
        self.assertFalse(attempt.transport.disconnecting)
        self.assertNoResult(d2)
        attempt.respond(1, b"two")
        self.assertEqual(self.successResultOf(d2), b"two")

    def test_pingInterval(self) -> None:
        """With pingInterval, a quiet connection is pinged; no byte within pingTimeout drops it."""
        client = self.makeClient(requestTimeout=None, pingInterval=5, pingTimeout=2, idleTimeout=None)
        d = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(5)
        self.assertEqual(len(attempt.sentFrames(PING)), 1)
        self.clock.advance(2)
        self.failureResultOf(d, ConnectionDropped)

    def test_serverPingAnswered(self) -> None:
        """The client answers a server's PING with a PONG; the PING counts as nothing pending."""
        client = self.makeClient()
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.protocol.dataReceived(encodeFrame(9, PING, b"t"))  # type: ignore[attr-defined]
        self.assertEqual(attempt.sentFrames(PONG), [(9, b"t")])
        self.assertEqual(client.pending, 1)

    def test_goaway(self) -> None:
        """GOAWAY: new requests go to a fresh connection; the old one answers its own, then closes."""
        client = self.makeClient(requestTimeout=None)
        inFlight = client.request(b"1")
        old = self.endpoint.last
        old.succeed()
        old.protocol.dataReceived(encodeFrame(0, GOAWAY, b"restarting"))  # type: ignore[attr-defined]
        self.assertIs(old.protocol.state, ConnectionState.RETIRING)  # type: ignore[attr-defined]
        fresh = client.request(b"2")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.endpoint.last.succeed()
        old.respond(0, b"one")
        self.assertEqual(self.successResultOf(inFlight), b"one")
        self.assertTrue(old.transport.disconnecting)
        self.endpoint.last.respond(0, b"two")
        self.assertEqual(self.successResultOf(fresh), b"two")
        self.assertEqual(client.stats()["goawaysReceived"], 1)

    def test_goawayWithNothingOutstanding(self) -> None:
        """GOAWAY on a lingering connection closes it at once."""
        client = self.makeClient()
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"one")
        self.assertFalse(attempt.transport.disconnecting)  # lingering
        attempt.protocol.dataReceived(encodeFrame(0, GOAWAY, b""))  # type: ignore[attr-defined]
        self.assertTrue(attempt.transport.disconnecting)

    def test_wrongDirectionToClient(self) -> None:
        """A REQUEST or CANCEL sent to a client, or a PING over 64 bytes, is a violation."""
        for frame in (encodeFrame(0, REQUEST, b""), encodeFrame(0, CANCEL, b""), encodeFrame(0, PING, b"x" * 65)):
            client = self.makeClient()
            d = client.request(b"1")
            self.endpoint.last.succeed()
            self.endpoint.last.protocol.dataReceived(frame)  # type: ignore[attr-defined]
            self.failureResultOf(d, ProtocolViolation)

    def test_unsolicitedPongIgnored(self) -> None:
        client = self.makeClient()
        d = client.request(b"1")
        self.endpoint.last.succeed()
        self.endpoint.last.protocol.dataReceived(encodeFrame(3, PONG, b""))  # type: ignore[attr-defined]
        self.assertNoResult(d)

    def test_orderedCodecStillResets(self) -> None:
        """With an ordered codec a timeout resets the connection (a reply cannot be skipped); no CANCEL is sent."""
        client = self.makeClient(codec=Delimited(), requestTimeout=5)
        d1, d2 = client.request(b"a"), client.request(b"b")
        self.endpoint.last.succeed()
        self.clock.advance(5)
        self.failureResultOf(d1, RequestTimeout)
        self.failureResultOf(d2, ConnectionDropped)
        self.assertTrue(self.endpoint.last.transport.aborted)
        self.assertNotIn(b"\x04", self.endpoint.last.transport.value())

    def test_lingerBoundsReconnects(self) -> None:
        """With the default linger, one caller's sequential requests share one connection."""
        client = self.makeClient()
        for i in range(20):
            d = client.request(b"%d" % i)
            if i == 0:
                self.endpoint.last.succeed()
            requestId = self.endpoint.last.sentRequests()[-1][0]
            self.endpoint.last.respond(requestId, b"ok")
            self.successResultOf(d)
            self.clock.advance(0.1)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.clock.advance(0.5)
        self.assertTrue(self.endpoint.last.transport.disconnecting)
        self.assertEqual(client.idleTimeout, 0.5)

    def test_orphansBounded(self) -> None:
        """More than maxOrphans ids held by unanswered cancels retire the connection."""
        client = self.makeClient(maxOrphans=2, requestTimeout=None)
        ds = [client.request(b"%d" % i) for i in range(4)]
        attempt = self.endpoint.last
        attempt.succeed()
        for d in ds[:3]:
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertIs(attempt.protocol.state, ConnectionState.RETIRING)  # type: ignore[attr-defined]
        self.assertEqual(client.stats()["connectionsRetired"], 1)
        attempt.respond(3, b"last")
        self.assertEqual(self.successResultOf(ds[3]), b"last")
        self.assertTrue(attempt.transport.disconnecting)  # held ids do not keep it open
