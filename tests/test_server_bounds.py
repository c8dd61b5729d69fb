"""
The server's bounds per client, with fakes: a transport that records
pause and resume, and a clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.server import defaultMaxConnections
from twisted_sockshare.wire import CLIENT_RECEIVES, ERROR, REQUEST, RESPONSE, FrameDecoder, encodeFrame

from .helpers import connectServer


def replies(transport: StringTransport) -> list[tuple[int, int, bytes]]:
    return FrameDecoder(2**31, CLIENT_RECEIVES).feed(transport.value())


def requests(first: int, count: int, payload: bytes = b"x") -> bytes:
    return b"".join(encodeFrame(i, REQUEST, payload) for i in range(first, first + count))


class BoundsTestCase(SynchronousTestCase):
    def serve(self, **options: object) -> tuple:
        self.clock = Clock()
        self.waiting: dict[bytes, Deferred[bytes]] = {}

        def handler(payload: bytes) -> Deferred[bytes] | bytes:
            if payload.startswith(b"now"):
                return payload
            d: Deferred[bytes] = Deferred()
            self.waiting[payload] = d
            return d

        self.factory = SockShareServerFactory(handler, clock=self.clock, **options)  # type: ignore[arg-type]
        return connectServer(self.factory)


class InFlightTests(BoundsTestCase):
    def test_pausedAtTheMarkResumedBelow(self) -> None:
        """At maxInFlight the server stops reading; frames already received wait; one answer resumes."""
        protocol, transport = self.serve(maxInFlight=3)
        self.assertIs(transport.producer, protocol)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"r%d" % i) for i in range(5)))
        self.assertEqual(sorted(self.waiting), [b"r0", b"r1", b"r2"])
        self.assertEqual(transport.producerState, "paused")
        stats = self.factory.stats()
        self.assertEqual((stats["pausedConnections"], stats["pauses"], stats["peakInFlight"]), (1, 1, 3))
        self.waiting[b"r1"].callback(b"R1")
        self.assertEqual(sorted(self.waiting), [b"r0", b"r1", b"r2", b"r3"])  # r3 handled, r4 waits
        self.assertEqual(transport.producerState, "paused")
        for name in (b"r0", b"r2", b"r3"):
            self.waiting[name].callback(name.upper())
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.factory.stats()["pausedConnections"], 0)
        self.waiting[b"r4"].callback(b"R4")
        self.assertEqual(sorted(r[2] for r in replies(transport)), [b"R0", b"R1", b"R2", b"R3", b"R4"])
        self.assertEqual(self.factory.stats()["responses"], 5)

    def test_nothingDroppedNothingFailed(self) -> None:
        """A flood far above the mark is answered in full, never more than maxInFlight at once in handlers."""
        protocol, transport = self.serve(maxInFlight=10)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(100)))
        answered = 0
        while self.waiting:
            self.assertLessEqual(len(self.waiting), 10)
            name, d = self.waiting.popitem()
            d.callback(name)
            answered += 1
        self.assertEqual(answered, 100)
        self.assertEqual(sorted(int(r[2]) for r in replies(transport)), list(range(100)))
        self.assertEqual(self.factory.stats()["errors"], 0)

    def test_syncAnswersDoNotCount(self) -> None:
        """Requests answered at once are never in flight."""
        protocol, transport = self.serve(maxInFlight=1)
        protocol.dataReceived(requests(0, 50, b"now"))
        self.assertEqual(len(replies(transport)), 50)
        self.assertEqual(transport.producerState, "producing")


class OutputBackPressureTests(BoundsTestCase):
    def test_clientNotReading(self) -> None:
        """While the transport's buffer is full, requests are not read; when it drains, they are."""
        protocol, transport = self.serve()
        protocol.dataReceived(requests(0, 2, b"now"))
        protocol.pauseProducing()  # the transport: our write buffer is full
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(requests(2, 3, b"now"))  # already in flight from the kernel
        self.assertEqual(len(replies(transport)), 2)
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual([r[0] for r in replies(transport)], [0, 1, 2, 3, 4])

    def test_bothReasons(self) -> None:
        """Reading resumes only once neither reason holds."""
        protocol, transport = self.serve(maxInFlight=1)
        protocol.dataReceived(encodeFrame(0, REQUEST, b"slow"))
        protocol.pauseProducing()
        self.waiting[b"slow"].callback(b"done")
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.factory.stats()["pauses"], 1)


