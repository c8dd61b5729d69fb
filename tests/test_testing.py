"""
The doubles shipped for users' tests, and the interface every client offers.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_sockshare import ClientClosed, RemoteError, SockShareBalancer, SockShareClientFactory
from twisted_sockshare.demo.strategies import PerRequestClient, SerializedClient
from twisted_sockshare.interfaces import ISockShareClient
from twisted_sockshare.stats import STAT_KEYS
from twisted_sockshare.testing import MemoryBackend, StubSockShareClient

from .helpers import FakeEndpoint


class InterfaceTests(SynchronousTestCase):
    def test_everyClientProvidesIt(self) -> None:
        """The shared client, the balancer, the comparison strategies and the stub all provide ISockShareClient."""
        clock = Clock()
        for client in [
            SockShareClientFactory(FakeEndpoint(), clock),
            SockShareBalancer([FakeEndpoint(), FakeEndpoint()], clock),
            PerRequestClient(FakeEndpoint(), clock),
            SerializedClient(FakeEndpoint(), clock),
            StubSockShareClient(bytes.upper),
        ]:
            self.assertTrue(verifyObject(ISockShareClient, client))
            self.assertEqual(list(client.stats())[: len(STAT_KEYS)], list(STAT_KEYS), client)


class StubTests(SynchronousTestCase):
    def test_answersFromHandler(self) -> None:
        """Replies come from the handler at once; the payloads are recorded; stats count them."""
        stub = StubSockShareClient(bytes.upper)
        self.assertEqual(self.successResultOf(stub.request(b"abc")), b"ABC")
        self.assertEqual(stub.requests, [b"abc"])
        self.assertEqual((stub.stats()["responses"], stub.stats()["requests"], stub.pending), (1, 1, 0))

    def test_handlerErrorIsRemoteError(self) -> None:
        """An exception in the handler fails the request with RemoteError, as the backend's ERROR frame would."""

        def handler(payload: bytes) -> bytes:
            raise KeyError(payload.decode())

        f = self.failureResultOf(StubSockShareClient(handler).request(b"k"), RemoteError)
        self.assertEqual(f.value.remoteMessage, "KeyError: 'k'")

    def test_deferredHandlerAndCancel(self) -> None:
        """A handler's Deferred is awaited; cancelling the request cancels it; close waits for the rest."""
        clock = Clock()
        stub = StubSockShareClient(lambda payload: deferLater(clock, 1, lambda: payload))
        slow, cancelled = stub.request(b"slow"), stub.request(b"x")
        self.assertEqual(stub.pending, 2)
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        closed = stub.close()
        self.failureResultOf(stub.request(b"late"), ClientClosed)
        self.failureResultOf(stub.request("text"), TypeError)  # type: ignore[arg-type]
        self.assertNoResult(closed)
        clock.advance(1)
        self.assertEqual(self.successResultOf(slow), b"slow")
        self.successResultOf(closed)
        s = stub.stats()
        self.assertEqual((s["cancelled"], s["rejected"], s["requests"]), (1, 2, 2))


class MemoryBackendTests(SynchronousTestCase):
    def test_realClientAndServer(self) -> None:
        """A real client and server exchange frames in memory; the test moves the bytes."""
        backend = MemoryBackend(bytes.upper)
        client = backend.client(idleTimeout=0)
        ds = [client.request(b"hi %d" % i) for i in range(3)]
        for d in ds:
            self.assertNoResult(d)
        backend.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [b"HI 0", b"HI 1", b"HI 2"])
        self.assertEqual(backend.serverFactory.stats()["connectionsOpened"], 1)
        self.assertEqual(client.stats()["connectionsClosed"], 1)  # closed at zero, as configured
        self.successResultOf(client.close())

    def test_timeAndErrors(self) -> None:
        """The server's Deferred handler runs on the backend's clock; its errors come back as RemoteError."""
        clock = Clock()

        def handler(payload: bytes) -> Deferred[bytes]:
            if payload == b"bad":
                raise ValueError("no")
            return deferLater(clock, 5, lambda: payload)

        backend = MemoryBackend(handler, clock)
        client = backend.client(requestTimeout=10, idleTimeout=1)
        good, bad = client.request(b"good"), client.request(b"bad")
        backend.flush()
        self.assertEqual(self.failureResultOf(bad, RemoteError).value.remoteMessage, "ValueError: no")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)  # the server logs its handler's failures
        clock.advance(5)
        backend.flush()
        self.assertEqual(self.successResultOf(good), b"good")
        self.assertTrue(client.connected)
        clock.advance(1)
        backend.flush()
        self.assertFalse(client.connected)
        closed = client.close()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])
