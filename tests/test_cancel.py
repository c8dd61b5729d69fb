"""
Cancelling a shared client's request, with a fake endpoint and clock: it
fails alone, frees what it held, and tells the server (CANCEL).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError

from .helpers import ClientTestCase


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
