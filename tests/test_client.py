"""
Deterministic tests of L{SockShareClientFactory}'s counting and bounds, with
a fake endpoint and clock: the pending count, maxPending and maxPayload,
close(), and the request path's attributes.  Its connection's life, timeouts
and cancels have their own modules (test_lifecycle, test_timeouts,
test_cancel).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from twisted_sockshare import (
    ClientClosed,
    ConnectFailed,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    SockShareClientFactory,
    TooManyPending,
)
from twisted_sockshare.wire import MAX_REQUEST_ID, RESPONSE, encodeFrame

from .helpers import ClientTestCase, FakeEndpoint


class CountedTests(ClientTestCase):
    """
    Rule 2: C{pending} counts the requests whose Deferred has not fired.
    """

    def test_responsesMatchedById(self) -> None:
        """Responses in any order go to the request with their id."""
        client = self.makeClient()
        d1, d2, d3 = (client.request(b"1"), client.request(b"2"), client.request(b"3"))
        attempt = self.endpoint.last
        attempt.succeed()
        (i1, _), (i2, _), (i3, _) = attempt.sentRequests()
        attempt.respond(i3, b"three")
        self.assertEqual(self.successResultOf(d3), b"three")
        self.assertEqual(client.pending, 2)
        attempt.respond(i1, b"one")
        attempt.respond(i2, b"two")
        self.assertEqual(self.successResultOf(d1), b"one")
        self.assertEqual(self.successResultOf(d2), b"two")
        self.assertEqual(client.pending, 0)
        self.assertInvariant()

    def test_pendingDecrementedBeforeCallback(self) -> None:
        """When a request's callback runs, it is no longer counted as pending."""
        client = self.makeClient()
        d = client.request(b"x")
        seen = []
        d.addCallback(lambda _: seen.append(client.pending))
        self.endpoint.last.succeed()
        self.endpoint.last.respond(self.endpoint.last.sentRequests()[0][0], b"y")
        self.assertEqual(seen, [0])

    def test_stats(self) -> None:
        """stats() reports every counter."""
        client = self.makeClient()
        ds = [client.request(b"x") for _ in range(3)]
        attempt = self.endpoint.last
        attempt.succeed()
        ids = [i for i, _ in attempt.sentRequests()]
        attempt.respond(ids[0], b"ok")
        attempt.respondError(ids[1], "KeyError: k")
        self.failureResultOf(ds[1], RemoteError)
        s = client.stats()
        self.assertEqual(s["pending"], 1)
        self.assertEqual(s["peakPending"], 3)
        self.assertEqual(s["connectionsOpened"], 1)
        self.assertEqual(s["requests"], 3)
        self.assertEqual(s["responses"], 1)
        self.assertEqual(s["remoteErrors"], 1)
        self.assertEqual(s["failures"], 0)
        self.assertEqual(s["connected"], 1)
        for key in (
            "connectionsClosed",
            "connectFailures",
            "timeouts",
            "rejected",
            "lateResponses",
            "cancelled",
        ):
            self.assertEqual(s[key], 0, key)
        self.assertInvariant()

    def test_requestsFromResponseCallbacksCoalesced(self) -> None:
        """
        Requests sent by the callbacks of responses that arrived in one
        chunk are written together, with one write.
        """
        client = self.makeClient()
        for i in range(3):
            client.request(b"%d" % i).addCallback(lambda reply: client.request(reply + b"+"))
        attempt = self.endpoint.last
        attempt.succeed()
        assert attempt.transport is not None
        self.assertEqual(attempt.transport.writeCalls, 1 + 3)  # the HELLO, then each request
        chunk = b"".join(encodeFrame(requestId, RESPONSE, payload) for requestId, payload in attempt.sentRequests())
        attempt.protocol.dataReceived(chunk)  # type: ignore[attr-defined]
        self.assertEqual(attempt.transport.writeCalls, 1 + 4)
        self.assertEqual([p for _, p in attempt.sentRequests()[3:]], [b"0+", b"1+", b"2+"])
        self.assertEqual(client.pending, 3)
        self.assertInvariant()

    def test_requestIdsWrapAndSkipOutstanding(self) -> None:
        """Ids wrap around after 2**32-1 and never reuse an outstanding id."""
        client = self.makeClient()
        client.request(b"a")
        attempt = self.endpoint.last
        protocol, _ = attempt.succeed()
        first = attempt.sentRequests()[0][0]
        self.assertEqual(first, 0)
        protocol._nextId = MAX_REQUEST_ID
        client.request(b"b")
        client.request(b"c")
        ids = [i for i, _ in attempt.sentRequests()]
        self.assertEqual(ids, [0, MAX_REQUEST_ID, 1])


