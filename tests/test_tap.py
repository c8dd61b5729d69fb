"""
Unit tests of the twistd glue, the gateway's mappings and the demo backend.
"""

from __future__ import annotations

import json

from twisted.application.service import IServiceMaker
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from twisted_sockshare import (
    ConnectFailed,
    ConnectionDropped,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    TooManyPending,
)
from twisted_sockshare.demo.backend import DemoBackend
from twisted_sockshare.demo.gateway import GatewayResource, statusFor
from twisted_sockshare.demo.tap import ClientOptions, ServerOptions, makeServerService


class PluginTests(SynchronousTestCase):
    """
    twistd finds both plugins.
    """

    def test_found(self) -> None:
        """getPlugins(IServiceMaker) finds sockshare-server and sockshare-client, valid."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        for name in ("sockshare-server", "sockshare-client"):
            self.assertIn(name, makers)
            verifyObject(IServiceMaker, makers[name])
            verifyObject(IPlugin, makers[name])
            options = makers[name].options()
            options.parseOptions([])
            self.assertTrue(hasattr(makers[name].makeService(options), "startService"))


class OptionsTests(SynchronousTestCase):
    """
    Good options parse; bad ones give a clear UsageError.
    """

    def test_serverDefaults(self) -> None:
        """The server listens on loopback port 9000 by default."""
        options = ServerOptions()
        options.parseOptions([])
        self.assertEqual(options["listen"], "tcp:9000:interface=127.0.0.1")
        self.assertEqual((options["delay"], options["jitter"], options["max-payload"]), (0.0, 0.0, 1_048_576))
        self.assertIsNone(options["idle-timeout"])

    def test_severalBackends(self) -> None:
        """--backend given more than once balances over the endpoints; only with the shared strategy."""
        from twisted_sockshare import SockShareBalancer
        from twisted_sockshare.demo.tap import makeClientService

        options = ClientOptions()
        options.parseOptions(["--listen=tcp:0", "--backend=tcp:127.0.0.1:9001", "-b", "tcp:127.0.0.1:9002"])
        self.assertEqual(options["backends"], ["tcp:127.0.0.1:9001", "tcp:127.0.0.1:9002"])
        self.assertEqual(options["backend"], "tcp:127.0.0.1:9001,tcp:127.0.0.1:9002")
        service = makeClientService(options)
        resources = [s for s in service if hasattr(s, "factory")]  # type: ignore[attr-defined]
        backend = resources[0].factory.resource.backend
        self.assertIsInstance(backend, SockShareBalancer)
        self.assertEqual(len(backend.endpointStats()), 2)
        e = self.assertRaises(
            usage.UsageError,
            ClientOptions().parseOptions,
            ["--strategy=per-request", "--backend=tcp:127.0.0.1:1", "--backend=tcp:127.0.0.1:2"],
        )
        self.assertIn("more than once only with --strategy shared", str(e))
        e = self.assertRaises(
            usage.UsageError, ClientOptions().parseOptions, ["--backend=tcp:127.0.0.1:1", "-b", "bogus:x"]
        )
        self.assertIn("--backend 'bogus:x' is not a valid endpoint", str(e))

    def test_waitForReadyAndBudget(self) -> None:
        """
        --wait-for-ready and --request-timeout reach the gateway: its backend
        requests wait for ready, and no caller's budget exceeds the timeout.
        """
        from twisted_sockshare.demo.tap import makeClientService

        for argv, waits, limit in [([], False, 30.0), (["--wait-for-ready", "--request-timeout=2"], True, 2.0)]:
            options = ClientOptions()
            options.parseOptions(["--listen=tcp:0", *argv])
            service = makeClientService(options)
            resource = [s for s in service if hasattr(s, "factory")][0].factory.resource  # type: ignore[attr-defined]
            self.assertEqual((resource.waitForReady, resource.requestTimeout), (waits, limit))

    def test_serverIdleTimeout(self) -> None:
        """--idle-timeout reaches the server factory; 0 is refused."""
        options = ServerOptions()
        options.parseOptions(["--idle-timeout=2.5", "--listen=tcp:0"])
        service = makeServerService(options)
        self.assertEqual(service.factory.idleTimeout, 2.5)  # type: ignore[attr-defined]
        e = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, ["--idle-timeout=0"])
        self.assertIn("--idle-timeout must be > 0", str(e))

    def test_serverBounds(self) -> None:
        """The bounds' flags reach the server factory; the demo sets a handler timeout; bad values are refused."""
        options = ServerOptions()
        options.parseOptions(["--listen=tcp:0"])
        factory = makeServerService(options).factory  # type: ignore[attr-defined]
        self.assertEqual((factory.maxInFlight, factory.handlerTimeout, factory.frameTimeout), (1_000, 30.0, 30.0))
        self.assertEqual((factory.writeBufferSize, factory.fragmentSize), (262_144, 16_384))
        options = ServerOptions()
        options.parseOptions(
            [
                "--listen=tcp:0",
                "--max-in-flight=50",
                "--max-connections=7",
                "--handler-timeout=none",
                "--frame-timeout=2",
                "--when-full=refuse",
                "--write-buffer-size=65536",
                "--fragment-size=none",
            ]
        )
        factory = makeServerService(options).factory  # type: ignore[attr-defined]
        self.assertEqual(
            (factory.maxInFlight, factory.maxConnections, factory.handlerTimeout, factory.frameTimeout),
            (50, 7, None, 2.0),
        )
        self.assertEqual((factory.whenFull, factory.writeBufferSize, factory.fragmentSize), ("refuse", 65_536, None))
        for bad, text in [
            ("--max-in-flight=0", "--max-in-flight must be >= 1"),
            ("--max-connections=lots", "--max-connections takes a number"),
            ("--handler-timeout=nan", "--handler-timeout takes a finite number"),
            ("--frame-timeout=-1", "--frame-timeout must be > 0"),
            ("--when-full=drop", "--when-full must be 'pause' or 'refuse', not 'drop'"),
            ("--write-buffer-size=0", "--write-buffer-size must be >= 1"),
            ("--fragment-size=512", "--fragment-size must be >= 1024"),
            ("--fragment-size=big", "--fragment-size takes a number"),
        ]:
            e = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, [bad])
            self.assertIn(text, str(e))

    def test_helpHasNoGaps(self) -> None:
        """The options' help reads as sentences: no run of spaces inside one, no doubled period."""
        for options in (ClientOptions(), ServerOptions()):
            self.assertNotRegex(str(options), r"[a-z,.;:] {2,}[a-z]")
            self.assertNotIn("..", str(options))
        self.assertIn("Give it more than once for one backend", " ".join(str(ClientOptions()).split()))

    def test_clientDefaults(self) -> None:
        """The gateway's defaults match the library's."""
        options = ClientOptions()
        options.parseOptions([])
        self.assertEqual(options["listen"], "tcp:8080:interface=127.0.0.1")
        self.assertEqual(options["backend"], "tcp:127.0.0.1:9000")
        self.assertEqual(
            options.clientOptions(),
            {
                "idleTimeout": 0.5,
                "connectTimeout": 10.0,
                "requestTimeout": 30.0,
                "maxPending": 10_000,
                "maxPayload": 1_048_576,
                "fragmentSize": 16_384,
                "resetOnTimeout": None,
                "latencyHistogram": True,
            },
        )

    def silenceDNS(self) -> list[tuple[str, int] | None]:
        """
        Make the gateway's resolver one that never answers, so no lookup
        leaves this process; return the DNS servers it is asked to use.
        """
        from twisted_sockshare import discovery

        servers: list[tuple[str, int] | None] = []

        class Silent:
            def lookupService(self, name: str) -> Deferred[object]:
                return Deferred()

        def resolver(reactor: object, server: tuple[str, int] | None) -> Silent:
            servers.append(server)
            return Silent()

        self.patch(discovery, "systemResolver", resolver)
        return servers

    def test_backendDNS(self) -> None:
        """
        --backend-dns makes the gateway's client a balancer fed by DNS: an
        SRV name alone, an A/AAAA name with --backend-port, from
        --dns-server HOST:PORT, refreshed every --dns-refresh seconds.
        """
        from twisted_sockshare.demo.tap import makeClientService

        servers = self.silenceDNS()
        options = ClientOptions()
        options.parseOptions(
            ["--listen=tcp:0", "--backend-dns=_sockshare._tcp.example.test", "--dns-server=127.0.0.1:5353",
             "--dns-refresh=5"]
        )  # fmt: skip
        self.assertEqual((options["dns-server"], options["dns-refresh"]), (("127.0.0.1", 5353), 5.0))
        self.assertEqual(options["backend"], "_sockshare._tcp.example.test")
        service = makeClientService(options)
        gateway = [s for s in service if hasattr(s, "_client")][0]  # type: ignore[attr-defined]
        balancer = gateway._client
        self.assertEqual(balancer._discovery.refreshInterval, 5.0)
        self.assertEqual(balancer._discovery.name, "_sockshare._tcp.example.test")
        self.assertEqual(servers, [("127.0.0.1", 5353)])
        balancer.close()
        options = ClientOptions()
        options.parseOptions(["--backend-dns=backends.example.test", "--backend-port=9000"])
        self.assertEqual(options["backend-port"], 9000)
        for argv, text in [
            (["--backend-dns=backends.example.test"], "is an A/AAAA name: give --backend-port"),
            (["--backend-dns=_s._tcp.x", "--backend=tcp:127.0.0.1:1"], "give --backend or --backend-dns, not both"),
            (["--backend-port=9000"], "--backend-port needs --backend-dns"),
            (["--dns-server=127.0.0.1:53"], "--dns-server needs --backend-dns"),
            (["--backend-dns=_s._tcp.x", "--dns-server=nowhere"], "--dns-server takes HOST:PORT, not 'nowhere'"),
            (["--backend-dns=_s._tcp.x", "--dns-refresh=0"], "--dns-refresh must be > 0"),
            (["--backend-dns=_s._tcp.x", "--strategy=per-request"], "--backend-dns needs --strategy shared"),
        ]:
            e = self.assertRaises(usage.UsageError, ClientOptions().parseOptions, argv)
            self.assertIn(text, str(e))

    def test_clientValues(self) -> None:
        """Every option reaches the client."""
        options = ClientOptions()
        options.parseOptions(
            [
                "--strategy=per-request",
                "--idle-timeout=1.5",
                "--connect-timeout=2",
                "--request-timeout=none",
                "--max-pending=7",
                "--max-payload=100",
                "--fragment-size=4096",
                "--no-reset-on-timeout",
            ]
        )
        self.assertEqual(options["strategy"], "per-request")
        self.assertEqual(
            options.clientOptions(),
            {
                "idleTimeout": 1.5,
                "connectTimeout": 2.0,
                "requestTimeout": None,
                "maxPending": 7,
                "maxPayload": 100,
                "fragmentSize": 4096,
                "resetOnTimeout": False,
                "latencyHistogram": True,
            },
        )

    def test_badValues(self) -> None:
        """Bad values name the option in a UsageError."""
        cases = [
            (ClientOptions, ["--strategy=pooled"], "--strategy"),
            (ClientOptions, ["--max-pending=0"], "max-pending"),
            (ClientOptions, ["--idle-timeout=-1"], "idle-timeout"),
            (ClientOptions, ["--request-timeout=soon"], "request-timeout"),
            (ClientOptions, ["--backend=carrier-pigeon:x"], "--backend"),
            (ClientOptions, ["--listen=nope:1"], "--listen"),
            (ClientOptions, ["--reset-on-timeout", "--no-reset-on-timeout"], "not both"),
            (ServerOptions, ["--delay=-2"], "delay"),
            (ServerOptions, ["--max-payload=lots"], "max-payload"),
            (ServerOptions, ["--listen=tcp:notaport"], "--listen"),
        ]
        for optionsClass, argv, expected in cases:
            e = self.assertRaises(usage.UsageError, optionsClass().parseOptions, argv)
            self.assertIn(expected, str(e), argv)