class ConnectionLimitTests(SynchronousTestCase):
    def test_refusedBeyondMax(self) -> None:
        """Beyond maxConnections a connection gets no protocol (closed at once) and is counted."""
        factory = SockShareServerFactory(bytes, maxConnections=2, clock=Clock())
        first, second = factory.buildProtocol(None), factory.buildProtocol(None)
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.stats()["refusedConnections"], 1)
        assert first is not None and second is not None
        first.makeConnection(StringTransport())
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(None))

    def test_defaultFromFileLimit(self) -> None:
        """The default leaves head room below the open-file limit."""
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertLess(defaultMaxConnections(), soft)
        self.assertGreaterEqual(defaultMaxConnections(), 1)
        self.assertEqual(SockShareServerFactory(bytes, clock=Clock()).maxConnections, defaultMaxConnections())


class HandlerTimeoutTests(BoundsTestCase):
    def test_slowHandlerCancelledAndAnswered(self) -> None:
        """A handler past handlerTimeout is cancelled and its request answered with an ERROR saying so."""
        protocol, transport = self.serve(handlerTimeout=5)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a"))
        self.clock.advance(3)
        protocol.dataReceived(encodeFrame(2, REQUEST, b"b"))
        self.clock.advance(2)
        self.assertEqual(
            replies(transport),
            [(1, ERROR, b"TimeoutError: the handler did not finish within handlerTimeout=5 seconds")],
        )
        self.assertTrue(self.waiting[b"a"].called)  # cancelled
        self.assertIsNone(self.successResultOf(self.waiting[b"a"]))  # its CancelledError consumed
        self.waiting[b"b"].callback(b"B")
        self.assertEqual(replies(transport)[1], (2, RESPONSE, b"B"))
        self.assertEqual(self.factory.stats()["handlerTimeouts"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timedOutFreesRoom(self) -> None:
        """A timed-out handler frees its place under maxInFlight."""
        protocol, transport = self.serve(handlerTimeout=1, maxInFlight=1)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b"b"))
        self.assertEqual(list(self.waiting), [b"a"])
        self.clock.advance(1)
        self.assertEqual(list(self.waiting), [b"a", b"b"])
        self.assertEqual(transport.producerState, "paused")


class FrameTimeoutTests(BoundsTestCase):
    def test_slowLorisAborted(self) -> None:
        """A frame still incomplete frameTimeout after its first byte aborts the connection."""
        protocol, transport = self.serve(frameTimeout=30)
        frame = encodeFrame(1, REQUEST, b"never finished")
        protocol.dataReceived(frame[:3])
        for i in range(3, 10):
            self.clock.advance(4)
            protocol.dataReceived(frame[i : i + 1])  # trickling does not help
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["frameTimeouts"], 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_eachFrameHasItsOwnTime(self) -> None:
        """Complete frames reset the clock: a steady stream of split frames is never cut."""
        protocol, transport = self.serve(frameTimeout=5)
        for i in range(20):
            frame = encodeFrame(i, REQUEST, b"now")
            protocol.dataReceived(frame[:5])
            self.clock.advance(4)
            protocol.dataReceived(frame[5:])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(replies(transport)), 20)

    def test_notWhilePaused(self) -> None:
        """A frame the server itself stopped reading is not the client's fault."""
        protocol, transport = self.serve(frameTimeout=5, maxInFlight=1)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"slow") + encodeFrame(2, REQUEST, b"x")[:6])
        self.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        self.waiting[b"slow"].callback(b"")
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_shortLengthAtFourBytes(self) -> None:
        """A length below 5 is a violation as soon as its 4 bytes arrive."""
        protocol, transport = self.serve()
        protocol.dataReceived(b"\x00\x00")
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"\x00\x04")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["violations"], 1)


class OptionTests(SynchronousTestCase):
    def test_badOptions(self) -> None:
        """Each bound is checked, naming the option."""
        for name, value, error in [
            ("maxInFlight", 0, ValueError),
            ("maxInFlight", 1.5, TypeError),
            ("maxConnections", 0, ValueError),
            ("handlerTimeout", 0, ValueError),
            ("frameTimeout", float("nan"), ValueError),
            ("idleTimeout", "5", TypeError),
        ]:
            e = self.assertRaises(error, SockShareServerFactory, bytes, **{name: value})
            self.assertIn(name, str(e))
