"""
Tests of L{SockShareServerFactory} and its protocol, in memory.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.server import describeError
from twisted_sockshare.wire import CLIENT_RECEIVES, ERROR, REQUEST, RESPONSE, FrameDecoder, encodeFrame


def connect(factory: SockShareServerFactory) -> tuple:
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def replies(transport: StringTransport) -> list[tuple[int, int, bytes]]:
    return FrameDecoder(2**31, CLIENT_RECEIVES).feed(transport.value())


class ServerTests(SynchronousTestCase):
    """
    Rule 11: requests are handled concurrently and answered as they complete.
    """

    def test_syncHandler(self) -> None:
        """A handler returning bytes is answered at once with the same id."""
        protocol, transport = connect(SockShareServerFactory(lambda p: p[::-1]))
        protocol.dataReceived(encodeFrame(42, REQUEST, b"abc"))
        self.assertEqual(replies(transport), [(42, RESPONSE, b"cba")])

    def test_outOfOrder(self) -> None:
        """Deferred results are answered in the order they complete."""
        waiting: list[Deferred[bytes]] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred()
            waiting.append(d)
            return d

        protocol, transport = connect(SockShareServerFactory(handler))
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b"b"))
        self.assertEqual(len(waiting), 2)
        waiting[1].callback(b"B")
        waiting[0].callback(b"A")
        self.assertEqual(replies(transport), [(2, RESPONSE, b"B"), (1, RESPONSE, b"A")])

    def test_coroutineHandler(self) -> None:
        """A coroutine handler's return value is the response."""
        gate: Deferred[bytes] = Deferred()

        async def handler(payload: bytes) -> bytes:
            return payload + await gate

        protocol, transport = connect(SockShareServerFactory(handler))
        protocol.dataReceived(encodeFrame(5, REQUEST, b"x"))
        self.assertEqual(replies(transport), [])
        gate.callback(b"y")
        self.assertEqual(replies(transport), [(5, RESPONSE, b"xy")])

    def test_exceptionBecomesError(self) -> None:
        """A handler exception becomes an ERROR frame 'Class: text'; the connection stays up."""

        def handler(payload: bytes) -> bytes:
            if payload == b"bad":
                raise ValueError("bad key")
            return payload

        protocol, transport = connect(SockShareServerFactory(handler))
        protocol.dataReceived(encodeFrame(1, REQUEST, b"bad") + encodeFrame(2, REQUEST, b"good"))
        self.assertEqual(replies(transport), [(1, ERROR, b"ValueError: bad key"), (2, RESPONSE, b"good")])
        self.assertFalse(transport.disconnecting)
        self.flushLoggedErrors(ValueError)

    def test_failedDeferredBecomesError(self) -> None:
        """A Deferred failing becomes an ERROR frame without a traceback."""
        protocol, transport = connect(SockShareServerFactory(lambda p: _failing()))
        protocol.dataReceived(encodeFrame(3, REQUEST, b""))
        self.assertEqual(replies(transport), [(3, ERROR, b"KeyError: 'k'")])
        self.flushLoggedErrors(KeyError)

    def test_nonBytesResult(self) -> None:
        """A handler returning something other than bytes gives a TypeError ERROR."""
        protocol, transport = connect(SockShareServerFactory(lambda p: "text"))  # type: ignore[arg-type,return-value]
        protocol.dataReceived(encodeFrame(1, REQUEST, b""))
        [(requestId, kind, message)] = replies(transport)
        self.assertEqual(kind, ERROR)
        self.assertIn(b"TypeError: handler returned str", message)

    def test_bytearrayResult(self) -> None:
        """A bytearray result, from a Deferred, is sent as bytes."""
        protocol, transport = connect(SockShareServerFactory(lambda p: succeed(bytearray(b"ba"))))  # type: ignore
        protocol.dataReceived(encodeFrame(1, REQUEST, b""))
        self.assertEqual(replies(transport), [(1, RESPONSE, b"ba")])

    def test_oversizedResponse(self) -> None:
        """A response above the server's maxPayload is turned into an ERROR."""
        protocol, transport = connect(SockShareServerFactory(lambda p: b"x" * 200, maxPayload=100))
        protocol.dataReceived(encodeFrame(1, REQUEST, b""))
        [(_, kind, message)] = replies(transport)
        self.assertEqual(kind, ERROR)
        self.assertIn(b"maxPayload=100", message)

    def test_disconnectCancelsHandlers(self) -> None:
        """When the client goes away, outstanding handler Deferreds are cancelled."""
        cancelled: list[bool] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            return Deferred(lambda d: cancelled.append(True))

        factory = SockShareServerFactory(handler)
        protocol, transport = connect(factory)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"") + encodeFrame(2, REQUEST, b""))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(cancelled, [True, True])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.stats()["connections"], 0)

    def test_violationDisconnectsOnlyThatClient(self) -> None:
        """A violating client is dropped; another connection keeps being served."""
        factory = SockShareServerFactory(lambda p: p)
        bad, badTransport = connect(factory)
        good, goodTransport = connect(factory)
        bad.dataReceived(encodeFrame(1, RESPONSE, b"not a request"))
        self.assertTrue(badTransport.disconnecting)
        bad.dataReceived(encodeFrame(2, REQUEST, b"ignored"))
        self.assertEqual(badTransport.value(), b"")
        good.dataReceived(encodeFrame(1, REQUEST, b"fine"))
        self.assertEqual(replies(goodTransport), [(1, RESPONSE, b"fine")])
        self.assertEqual(factory.stats()["violations"], 1)

    def test_duplicateIdInFlight(self) -> None:
        """Reusing an id that is still in flight is a violation."""
        factory = SockShareServerFactory(lambda p: Deferred())
        protocol, transport = connect(factory)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"") + encodeFrame(1, REQUEST, b""))
        self.assertTrue(transport.disconnecting)

    def test_oversizedRequest(self) -> None:
        """A request announcing more than maxPayload drops the connection before it is read."""
        calls: list[bytes] = []
        factory = SockShareServerFactory(calls.append, maxPayload=4)  # type: ignore[arg-type]
        protocol, transport = connect(factory)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"12345")[:9])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(calls, [])

    def test_stats(self) -> None:
        """The server counts connections, requests, responses and errors."""
        factory = SockShareServerFactory(lambda p: p if p else _raise())
        protocol, _ = connect(factory)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b""))
        self.assertEqual(
            factory.stats(),
            {
                "connections": 1,
                "connectionsOpened": 1,
                "requests": 2,
                "responses": 1,
                "errors": 1,
                "violations": 0,
                "idleClosed": 0,
                "refusedConnections": 0,
                "pausedConnections": 0,
                "pauses": 0,
                "handlerTimeouts": 0,
                "frameTimeouts": 0,
                "peakInFlight": 0,
                "cancelsReceived": 0,
                "goawaysSent": 0,
                "drainAborted": 0,
                "inFlight": 0,
                "unanswered": 0,
                "deadlineExceeded": 0,
                "deadlineExceededOnArrival": 0,
                "refused": 0,
            },
        )
        self.flushLoggedErrors(RuntimeError)

    def test_badMaxPayload(self) -> None:
        """An out-of-range maxPayload raises ValueError."""
        self.assertRaises(ValueError, SockShareServerFactory, lambda p: p, maxPayload=-1)

    def test_describeError(self) -> None:
        """Errors are described by class name and text."""
        self.assertEqual(describeError(ValueError("bad key")), "ValueError: bad key")
        self.assertEqual(describeError(RuntimeError()), "RuntimeError")


