"""
Request timeouts of a shared client, with a fake endpoint and clock: one
timer for every request, what a timeout does to its connection, and the
PING that asks a silent one whether it is alive.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from twisted_sockshare import (
    ConnectionDropped,
    RemoteError,
    RequestTimeout,
)

from .helpers import ClientTestCase


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
