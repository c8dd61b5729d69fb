"""
Deterministic tests of L{SockShareClientFactory}: every rule of the shared
connection, and the races between events, with a fake endpoint and clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    SockShareClientFactory,
    TooManyPending,
)
from twisted_sockshare.wire import MAX_REQUEST_ID, RESPONSE, encodeFrame

from .helpers import FakeEndpoint


class ClientTestCase(SynchronousTestCase):
    """
    Builds a client on a L{FakeEndpoint} and a L{Clock}.
    """

    def makeClient(self, **options: object) -> SockShareClientFactory:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.client = SockShareClientFactory(self.endpoint, self.clock, **options)  # type: ignore[arg-type]
        return self.client

    def assertInvariant(self) -> None:
        """
        Every accepted request is answered, failed or pending.
        """
        s = self.client.stats()
        self.assertEqual(s["requests"], s["responses"] + s["remoteErrors"] + s["failures"] + s["pending"])
        self.assertGreaterEqual(s["pending"], 0)


class LazyTests(ClientTestCase):
    """
    Rule 1: nothing connects before the first request, and one attempt serves
    every request made while it is under way.
    """

    def test_noConnectBeforeRequest(self) -> None:
        """A new client opens nothing."""
        client = self.makeClient()
        self.assertEqual(self.endpoint.attempts, [])
        self.assertFalse(client.connected)
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestsWhileConnectingShareOneAttempt(self) -> None:
        """Requests made while connecting wait for the same attempt and are sent in order."""
        client = self.makeClient()
        ds = [client.request(b"r%d" % i) for i in range(5)]
        self.assertEqual(len(self.endpoint.attempts), 1)
        for d in ds:
            self.assertNoResult(d)
        self.assertEqual(client.pending, 5)
        self.assertFalse(client.connected)
        self.endpoint.last.succeed()
        self.assertTrue(client.connected)
        sent = self.endpoint.last.sentRequests()
        self.assertEqual([p for _, p in sent], [b"r0", b"r1", b"r2", b"r3", b"r4"])
        self.assertEqual(len({i for i, _ in sent}), 5)

    def test_requestWhenConnectedWritesAtOnce(self) -> None:
        """A request made while connected is written at once, on the same connection."""
        client = self.makeClient()
        client.request(b"a")
        self.endpoint.last.succeed()
        client.request(b"b")
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertEqual([p for _, p in self.endpoint.last.sentRequests()], [b"a", b"b"])

    def test_endpointString(self) -> None:
        """An endpoint string is parsed with the given reactor."""
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        client = SockShareClientFactory("tcp:127.0.0.1:9999", reactor)
        client.request(b"x")
        self.assertEqual(len(reactor.tcpClients), 1)
        host, port = reactor.tcpClients[0][:2]
        self.assertEqual((host, port), ("127.0.0.1", 9999))
        self.assertIn("127.0.0.1:9999", repr(client))


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


class IdleCloseTests(ClientTestCase):
    """
    Rule 3: the connection is closed when the pending count returns to zero.
    """

    def test_closedWhenLastResponseArrives(self) -> None:
        """With idleTimeout=0 the last response closes the connection."""
        client = self.makeClient(idleTimeout=0)
        client.request(b"1"), client.request(b"2")
        attempt = self.endpoint.last
        attempt.succeed()
        (i1, _), (i2, _) = attempt.sentRequests()
        attempt.respond(i1, b"")
        self.assertFalse(attempt.transport.disconnecting)
        attempt.respond(i2, b"")
        self.assertTrue(attempt.transport.disconnecting)
        self.assertFalse(attempt.transport.aborted)
        self.assertFalse(client.connected)
        attempt.lose()
        self.assertEqual(client.stats()["connectionsClosed"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestFromCallbackReusesConnection(self) -> None:
        """A request made from the last response's callback reuses the connection."""
        client = self.makeClient(idleTimeout=0)
        d = client.request(b"1")
        follow: list[Deferred[bytes]] = []
        d.addCallback(lambda _: follow.append(client.request(b"2")))
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(attempt.sentRequests()[0][0], b"")
        self.assertFalse(attempt.transport.disconnecting)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"1", b"2"])
        attempt.respond(attempt.sentRequests()[1][0], b"done")
        self.assertEqual(self.successResultOf(follow[0]), b"done")
        self.assertTrue(attempt.transport.disconnecting)

    def test_idleTimeoutLingers(self) -> None:
        """With idleTimeout>0 the connection stays open that long after the last response."""
        client = self.makeClient(idleTimeout=5.0, requestTimeout=None)
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        self.assertTrue(client.connected)
        self.clock.advance(4.9)
        self.assertFalse(attempt.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(attempt.transport.disconnecting)
        self.assertFalse(client.connected)
        attempt.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def quiet(self) -> tuple[SockShareClientFactory, Any]:
        """
        A client (idleTimeout=5) whose first request was answered: its
        connection is open with nothing pending.
        """
        client = self.makeClient(idleTimeout=5.0, requestTimeout=None)
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        return client, attempt

    def test_requestDuringIdleWaitReusesConnection(self) -> None:
        """
        A request during the idle wait reuses the connection, which stays
        open while it is pending, however long.
        """
        client, attempt = self.quiet()
        self.clock.advance(3)
        d = client.request(b"2")
        self.clock.advance(10)
        self.assertFalse(attempt.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.endpoint.attempts), 1)
        attempt.respond(attempt.sentRequests()[1][0], b"two")
        self.assertEqual(self.successResultOf(d), b"two")
        self.clock.advance(5)
        self.assertTrue(attempt.transport.disconnecting)

    def test_connectionLifeLoggedOnlyWhenNoisy(self) -> None:
        """
        Connecting, connected, closing when idle and closed are logged (at
        debug level) only by a C{noisy} client, as Twisted's factories do:
        with C{idleTimeout=0} they would be four lines per request.
        """
        for noisy, expected in [(False, []), (True, ["Connecting", "Connected", "Closing idle", "closed"])]:
            events: list[dict] = []
            globalLogPublisher.addObserver(events.append)
            try:
                client = self.makeClient(idleTimeout=0)
                client.noisy = noisy
                client.request(b"1")
                attempt = self.endpoint.last
                attempt.succeed()
                attempt.respond(0, b"")
                attempt.transport.loseConnection()
                attempt.protocol.connectionLost(Failure(ConnectionDone()))
            finally:
                globalLogPublisher.removeObserver(events.append)
            texts = [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("twisted_sockshare")]
            self.assertEqual(len(texts), len(expected), texts)
            for text, start in zip(texts, expected, strict=True):
                self.assertIn(start, text)

    def test_idleTimeoutCountsFromLastQuiet(self) -> None:
        """
        The connection closes C{idleTimeout} after the pending count last
        fell to zero, not after it first did: a request answered during the
        wait starts the wait again, and one timer serves it all.
        """
        client, attempt = self.quiet()
        self.clock.advance(3)
        client.request(b"2")
        attempt.respond(attempt.sentRequests()[1][0], b"two")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)  # 5 s after the first quiet, 2 s after the last
        self.assertFalse(attempt.transport.disconnecting)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2.9)
        self.assertFalse(attempt.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(attempt.transport.disconnecting)

    def test_idleTimeoutNoneKeepsConnection(self) -> None:
        """With idleTimeout=None the idle connection stays open until close()."""
        client = self.makeClient(idleTimeout=None)
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        self.clock.advance(3600)
        self.assertTrue(client.connected)
        self.assertFalse(attempt.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d = client.request(b"2")
        attempt.respond(attempt.sentRequests()[1][0], b"two")
        self.assertEqual(self.successResultOf(d), b"two")
        self.assertEqual(len(self.endpoint.attempts), 1)
        closed = client.close()
        self.assertTrue(attempt.transport.disconnecting)
        attempt.lose()
        self.successResultOf(closed)

    def test_deadlineTimerCancelledOnIdleClose(self) -> None:
        """Once the connection closes at zero, no timer of ours is left."""
        client = self.makeClient(requestTimeout=30, idleTimeout=0)
        client.request(b"1")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # connect + request deadline
        attempt = self.endpoint.last
        attempt.succeed()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        attempt.respond(0, b"")
        # Only the bound on the close itself is left, until the close completes.
        (bound,) = self.clock.getDelayedCalls()
        self.assertEqual(bound.getTime(), self.clock.seconds() + client.closeTimeout)
        attempt.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowCloseAborted(self) -> None:
        """
        A peer that never completes the close (never reads our FIN) is
        aborted after closeTimeout, so close() always finishes.
        """
        client = self.makeClient(closeTimeout=3.0)
        client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        closed = client.close()
        self.assertTrue(attempt.transport.disconnecting)
        self.clock.advance(2.9)
        self.assertFalse(attempt.transport.aborted)
        self.assertNoResult(closed)
        self.clock.advance(0.1)
        self.assertTrue(attempt.transport.aborted)
        attempt.drop()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClosingConnectionTests(ClientTestCase):
    """
    Rule 4: a request never touches a connection whose close has begun.
    """

    def test_requestDuringCloseGetsNewConnection(self) -> None:
        """A request after the close began (before connectionLost) goes on a new connection."""
        client = self.makeClient(idleTimeout=0)
        client.request(b"1")
        old = self.endpoint.last
        old.succeed()
        old.respond(0, b"")
        self.assertTrue(old.transport.disconnecting)
        written = old.transport.value()
        d = client.request(b"2")
        self.assertEqual(old.transport.value(), written)
        self.assertEqual(len(self.endpoint.attempts), 2)
        new = self.endpoint.last
        new.succeed()
        old.lose()
        self.assertTrue(client.connected)
        self.assertNoResult(d)
        new.respond(new.sentRequests()[0][0], b"fresh")
        self.assertEqual(self.successResultOf(d), b"fresh")
        self.assertEqual(client.stats()["connectionsOpened"], 2)
        self.assertEqual(client.stats()["connectionsClosed"], 1)

    def test_lateDataOnClosingConnection(self) -> None:
        """Frames arriving on a closing connection are counted as late, not delivered."""
        client = self.makeClient()
        client.request(b"1")
        old = self.endpoint.last
        old.succeed()
        old.respond(0, b"")
        old.respond(0, b"again")
        self.assertEqual(client.stats()["lateResponses"], 1)


class ConnectFailureTests(ClientTestCase):
    """
    Rule 5: a failed connection attempt fails its waiters and returns to idle.
    """

    def test_waitersFailWithCause(self) -> None:
        """Every request waiting on a failed attempt fails with ConnectFailed naming the cause."""
        client = self.makeClient()
        ds = [client.request(b"x") for _ in range(3)]
        self.endpoint.last.fail(ConnectionRefusedError("no one home"))
        for d in ds:
            f = self.failureResultOf(d, ConnectFailed)
            self.assertIn("no one home", str(f.value))
        self.assertEqual(client.pending, 0)
        self.assertEqual(client.stats()["connectFailures"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertInvariant()

    def test_nextRequestRetries(self) -> None:
        """After a failed attempt and its backoff, the next request connects again (no hidden retry)."""
        client = self.makeClient()
        client.request(b"x").addErrback(lambda _: None)
        self.endpoint.last.fail(ConnectionRefusedError())
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 1)
        d = client.request(b"y")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.endpoint.last.succeed()
        self.endpoint.last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_connectTimeout(self) -> None:
        """An attempt slower than connectTimeout is cancelled and its waiters fail."""
        client = self.makeClient(connectTimeout=2.5)
        d = client.request(b"x")
        self.clock.advance(2.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertTrue(self.endpoint.last.cancelled)
        f = self.failureResultOf(d, ConnectFailed)
        self.assertIn("connectTimeout=2.5", str(f.value))
        self.assertFalse(client.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectTimeoutNone(self) -> None:
        """connectTimeout=None leaves the attempt to the endpoint."""
        client = self.makeClient(connectTimeout=None, requestTimeout=None)
        d = client.request(b"x")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(d)

    def test_errbackRetriesOnNewAttempt(self) -> None:
        """With no backoff, a request made from a ConnectFailed errback starts a new attempt."""
        client = self.makeClient(connectBackoff=lambda failures: 0.0)
        retried: list[Deferred[bytes]] = []
        client.request(b"x").addErrback(lambda _: retried.append(client.request(b"again")))
        self.endpoint.last.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.endpoint.last.succeed()
        self.assertEqual([p for _, p in self.endpoint.last.sentRequests()], [b"again"])

    def test_backoffFailsFast(self) -> None:
        """After a failed attempt, requests fail at once for connectBackoff; then the next one connects."""
        delays: list[int] = []
        client = self.makeClient(connectBackoff=lambda failures: delays.append(failures) or 2.0 * (failures + 1))
        client.request(b"x").addErrback(lambda _: None)
        self.endpoint.last.fail(ConnectionRefusedError("no"))
        f = self.failureResultOf(client.request(b"y"), ConnectFailed)
        self.assertIn("1 attempts failed in a row; the next in 2.00 s", str(f.value))
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.clock.advance(2)
        client.request(b"z").addErrback(lambda _: None)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.endpoint.last.fail(ConnectionRefusedError("no"))
        self.clock.advance(3.9)
        self.failureResultOf(client.request(b"w"), ConnectFailed)
        self.clock.advance(0.1)
        d = client.request(b"v")
        self.endpoint.last.succeed()
        self.endpoint.last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(delays, [0, 1])
        client.request(b"u")
        self.assertEqual(len(self.endpoint.attempts), 3)  # a success resets the count
        self.assertEqual(client.stats()["connectFailures"], 2)

    def test_defaultBackoffBounded(self) -> None:
        """The default backoff starts near 0.1 s, doubles, and stays within 5.1 s."""
        from twisted_sockshare.client import _defaultBackoff

        self.assertTrue(0.1 <= _defaultBackoff(0) <= 0.2)
        self.assertTrue(0.2 <= _defaultBackoff(1) <= 0.3)
        self.assertTrue(5.0 <= _defaultBackoff(50) <= 5.1)

    def test_endpointRaises(self) -> None:
        """An endpoint whose connect() raises gives ConnectFailed, not an exception."""
        client = self.makeClient()

        def broken(factory: object) -> None:
            raise RuntimeError("endpoint bug")

        self.endpoint.connect = broken  # type: ignore[method-assign]
        f = self.failureResultOf(client.request(b"x"), ConnectFailed)
        self.assertIn("endpoint bug", str(f.value))
        self.assertEqual(client.pending, 0)

    def test_lostBeforeReported(self) -> None:
        """A connection lost before the endpoint reports it fails the waiters with ConnectFailed."""
        client = self.makeClient()
        d = client.request(b"x")
        attempt = self.endpoint.last
        protocol = client.buildProtocol(None)
        from .helpers import StrictTransport

        protocol.makeConnection(StrictTransport())
        protocol.connectionLost(ConnectionRefusedError())  # type: ignore[arg-type]
        attempt.deferred.callback(protocol)
        self.failureResultOf(d, ConnectFailed)
        self.assertFalse(client.connected)


class ConnectionLostTests(ClientTestCase):
    """
    Rule 6: losing the connection fails what was in flight; the next request reconnects.
    """

    def test_inFlightFail(self) -> None:
        """Every request in flight fails with ConnectionDropped."""
        client = self.makeClient()
        ds = [client.request(b"x") for _ in range(3)]
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.drop()
        for d in ds:
            f = self.failureResultOf(d, ConnectionDropped)
            self.assertIn("peer vanished", str(f.value))
        self.assertFalse(client.connected)
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertInvariant()

    def test_errbackRequestGoesToNewConnection(self) -> None:
        """A request issued from the errback of a dying connection goes to a new connection."""
        client = self.makeClient()
        retried: list[Deferred[bytes]] = []
        old = self.endpoint.attempts
        client.request(b"x").addErrback(lambda _: retried.append(client.request(b"retry")))
        attempt = self.endpoint.last
        attempt.succeed()
        before = attempt.transport.value()
        attempt.drop()
        self.assertEqual(attempt.transport.value(), before)
        self.assertEqual(len(old), 2)
        self.endpoint.last.succeed()
        self.assertEqual([p for _, p in self.endpoint.last.sentRequests()], [b"retry"])
        self.endpoint.last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(retried[0]), b"ok")

    def test_idleLossIsHarmless(self) -> None:
        """The backend closing an idle lingering connection just returns to idle."""
        client = self.makeClient(idleTimeout=10, requestTimeout=None)
        client.request(b"x")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"")
        attempt.lose()
        self.assertFalse(client.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.request(b"y")
        self.assertEqual(len(self.endpoint.attempts), 2)


class TimeoutTests(ClientTestCase):
    """
    Rule 7: a timed-out request fails and, by default, resets its connection.
    """

    def test_timeoutResetsConnection(self) -> None:
        """A timeout fails that request with RequestTimeout and the others with ConnectionDropped."""
        client = self.makeClient(requestTimeout=10, resetOnTimeout=True)
        d1 = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(5)
        d2 = client.request(b"2")
        self.clock.advance(5)
        f = self.failureResultOf(d1, RequestTimeout)
        self.assertIn("requestTimeout=10", str(f.value))
        self.failureResultOf(d2, ConnectionDropped)
        self.assertTrue(attempt.transport.aborted)
        self.assertFalse(client.connected)
        self.assertEqual(client.stats()["timeouts"], 1)
        self.assertEqual(client.pending, 0)
        attempt.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.request(b"3")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertInvariant()

    def test_timeoutErrbackGetsNewConnection(self) -> None:
        """A request made from a RequestTimeout errback goes on a fresh connection."""
        client = self.makeClient(requestTimeout=10, resetOnTimeout=True)
        retried: list[Deferred[bytes]] = []
        client.request(b"1").addErrback(lambda _: retried.append(client.request(b"retry")))
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(10)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(len(attempt.sentRequests()), 1)

    def test_noResetOnTimeout(self) -> None:
        """With resetOnTimeout=False only the late request fails; its response is discarded."""
        client = self.makeClient(requestTimeout=10, resetOnTimeout=False)
        d1 = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(5)
        d2 = client.request(b"2")
        self.clock.advance(5)
        self.failureResultOf(d1, RequestTimeout)
        self.assertNoResult(d2)
        self.assertTrue(client.connected)
        self.assertFalse(attempt.transport.disconnecting)
        attempt.respond(0, b"late")
        self.assertEqual(client.stats()["lateResponses"], 1)
        attempt.respond(1, b"two")
        self.assertEqual(self.successResultOf(d2), b"two")

    def test_oneTimerMovesForward(self) -> None:
        """One timer serves many requests and moves to the oldest unanswered deadline."""
        client = self.makeClient(requestTimeout=30, resetOnTimeout=False)
        client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        self.clock.advance(10)
        db = client.request(b"b")
        for _ in range(50):
            client.request(b"more").addErrback(lambda _: None)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        attempt.respond(0, b"a")
        self.clock.advance(20)
        self.assertNoResult(db)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.failureResultOf(db, RequestTimeout)

    def test_queuedRequestTimesOut(self) -> None:
        """A request still waiting for the connection times out and is never sent."""
        client = self.makeClient(requestTimeout=1, connectTimeout=5)
        d = client.request(b"x")
        self.clock.advance(1)
        self.failureResultOf(d, RequestTimeout)
        self.endpoint.last.succeed()
        self.assertEqual(self.endpoint.last.sentRequests(), [])

    def test_noTimeout(self) -> None:
        """requestTimeout=None schedules nothing per request."""
        client = self.makeClient(requestTimeout=None)
        d = client.request(b"x")
        self.endpoint.last.succeed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertNoResult(d)

    def test_remoteErrorKeepsConnection(self) -> None:
        """An ERROR frame fails only its request; the connection stays up."""
        client = self.makeClient()
        d1, d2 = client.request(b"1"), client.request(b"2")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respondError(0, "ValueError: bad key")
        f = self.failureResultOf(d1, RemoteError)
        self.assertEqual(f.value.remoteMessage, "ValueError: bad key")
        self.assertTrue(client.connected)
        attempt.respond(1, b"fine")
        self.assertEqual(self.successResultOf(d2), b"fine")


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


class CancelTests(ClientTestCase):
    """
    Rule 10: cancelling a request fails it and leaves the connection for the others.
    """

    def test_cancelSent(self) -> None:
        """Cancelling a sent request fails it with CancelledError; its response is then late."""
        client = self.makeClient()
        d1, d2 = client.request(b"1"), client.request(b"2")
        attempt = self.endpoint.last
        attempt.succeed()
        d1.cancel()
        self.failureResultOf(d1, CancelledError)
        self.assertEqual(client.pending, 1)
        self.assertTrue(client.connected)
        attempt.respond(0, b"late")
        self.assertEqual(client.stats()["lateResponses"], 1)
        attempt.respond(1, b"two")
        self.assertEqual(self.successResultOf(d2), b"two")
        self.assertEqual(client.stats()["cancelled"], 1)
        self.assertInvariant()

    def test_cancelQueued(self) -> None:
        """A request cancelled while waiting for the connection is never sent."""
        client = self.makeClient()
        d1, d2 = client.request(b"1"), client.request(b"2")
        d1.cancel()
        self.failureResultOf(d1, CancelledError)
        self.endpoint.last.succeed()
        self.assertEqual([p for _, p in self.endpoint.last.sentRequests()], [b"2"])
        self.assertNoResult(d2)

    def test_cancelLastClosesConnection(self) -> None:
        """Cancelling the last pending request brings the count to zero and closes."""
        client = self.makeClient(idleTimeout=0)
        d = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(attempt.transport.disconnecting)

    def test_cancelAfterFiring(self) -> None:
        """Cancelling an answered request changes nothing."""
        client = self.makeClient(idleTimeout=1)
        d = client.request(b"1")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.respond(0, b"x")
        d.cancel()
        self.assertEqual(self.successResultOf(d), b"x")
        self.assertEqual(client.stats()["cancelled"], 0)


class LifetimeTests(ClientTestCase):
    """
    Long-lived connections are renewed: too old, or too many orphans, and a
    connection takes no new requests, finishes its own and closes.
    """

    def test_maxLifetimeHandover(self) -> None:
        """A request after maxLifetime goes to a fresh connection; the old one finishes its requests first."""
        client = self.makeClient(maxLifetime=10, idleTimeout=None, requestTimeout=None)
        client.request(b"1")
        old = self.endpoint.last
        old.succeed()
        old.respond(0, b"one")
        self.clock.advance(5)
        inFlight = client.request(b"2")
        self.clock.advance(6)
        fresh = client.request(b"3")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertFalse(old.transport.disconnecting)
        new = self.endpoint.last
        new.succeed()
        self.assertEqual([p for _, p in new.sentRequests()], [b"3"])
        old.respond(old.sentRequests()[1][0], b"two")
        self.assertEqual(self.successResultOf(inFlight), b"two")
        self.assertTrue(old.transport.disconnecting)
        old.lose()
        new.respond(new.sentRequests()[0][0], b"three")
        self.assertEqual(self.successResultOf(fresh), b"three")
        s = client.stats()
        self.assertEqual((s["connectionsRetired"], s["failures"], s["connected"]), (1, 0, 1))
        self.assertInvariant()

    def test_retiredConnectionLost(self) -> None:
        """Requests still on a retired connection fail with ConnectionDropped if it is lost."""
        client = self.makeClient(maxLifetime=1, idleTimeout=None, requestTimeout=None)
        stuck = client.request(b"1")
        old = self.endpoint.last
        old.succeed()
        self.clock.advance(2)
        client.request(b"2")
        old.drop()
        self.assertIn("retired", str(self.failureResultOf(stuck, ConnectionDropped).value))
        self.assertEqual(client.pending, 1)
        closed = client.close()
        self.endpoint.last.succeed()
        self.endpoint.last.respond(0, b"")
        self.endpoint.last.lose()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_maxOrphans(self) -> None:
        """With resetOnTimeout=False, too many orphaned requests retire the connection; late replies are forgiven."""
        client = self.makeClient(resetOnTimeout=False, requestTimeout=1, maxOrphans=1, idleTimeout=None)
        timedOut = [client.request(b"1")]
        first = self.endpoint.last
        first.succeed()
        self.clock.advance(1)
        first.respond(0, b"late")  # the orphan's reply: back to 0 orphans
        timedOut.append(client.request(b"2"))
        self.clock.advance(1)
        self.assertFalse(first.transport.disconnecting)  # 1 orphan: not more than maxOrphans
        timedOut.append(client.request(b"3"))
        self.clock.advance(1)
        for d in timedOut:
            self.failureResultOf(d, RequestTimeout)
        self.assertTrue(first.transport.disconnecting)
        self.assertEqual(client.stats()["connectionsRetired"], 1)
        client.request(b"4")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertRaises(ValueError, SockShareClientFactory, FakeEndpoint(), Clock(), maxOrphans=-1)
        self.assertRaises(ValueError, SockShareClientFactory, FakeEndpoint(), Clock(), maxLifetime=0)


class AttributeCountTests(ClientTestCase):
    """
    The request path reads the client's own attributes; CPython reads them
    fastest while an object has fewer than 30 (benchmarks/attribute_reads.py),
    so no event of a client's life takes it to 30.
    """

    def test_fewAttributesAfterEveryEvent(self) -> None:
        """
        A failed connect, a response, a remote error, a cancel, a late reply
        and a timeout leave the client fewer than 30 attributes.
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
        self.assertLess(len(vars(client)), 30, sorted(vars(client)))
