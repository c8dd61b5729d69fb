"""
C{close()} is bounded: it waits at most C{closeTimeout} for pending
requests, then fails them with L{ClientClosed} and aborts.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    ClientClosed,
    SockShareClientFactory,
)

from .helpers import FakeEndpoint


class CloseBoundTests(SynchronousTestCase):
    """
    Close() waits at most closeTimeout for pending requests, then
    fails them with ClientClosed and aborts.
    """

    def test_silentBackendDefaults(self) -> None:
        """With default options and a silent backend, close() ends after closeTimeout (10 s), not 30."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock)
        d = client.request(b"x")
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(9.9)
        self.assertNoResult(closed)
        self.assertNoResult(d)
        clock.advance(0.1)
        f = self.failureResultOf(d, ClientClosed)
        self.assertIn("closeTimeout=10.0", str(f.value))
        self.assertTrue(endpoint.last.transport.aborted)
        endpoint.last.drop()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(client.pending, 0)

    def test_noRequestTimeout(self) -> None:
        """With requestTimeout=None and closeTimeout=2, close() ends after 2 s."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, requestTimeout=None, closeTimeout=2)
        ds = [client.request(b"x") for _ in range(3)]
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(2)
        for d in ds:
            self.failureResultOf(d, ClientClosed)
        endpoint.last.drop()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stillConnecting(self) -> None:
        """Requests still waiting for a connection that never comes fail with ClientClosed too."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, connectTimeout=None, closeTimeout=1)
        d = client.request(b"x")
        closed = client.close()
        clock.advance(1)
        self.failureResultOf(d, ClientClosed)
        self.assertTrue(endpoint.last.cancelled)
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answeredInTime(self) -> None:
        """Requests answered within closeTimeout succeed, and the close timer is cancelled."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, closeTimeout=5)
        d = client.request(b"x")
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(4)
        endpoint.last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")
        endpoint.last.lose()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])