def _raise() -> bytes:
    raise RuntimeError("boom")


def _failing() -> Deferred[bytes]:
    d: Deferred[bytes] = Deferred()
    d.errback(KeyError("k"))
    return d


class IdleTimeoutTests(SynchronousTestCase):
    """
    idleTimeout closes connections whose client went quiet, and aborts those
    that leave a frame half-sent (slow-loris).
    """

    def connect(self, **options: object) -> tuple:
        self.clock = Clock()
        self.factory = SockShareServerFactory(
            lambda p: self.answers.setdefault(p, Deferred()),
            clock=self.clock,
            **options,  # type: ignore[arg-type]
        )
        self.answers: dict[bytes, Deferred[bytes]] = {}
        protocol, transport = connect(self.factory)
        return protocol, transport

    def test_idleClosed(self) -> None:
        """A connection that sends nothing for idleTimeout is closed gracefully; activity postpones it."""
        protocol, transport = self.connect(idleTimeout=10)
        self.clock.advance(6)
        protocol.dataReceived(b"")
        self.clock.advance(6)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(4)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["idleClosed"], 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitingClientNotIdle(self) -> None:
        """A client waiting for a slow answer, with no frame half-sent, is not idle."""
        protocol, transport = self.connect(idleTimeout=10)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"slow"))
        self.clock.advance(35)
        self.assertFalse(transport.disconnecting)
        self.answers[b"slow"].callback(b"done")
        self.assertEqual(replies(transport), [(1, RESPONSE, b"done")])
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_partialFrameAborted(self) -> None:
        """A frame left incomplete for idleTimeout aborts the connection, even with answers pending."""
        protocol, transport = self.connect(idleTimeout=5)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"slow"))
        protocol.dataReceived(encodeFrame(2, REQUEST, b"never finished")[:12])
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["idleClosed"], 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noTimeoutByDefault(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertRaises(ValueError, SockShareServerFactory, bytes, idleTimeout=0)