class BoundsTests(ClientTestCase):
    """
    Rule 8: the client bounds what it holds and what it accepts.
    """

    def test_maxPending(self) -> None:
        """At maxPending outstanding requests, one more fails at once with TooManyPending."""
        client = self.makeClient(maxPending=3)
        for _ in range(3):
            client.request(b"x")
        f = self.failureResultOf(client.request(b"x"), TooManyPending)
        self.assertIn("maxPending=3", str(f.value))
        self.assertEqual(client.pending, 3)
        self.assertEqual(client.stats()["rejected"], 1)
        self.assertEqual(client.stats()["requests"], 3)

    def test_payloadTooLarge(self) -> None:
        """A payload above maxPayload fails at once and opens nothing."""
        client = self.makeClient(maxPayload=10)
        f = self.failureResultOf(client.request(b"x" * 11), PayloadTooLarge)
        self.assertIn("maxPayload=10", str(f.value))
        self.assertEqual(self.endpoint.attempts, [])
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.request(b"x" * 10)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_oversizedResponseIsViolation(self) -> None:
        """A response above maxPayload fails the connection's requests with ProtocolViolation."""
        client = self.makeClient(maxPayload=10)
        d1, d2 = client.request(b"1"), client.request(b"2")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.protocol.dataReceived(encodeFrame(0, RESPONSE, b"x" * 11)[:9])
        f = self.failureResultOf(d1, ProtocolViolation)
        self.assertIn("maxPayload=10", str(f.value))
        self.failureResultOf(d2, ProtocolViolation)
        self.assertTrue(attempt.transport.aborted)
        self.assertFalse(client.connected)

    def test_validFramesBeforeViolationDelivered(self) -> None:
        """Frames before the bad one in the same chunk are delivered; the rest fail."""
        client = self.makeClient()
        d1, d2 = client.request(b"1"), client.request(b"2")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.protocol.dataReceived(encodeFrame(0, RESPONSE, b"one") + encodeFrame(1, 99, b"?"))
        self.assertEqual(self.successResultOf(d1), b"one")
        f = self.failureResultOf(d2, ProtocolViolation)
        self.assertIn("kind 99", str(f.value))

    def test_badOptions(self) -> None:
        """Out-of-range options raise ValueError naming the option."""
        for options, name in [
            ({"idleTimeout": -1}, "idleTimeout"),
            ({"connectTimeout": 0}, "connectTimeout"),
            ({"requestTimeout": -5}, "requestTimeout"),
            ({"maxPending": 0}, "maxPending"),
            ({"closeTimeout": 0}, "closeTimeout"),
            ({"maxPayload": -1}, "maxPayload"),
            ({"maxPayload": 2**32}, "maxPayload"),
        ]:
            e = self.assertRaises(ValueError, SockShareClientFactory, FakeEndpoint(), Clock(), **options)
            self.assertIn(name, str(e))


