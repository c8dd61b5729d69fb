# -*- test-case-name: tests.test_tap -*-
"""
The demo API gateway: an HTTP API whose every request is exchanged with the
backend through one client (shared, or one connection per request).

    - C{POST /request}: the body is the payload; C{200} with the backend's
      reply.  A caller may say how long it waits, in seconds, in an
      C{X-Request-Timeout} header: the backend request is given what is
      left of that (and never more than the gateway's own limit), counted
      from the request's first line; a budget already spent is C{504} at
      once, and a malformed one C{400}.
    - C{GET /stats}: the client's counters as JSON, plus C{strategy} and C{backend}
      (and C{endpointStats}, each endpoint's, with several).
    - C{GET /metrics}: the same counters, the backend requests' latency and the
      HTTP requests' duration, for Prometheus (through C{prometheus_client}).
    - C{GET /healthz}: C{200} while the process serves.
    - C{GET /readyz}: C{200} while the backend is reachable (the last
      connection attempt succeeded, or an endpoint is up), else C{503}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    TooManyPending,
)
from ..interfaces import ISockShareClient

#: Seconds a client is told to wait (C{Retry-After}) when the backend is saturated.
RETRY_AFTER = 1

_STATUS: list[tuple[type[BaseException], int, str]] = [
    (ConnectFailed, 502, "backend unreachable (ConnectFailed)"),
    (ConnectionDropped, 502, "backend connection dropped (ConnectionDropped)"),
    (ProtocolViolation, 502, "backend broke the wire protocol (ProtocolViolation)"),
    (RemoteError, 502, "backend error (RemoteError)"),
    (TooManyPending, 503, "too many requests pending to the backend (TooManyPending)"),
    (RequestTimeout, 504, "backend did not answer in time (RequestTimeout)"),
    (PayloadTooLarge, 413, "payload too large (PayloadTooLarge)"),
    (CancelledError, 503, "the gateway is shutting down; retry on another instance"),
    (ClientClosed, 503, "the gateway is shutting down; retry on another instance"),
]


def statusFor(failure: Failure) -> tuple[int, str, dict[str, str]]:
    """
    Map a failed backend request to an HTTP answer.

    @return: the status code, a short reason (with the error's text), and
        extra headers.
    """
    for errorType, code, reason in _STATUS:
        if failure.check(errorType):
            headers = {"Retry-After": str(RETRY_AFTER)} if code == 503 else {}
            # A cancelled request was cancelled by the gateway's drain: the
            # error's own text ("by the caller") would mislead its client.
            text = "" if errorType is CancelledError else str(failure.value)
            return code, f"{reason}: {text}" if text else reason, headers
    return 500, f"internal error: {failure.getErrorMessage()}", {}


def _plain(request: Request, code: int, text: str, headers: dict[str, str] | None = None) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), value.encode())
    return (text + "\n").encode("utf-8")


class _Leaf(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii", "replace")
        allowed = sorted(name[7:] for name in dir(self) if name.startswith("render_") and name != "render_HEAD")
        if method == "HEAD" and "GET" in allowed:
            # The GET answer's headers, its length, and no body.
            body = self.render_GET(request)  # type: ignore[attr-defined]
            request.setHeader(b"content-length", b"%d" % (len(body),))
            return b""
        if method not in allowed:
            text = f"method {method} not allowed; use {', '.join(allowed)}"
            return _plain(request, 405, text, {"Allow": ", ".join(allowed)})
        return super().render(request)


class _GatewayLeaf(_Leaf):
    def __init__(self, gateway: GatewayResource) -> None:
        super().__init__()
        self._gateway = gateway


#: The header in which a caller gives its budget, in seconds.
TIMEOUT_HEADER = b"x-request-timeout"


class _Exchange(_GatewayLeaf):
    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        payload = request.content.read()
        gateway = self._gateway
        try:
            left = gateway.timeLeft(request)
        except ValueError as error:
            return _plain(request, 400, str(error))
        if left is not None and left <= 0:
            return _plain(request, 504, "the caller's budget (X-Request-Timeout) was spent before the backend request")
        if left is None and not gateway.waitForReady:
            d = gateway.backend.request(payload)
        else:
            d = gateway.backend.request(payload, timeout=left, waitForReady=gateway.waitForReady)
        gateway.inFlight.add(d)
        finished: list[object] = []

        def gone(result: object) -> None:
            finished.append(result)
            if isinstance(result, Failure):
                # Its HTTP client went away: nobody waits for the reply, and
                # the backend is told (CANCEL) to stop working on it.
                d.cancel()

        request.notifyFinish().addBoth(gone)

        def answered(reply: bytes) -> None:
            if not finished:
                request.setHeader(b"content-type", b"application/octet-stream")
                request.write(reply)
                request.finish()

        def failed(reason: Failure) -> None:
            if not finished:
                code, text, headers = statusFor(reason)
                request.write(_plain(request, code, text, headers))
                request.finish()

        def done(result: object) -> object:
            gateway.ended(d)
            return result

        d.addCallbacks(answered, failed).addBoth(done)
        return NOT_DONE_YET


class _Stats(_GatewayLeaf):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        stats: dict[str, Any] = dict(self._gateway.backend.stats())
        stats["strategy"] = self._gateway.strategy
        stats["backend"] = self._gateway.backendDescription
        endpointStats = getattr(self._gateway.backend, "endpointStats", None)
        if endpointStats is not None:  # several endpoints: each one's counters too
            stats["endpointStats"] = endpointStats()
        return json.dumps(stats).encode() + b"\n"


class _NoMetrics(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        return _plain(request, 501, "metrics need prometheus_client: pip install 'twisted_sockshare[metrics]'")


class _Health(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        return _plain(request, 200, "ok")


class _Ready(_GatewayLeaf):
    def render_GET(self, request: Request) -> bytes:
        if getattr(self._gateway.backend, "reachable", True):
            return _plain(request, 200, "ready")
        return _plain(request, 503, f"backend unreachable: {self._gateway.backendDescription}")


class _Metrics:
    """
    The gateway's figures in a C{prometheus_client} registry of its own: the
    backend client's (L{twisted_sockshare.metrics.SockShareCollector}) and
    the HTTP requests' duration.
    """

    def __init__(self, gateway: GatewayResource) -> None:
        from prometheus_client import CollectorRegistry, Histogram
        from prometheus_client.twisted import MetricsResource

        from ..metrics import SockShareCollector

        self.registry = CollectorRegistry()
        labels = {"backend": gateway.backendDescription, "strategy": gateway.strategy}
        self.registry.register(SockShareCollector(gateway.backend, labels))
        self.httpDuration = Histogram(
            "sockshare_gateway_request_duration_seconds",
            "Seconds from an HTTP request's arrival to the end of its answer.",
            ["method", "code"],
            registry=self.registry,
        )
        self.resource = MetricsResource(self.registry)

    def observe(self, method: str, code: int, seconds: float) -> None:
        self.httpDuration.labels(method, str(code)).observe(seconds)


def _metrics(gateway: GatewayResource) -> _Metrics | None:
    try:
        return _Metrics(gateway)
    except ImportError:
        return None


class GatewayResource(Resource):
    """
    The gateway's HTTP API over one backend client.

    @ivar inFlight: the backend requests not answered yet.
    @ivar requestTimeout: the most seconds a backend request is given (the
        client's C{requestTimeout}), whatever a caller's budget.
    @ivar waitForReady: whether backend requests wait through the connect
        backoff (C{request(..., waitForReady=True)}) rather than failing at once.
    """

    def __init__(
        self,
        backend: ISockShareClient,
        strategy: str,
        backendDescription: str,
        *,
        requestTimeout: float | None = None,
        waitForReady: bool = False,
        seconds: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param seconds: the clock a request's first line was read on
            (L{GatewayRequest.begun}).
        """
        super().__init__()
        self.backend = backend
        self.strategy = strategy
        self.backendDescription = backendDescription
        self.requestTimeout = requestTimeout
        self.waitForReady = waitForReady
        self._seconds = seconds
        self.inFlight: set[Deferred[bytes]] = set()
        self._drainWaiters: list[Deferred[None]] = []
        #: The gateway's Prometheus figures, if C{prometheus_client} is installed.
        self.metrics = _metrics(self)
        self.putChild(b"request", _Exchange(self))
        self.putChild(b"stats", _Stats(self))
        self.putChild(b"metrics", self.metrics.resource if self.metrics is not None else _NoMetrics())
        self.putChild(b"healthz", _Health())
        self.putChild(b"readyz", _Ready(self))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()

    def render(self, request: Request) -> bytes:
        return _NotFound().render(request)

    def timeLeft(self, request: Request) -> float | None:
        """
        The seconds left of C{request}'s caller's budget (its
        C{X-Request-Timeout}, from its first line), at most
        L{requestTimeout}; L{None} if it gave none (the client's
        C{requestTimeout} applies).

        @raise ValueError: if the header is not a number of seconds above 0.
        """
        given = request.getHeader(TIMEOUT_HEADER)
        if given is None:
            return None
        try:
            budget = float(given)
        except ValueError:
            budget = float("nan")
        if not 0 < budget < float("inf"):
            raise ValueError(f"X-Request-Timeout must be a number of seconds above 0, not {given[:40]!r}")
        if self.requestTimeout is not None:
            budget = min(budget, self.requestTimeout)
        begun = getattr(request, "begun", None)
        return budget if begun is None else budget - (self._seconds() - begun)

    def drained(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once no backend request is in flight.
        """
        waiter: Deferred[None] = Deferred()
        self._drainWaiters.append(waiter)
        self._checkDrained()
        return waiter

    def ended(self, request: Deferred[bytes]) -> None:
        """
        The backend request C{request} (one of L{inFlight}) is answered or
        failed: forget it; fire L{drained}'s Deferreds if it was the last.
        """
        self.inFlight.discard(request)
        self._checkDrained()

    def cancelInFlight(self) -> None:
        """
        Cancel every backend request still in flight (their HTTP clients get 503).
        """
        for d in list(self.inFlight):
            d.cancel()

    def _checkDrained(self) -> None:
        if not self.inFlight and self._drainWaiters:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)


class _NotFound(_Leaf):
    def render(self, request: Request) -> bytes:
        return _plain(request, 404, "not found; try POST /request, GET /stats, /metrics, /healthz or /readyz")


class GatewayRequest(Request):
    """
    A request that refuses a body larger than the gateway's C{maxPayload}
    (its C{--max-payload}) from its C{Content-Length}, before reading it (and
    without the C{100 Continue} an C{Expect: 100-continue} asked for), and
    stops buffering a chunked body as soon as it grows past the limit.
    """

    maxPayload = 1_048_576
    _received = 0
    _refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: When its first line was read (C{time.monotonic}): a caller's
        #: budget counts from then.
        self.begun = time.monotonic()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxPayload:
            self._refuse(f"{length} bytes exceeds")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.maxPayload:
            # The rest of a chunked body is never read: its size is unknown.
            self._refuse("the body grew past")
            return
        super().handleContentChunk(data)

    def _refuse(self, what: str) -> None:
        """
        Answer 413 at once, without reading the body, and close the connection.

        @param what: how the body broke the limit, before the limit's name.
        """
        self._refused = True
        # The channel sends 100 Continue after gotLength if asked to: the
        # client must not be told to send the body it was just refused.
        self.requestHeaders.removeHeader(b"expect")
        body = (
            f"payload too large (PayloadTooLarge): {what} the gateway's limit of {self.maxPayload} bytes "
            "(--max-payload)\n"
        ).encode()
        transport = self.channel.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        self._arrived = time.monotonic()
        self.notifyFinish().addBoth(self._observe)
        super().requestReceived(command, path, version)

    def _observe(self, result: object) -> None:
        metrics = getattr(getattr(self, "site", None), "resource", None)
        metrics = getattr(metrics, "metrics", None)
        if metrics is not None:
            metrics.observe(self.method.decode("ascii", "replace"), self.code, time.monotonic() - self._arrived)


def makeSite(resource: GatewayResource, maxPayload: int, idleTimeout: float = 60.0) -> Site:
    """
    A C{Site} serving C{resource}, refusing bodies above C{maxPayload}, and
    closing HTTP connections idle (or stalled mid-request) for C{idleTimeout}
    seconds.
    """

    class _Request(GatewayRequest):
        pass

    _Request.maxPayload = maxPayload
    site = Site(resource)
    site.requestFactory = _Request
    site.displayTracebacks = False
    site.timeOut = idleTimeout
    return site


__all__ = ["GatewayResource", "GatewayRequest", "makeSite", "statusFor", "RETRY_AFTER", "TIMEOUT_HEADER"]