class StatusTests(SynchronousTestCase):
    """
    Each backend error maps to its documented HTTP status.
    """

    def test_mapping(self) -> None:
        """502 for backend faults, 503 with Retry-After when saturated, 504 on timeout, 413 too large."""
        expected = [
            (ConnectFailed("refused"), 502, "ConnectFailed"),
            (ConnectionDropped("lost"), 502, "ConnectionDropped"),
            (ProtocolViolation("junk"), 502, "ProtocolViolation"),
            (RemoteError("KeyError: k"), 502, "RemoteError"),
            (TooManyPending("full"), 503, "TooManyPending"),
            (RequestTimeout("slow"), 504, "RequestTimeout"),
            (PayloadTooLarge("big"), 413, "PayloadTooLarge"),
            (CancelledError(), 503, "shutting down"),
            (RuntimeError("bug"), 500, "bug"),
        ]
        for error, code, word in expected:
            status, text, headers = statusFor(Failure(error))
            self.assertEqual(status, code, error)
            self.assertIn(word, text)
            self.assertEqual("Retry-After" in headers, code == 503)
        # The client's cancellation text names the caller; in the gateway
        # only its drain cancels, so the answer says that instead.
        status, text, headers = statusFor(Failure(CancelledError("request cancelled by the caller")))
        self.assertEqual(status, 503)
        self.assertEqual(text, "the gateway is shutting down; retry on another instance")


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[Deferred[bytes]] = []

    def request(self, payload: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.calls.append(d)
        return d

    def stats(self) -> dict[str, int]:
        return {"pending": len(self.calls), "requests": 1}


def render(resource: GatewayResource, method: bytes, path: bytes, body: bytes = b"") -> DummyRequest:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.method = method
    request.content = __import__("io").BytesIO(body)
    child = resource
    for segment in request.postpath:
        child = child.getChildWithDefault(segment, request)
    result = child.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


class GatewayTests(SynchronousTestCase):
    """
    The HTTP API, in memory.
    """

    def setUp(self) -> None:
        self.backend = FakeBackend()
        self.resource = GatewayResource(self.backend, "shared", "tcp:127.0.0.1:9000")

    def test_exchange(self) -> None:
        """POST /request answers 200 with the backend's reply."""
        request = render(self.resource, b"POST", b"/request", b"hi")
        self.assertEqual(len(self.resource.inFlight), 1)
        self.backend.calls[0].callback(b"HI")
        self.assertEqual(request.written, [b"HI"])
        self.assertEqual(request.responseCode or 200, 200)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/octet-stream"])
        self.assertEqual(self.resource.inFlight, set())

    def test_backendError(self) -> None:
        """A backend failure gives its status and reason."""
        request = render(self.resource, b"POST", b"/request", b"hi")
        self.backend.calls[0].errback(TooManyPending("full"))
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(b"TooManyPending", b"".join(request.written))

    def test_statsJson(self) -> None:
        """GET /stats is the client's stats plus strategy and backend."""
        request = render(self.resource, b"GET", b"/stats")
        self.assertEqual(
            json.loads(b"".join(request.written)),
            {"pending": 0, "requests": 1, "strategy": "shared", "backend": "tcp:127.0.0.1:9000"},
        )

    def test_wrongMethodAndPath(self) -> None:
        """Other methods get 405 with Allow; other paths 404."""
        request = render(self.resource, b"GET", b"/request")
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"allow"), [b"POST"])
        self.assertEqual(render(self.resource, b"GET", b"/elsewhere").responseCode, 404)
        self.assertEqual(render(self.resource, b"DELETE", b"/healthz").responseCode, 405)
        self.assertEqual(b"".join(render(self.resource, b"GET", b"/healthz").written), b"ok\n")

    def test_drain(self) -> None:
        """drained() fires once in-flight requests finish; cancelInFlight ends them with 503."""
        first = render(self.resource, b"POST", b"/request", b"1")
        second = render(self.resource, b"POST", b"/request", b"2")
        drained = self.resource.drained()
        self.backend.calls[0].callback(b"one")
        self.assertNoResult(drained)
        self.resource.cancelInFlight()
        self.successResultOf(drained)
        self.assertEqual(first.written, [b"one"])
        self.assertEqual(second.responseCode, 503)
        # The gateway cancelled it, not its HTTP client.
        text = b"".join(second.written)
        self.assertIn(b"the gateway is shutting down", text)
        self.assertNotIn(b"by the caller", text)


class DemoBackendTests(SynchronousTestCase):
    """
    The demo backend's echo and operations.
    """

    def test_echoAndDelay(self) -> None:
        """Payloads are echoed, after delay plus jitter."""
        clock = Clock()
        self.assertEqual(DemoBackend(clock)(b"x"), b"x")
        d = DemoBackend(clock, delay=1.0, jitter=2.0, random=lambda: 0.5)(b"y")
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), b"y")

    def test_operations(self) -> None:
        """!stats, !error and !sleep."""
        clock = Clock()
        backend = DemoBackend(clock, stats=lambda: {"connections": 2})
        self.assertEqual(json.loads(backend(b"!stats")), {"connections": 2})  # type: ignore[arg-type]
        e = self.assertRaises(RuntimeError, backend, b"!error nope")
        self.assertEqual(str(e), "nope")
        d = backend(b"!sleep 3")
        clock.advance(3)
        self.assertEqual(self.successResultOf(d), b"slept")  # type: ignore[arg-type]
        self.assertRaises(ValueError, backend, b"!dance")
        self.assertIsInstance(succeed(None), Deferred)
