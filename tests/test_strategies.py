"""
Tests of the per-request strategy kept for comparison.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ClientClosed, TooManyPending
from twisted_sockshare.demo.strategies import PerRequestClient, SerializedClient

from .helpers import FakeEndpoint


class PerRequestTests(SynchronousTestCase):
    """
    Every request gets its own connection, closed after the reply.
    """

    def test_oneConnectionPerRequest(self) -> None:
        """Two concurrent requests open two connections, each closed after its reply."""
        endpoint = FakeEndpoint()
        client = PerRequestClient(endpoint, Clock(), idleTimeout=60, maxPending=2)
        d1, d2 = client.request(b"1"), client.request(b"2")
        self.assertEqual(len(endpoint.attempts), 2)
        self.failureResultOf(client.request(b"3"), TooManyPending)
        for attempt in endpoint.attempts:
            attempt.succeed()
            attempt.respond(0, b"ok")
            self.assertTrue(attempt.transport.disconnecting)
            attempt.lose()
        self.assertEqual(self.successResultOf(d1), b"ok")
        self.assertEqual(self.successResultOf(d2), b"ok")
        stats = client.stats()
        self.assertEqual(
            (stats["connectionsOpened"], stats["connectionsClosed"], stats["responses"], stats["rejected"]),
            (2, 2, 2, 1),
        )
        self.assertEqual(stats["peakPending"], 2)
        self.assertEqual(stats["pending"], 0)

    def test_close(self) -> None:
        """close() waits for open connections, then refuses requests."""
        endpoint = FakeEndpoint()
        client = PerRequestClient(endpoint, Clock())
        d = client.request(b"1")
        closed = client.close()
        self.assertNoResult(closed)
        endpoint.last.succeed()
        endpoint.last.respond(0, b"ok")
        endpoint.last.lose()
        self.successResultOf(closed)
        self.assertEqual(self.successResultOf(d), b"ok")
        self.failureResultOf(client.request(b"2"), ClientClosed)
        self.successResultOf(client.close())


class SerializedTests(SynchronousTestCase):
    """
    One connection, one request at a time.
    """

    def test_oneAtATime(self) -> None:
        """The second request is written only after the first is answered, on the same connection."""
        endpoint = FakeEndpoint()
        client = SerializedClient(endpoint, Clock())
        d1, d2 = client.request(b"1"), client.request(b"2")
        self.assertEqual(client.pending, 2)
        attempt = endpoint.last
        attempt.succeed()
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"1"])
        attempt.respond(attempt.sentRequests()[0][0], b"one")
        self.assertEqual(self.successResultOf(d1), b"one")
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"1", b"2"])
        attempt.respond(attempt.sentRequests()[1][0], b"two")
        self.assertEqual(self.successResultOf(d2), b"two")
        self.assertEqual(client.pending, 0)
        self.assertTrue(client.stats()["connected"])
        self.assertEqual(len(endpoint.attempts), 1)

    def test_closeFailsWaiting(self) -> None:
        """After close(), requests still waiting their turn fail with ClientClosed."""
        endpoint = FakeEndpoint()
        client = SerializedClient(endpoint, Clock())
        d1, d2 = client.request(b"1"), client.request(b"2")
        attempt = endpoint.last
        attempt.succeed()
        closed = client.close()
        attempt.respond(attempt.sentRequests()[0][0], b"one")
        self.assertEqual(self.successResultOf(d1), b"one")
        self.failureResultOf(d2, ClientClosed)
        attempt.lose()
        self.successResultOf(closed)
        self.assertEqual(client.pending, 0)
