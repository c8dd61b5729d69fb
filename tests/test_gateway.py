"""
The gateway's exchange of an HTTP request for a backend request, with the
stub client (the real client over an in-memory backend) and Twisted's
C{DummyRequest}.
"""

from __future__ import annotations

from io import BytesIO

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twisted_sockshare.demo.gateway import GatewayResource
from twisted_sockshare.testing import StubSockShareClient

from .contract import Handler


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