class CloseTests(ClientTestCase):
    """
    Rule 9: close() is graceful and leaves nothing behind.
    """

    def test_closeUnused(self) -> None:
        """Closing an unused client fires at once; later requests fail with ClientClosed."""
        client = self.makeClient()
        self.assertIsNone(self.successResultOf(client.close()))
        self.assertIsNone(self.successResultOf(client.close()))
        f = self.failureResultOf(client.request(b"x"), ClientClosed)
        self.assertIn("closed", str(f.value))
        self.assertEqual(self.endpoint.attempts, [])
        self.assertTrue(client.closed)

    def test_closeLetsOutstandingFinish(self) -> None:
        """Outstanding requests finish, then the connection closes, then close() fires."""
        client = self.makeClient(idleTimeout=60)
        d = client.request(b"x")
        attempt = self.endpoint.last
        attempt.succeed()
        closed = client.close()
        closedAgain = client.close()
        self.assertNoResult(closed)
        self.failureResultOf(client.request(b"y"), ClientClosed)
        self.assertFalse(attempt.transport.disconnecting)
        attempt.respond(0, b"done")
        self.assertEqual(self.successResultOf(d), b"done")
        self.assertTrue(attempt.transport.disconnecting)
        self.assertNoResult(closed)
        attempt.lose()
        self.successResultOf(closed)
        self.successResultOf(closedAgain)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeDuringLinger(self) -> None:
        """close() during the idle wait closes the connection now."""
        client = self.makeClient(idleTimeout=60)
        client.request(b"x")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        closed = client.close()
        self.assertTrue(attempt.transport.disconnecting)
        attempt.lose()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeWhileConnecting(self) -> None:
        """close() while connecting lets the waiting requests be sent and answered."""
        client = self.makeClient()
        d = client.request(b"x")
        closed = client.close()
        attempt = self.endpoint.last
        self.assertFalse(attempt.cancelled)
        attempt.succeed()
        attempt.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")
        attempt.lose()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeWhileConnectingNothingPending(self) -> None:
        """close() while connecting for cancelled requests abandons the attempt."""
        client = self.makeClient()
        d = client.request(b"x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        closed = client.close()
        self.assertTrue(self.endpoint.last.cancelled)
        self.successResultOf(closed)
        self.assertEqual(client.stats()["connectFailures"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeWithTimeouts(self) -> None:
        """Outstanding requests that time out still let close() finish."""
        client = self.makeClient(requestTimeout=5)
        d = client.request(b"x")
        attempt = self.endpoint.last
        attempt.succeed()
        closed = client.close()
        self.clock.advance(5)
        self.failureResultOf(d, RequestTimeout)
        attempt.lose()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class EventCountTests(ClientTestCase):
    """
    Each event of a client's life is counted once, in its own counter.
    """

    def test_eachEventCounted(self) -> None:
        """
        A failed connect, a response, a remote error, a cancel, a late reply
        and a timeout are each counted once.
        """
        client = self.makeClient(latencyHistogram=True, requestTimeout=5)
        failed = client.request(b"0")
        self.endpoint.last.fail(ConnectionRefusedError("no"))
        self.failureResultOf(failed, ConnectFailed)
        self.clock.advance(10)
        ds = [client.request(b"%d" % i) for i in range(4)]
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(3, b"fine")
        attempt.respondError(0, "bad")
        ds[1].cancel()
        attempt.respond(1, b"late")
        self.clock.advance(5)
        self.failureResultOf(ds[0], RemoteError)
        self.failureResultOf(ds[1], CancelledError)
        self.failureResultOf(ds[2], RequestTimeout)
        self.assertEqual(self.successResultOf(ds[3]), b"fine")
        stats = client.stats()
        self.assertEqual(
            (stats["connectFailures"], stats["responses"], stats["remoteErrors"], stats["cancelled"]),
            (1, 1, 1, 1),
        )
        self.assertEqual((stats["lateResponses"], stats["timeouts"]), (1, 1))
        self.assertEqual(stats["requests"], 5)
        self.assertEqual(client.latency().count, 2)
