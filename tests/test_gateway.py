"""
The gateway's exchange of an HTTP request for a backend request, with the
stub client (the real client over an in-memory backend) and Twisted's
C{DummyRequest}.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twisted_sockshare import RequestContext, SockShareClientFactory
from twisted_sockshare.demo.gateway import TIMEOUT_HEADER, GatewayResource
from twisted_sockshare.testing import StubSockShareClient

from .contract import PORTS, Backends, Handler


def post(gateway: GatewayResource, body: bytes) -> DummyRequest:
    request = DummyRequest([b"request"])
    request.method = b"POST"
    request.content = BytesIO(body)
    resource = gateway.getChildWithDefault(b"request", request)
    assert resource.render(request) is NOT_DONE_YET
    return request


class ExchangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = Handler()
        self.backend = StubSockShareClient(self.handler)
        self.gateway = GatewayResource(self.backend, "shared", "stub")

    def test_answered(self) -> None:
        """The backend's reply is the HTTP response's body."""
        request = post(self.gateway, b"echo hi")
        self.assertEqual((request.finished, b"".join(request.written)), (1, b"echo hi"))

    def test_clientGoneCancelsTheBackendRequest(self) -> None:
        """An HTTP client that goes away cancels its backend request: CANCEL reaches the backend, nothing waits."""
        request = post(self.gateway, b"hold 1")
        self.assertEqual(self.backend.pending, 1)
        request.processingFailed(Failure(ConnectionLost("the HTTP client went away")))
        self.assertEqual(self.handler.cancelled, [b"hold 1"])
        self.assertEqual(self.backend.pending, 0)
        self.assertEqual(self.gateway.inFlight, set())
        self.assertEqual(request.written, [])

    def test_closedBackendIs503(self) -> None:
        """A backend client closed under a request (the gateway shutting down) answers 503 with Retry-After."""
        request = post(self.gateway, b"hold 1")
        self.backend.close()
        self.backend.clock.advance(self.backend.closeTimeout)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(b"shutting down", b"".join(request.written))


class BudgetTests(SynchronousTestCase):
    """
    A caller's budget (X-Request-Timeout) bounds its backend request, less
    what the gateway already spent; --wait-for-ready lets requests wait for
    a backend that is down.
    """

    def setUp(self) -> None:
        self.handler = Handler()
        self.backend = StubSockShareClient(self.handler, requestTimeout=30.0)

    def post(self, gateway: GatewayResource, body: bytes, budget: bytes, spent: float = 0.0) -> DummyRequest:
        request = DummyRequest([b"request"])
        request.method = b"POST"
        request.content = BytesIO(body)
        request.requestHeaders.setRawHeaders(TIMEOUT_HEADER, [budget])
        request.begun = 100.0 - spent  # type: ignore[attr-defined]
        resource = gateway.getChildWithDefault(b"request", request)
        result = resource.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return request

    def gateway(self, **options: Any) -> GatewayResource:
        return GatewayResource(self.backend, "shared", "stub", seconds=lambda: 100.0, **options)

    def test_whatIsLeftOfTheBudget(self) -> None:
        """The backend request gets the caller's budget less what was spent: it times out then (504)."""
        request = self.post(self.gateway(), b"hold 1", b"2.5", spent=0.5)
        self.backend.clock.advance(1.99)
        self.assertEqual(request.finished, 0)
        self.backend.clock.advance(0.01)
        self.assertEqual(request.responseCode, 504)
        self.assertIn(b"timeout=2.0", b"".join(request.written))
        self.assertEqual(self.handler.cancelled, [b"hold 1"])

    def test_budgetReachesTheBackendsHandler(self) -> None:
        """
        End to end: the caller's budget, less what the gateway spent, is
        the deadline the backend's handler reads (RequestContext, wire v3),
        and the backend cancels the handler itself when it runs out.
        """
        seen: list[float | None] = []
        cancelled: list[bytes] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            seen.append(RequestContext.current().remaining())
            return Deferred(lambda _: cancelled.append(payload))

        self.backend = StubSockShareClient(handler, requestTimeout=30.0)
        request = self.post(self.gateway(), b"slow", b"2.5", spent=0.5)
        self.assertEqual(seen, [2.001])  # whole milliseconds, rounded up
        self.backend.clock.advance(2.0)
        self.assertEqual(request.responseCode, 504)
        self.backend.clock.advance(0.001)
        self.assertEqual(cancelled, [b"slow"])

    def test_neverMoreThanTheGatewaysLimit(self) -> None:
        """A budget above the gateway's --request-timeout is cut to it."""
        request = self.post(self.gateway(requestTimeout=1.0), b"hold 1", b"60")
        self.backend.clock.advance(1.0)
        self.assertEqual(request.responseCode, 504)

    def test_spentBudgetIs504AtOnce(self) -> None:
        """A budget spent before the backend request is 504 at once; the backend never sees the request."""
        request = self.post(self.gateway(), b"echo 1", b"1", spent=1.5)
        self.assertEqual(request.responseCode, 504)
        self.assertEqual(self.handler.seen, [])
        self.assertEqual(self.backend.stats()["requests"], 0)

    def test_malformedBudgetIs400(self) -> None:
        """A budget that is not a number of seconds above 0 is 400, naming the header."""
        for bad in [b"soon", b"0", b"-1", b"nan", b"inf", b""]:
            request = self.post(self.gateway(), b"echo 1", bad)
            self.assertEqual(request.responseCode, 400, bad)
            self.assertIn(b"X-Request-Timeout", b"".join(request.written))
        self.assertEqual(self.handler.seen, [])

    def test_waitForReady(self) -> None:
        """
        With waitForReady a request made while the backend is down waits for
        it, and is answered once it is back; without, it is 502 at once.
        """
        backends = Backends()
        backends.reactor.servers.clear()
        client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor)
        fast = post(GatewayResource(client, "shared", "memory"), b"echo 1")
        self.assertEqual(fast.responseCode, 502)
        waiting = post(GatewayResource(client, "shared", "memory", waitForReady=True), b"echo 2")
        self.assertEqual(waiting.finished, 0)
        backends.reactor.servers.update(backends.servers)
        backends.reactor.advance(1.0)
        self.assertEqual((waiting.finished, b"".join(waiting.written)), (1, b"echo 2"))
