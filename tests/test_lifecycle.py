"""
A shared client's connection through its life, with a fake endpoint and
clock: opened lazily on the first request, closed after its linger, failed
connects and their backoff, a connection lost under its requests, and its
retirement (maxLifetime, maxRequestsPerConnection, small id spaces).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from twisted_sockshare import (
    ConnectFailed,
    ConnectionDropped,
    RequestTimeout,
    SockShareClientFactory,
)

from .helpers import ClientTestCase, FakeEndpoint


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
        from twisted_sockshare._backoff import defaultBackoff as _defaultBackoff

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
