# -*- test-case-name: tests.test_tap -*-
"""
twistd glue: the C{sockshare-server} demo backend and the C{sockshare-client}
demo API gateway.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from .._twistdexit import forgetExitSignal
from ..balancer import SockShareBalancer
from ..client import SockShareClientFactory
from ..options import MIN_FRAGMENT_SIZE
from ..server import SockShareServerFactory
from .backend import DemoBackend
from .convert import number, sizeOrNone, timeout
from .gateway import GatewayResource, makeSite
from .strategies import PerRequestClient

_log = Logger(namespace="twisted_sockshare.demo.tap")

STRATEGIES = ("shared", "per-request")


class _PortFileService(StreamServerEndpointService):
    """
    Listens on an endpoint and, once listening, writes the port number to a
    file (so tests and scripts can use C{tcp:0}).
    """

    _raiseSynchronously = True

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory, portFile: str | None) -> None:
        super().__init__(endpoint, factory)
        self.portFile = portFile

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.portFile is not None and self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._writePort)

    def _writePort(self, port: IListeningPort) -> IListeningPort:
        assert self.portFile is not None
        with open(self.portFile + ".tmp", "w") as f:
            f.write(f"{port.getHost().port}\n")  # type: ignore[attr-defined]
        os.replace(self.portFile + ".tmp", self.portFile)
        return port


def _whenFull(value: str) -> str:
    """
    C{--when-full}: C{pause} or C{refuse}.
    """
    if value not in ("pause", "refuse"):
        raise usage.UsageError(f"--when-full must be 'pause' or 'refuse', not {value!r}")
    return value


class ServerOptions(usage.Options):
    """
    Options of C{twistd sockshare-server}.
    """

    synopsis = "[options]"
    longdesc = (
        "The twisted_sockshare demo backend: answers each request with its payload (echo), "
        "after --delay plus up to --jitter seconds. Payloads '!stats', '!error TEXT' and "
        "'!sleep SECONDS' are operations."
    )
    optParameters = [
        ["listen", "l", "tcp:9000:interface=127.0.0.1", "Endpoint to listen on (a server endpoint string)."],
        ["delay", None, 0.0, "Seconds of simulated work per request.", number(float, "delay", 0)],
        ["jitter", None, 0.0, "Up to this many extra seconds per request, at random.", number(float, "jitter", 0)],
        [
            "max-payload",
            None,
            1_048_576,
            "Largest request or response payload, in bytes.",
            number(int, "max-payload", 0),
        ],
        [
            "idle-timeout",
            None,
            None,
            "Close a client connection quiet this many seconds, or with a frame half-sent that long ('none': never)",
            timeout("idle-timeout"),
        ],
        [
            "max-in-flight",
            None,
            1_000,
            "Most requests of one connection in the handler at once; beyond, the connection is not read.",
            number(int, "max-in-flight", 1),
        ],
        [
            "when-full",
            None,
            "pause",
            "At --max-in-flight: 'pause' reading the connection, or 'refuse' the request (wire v3 clients resend it).",
            _whenFull,
        ],
        [
            "write-buffer-size",
            None,
            262_144,
            "Bytes of replies waiting to be sent on a connection above which it is not read (a client not reading).",
            number(int, "write-buffer-size", 1),
        ],
        [
            "fragment-size",
            None,
            16_384,
            "Replies above this many bytes go in fragments of this size to clients that take them (wire v3), "
            "so the others are not held behind them ('none': none, either way)",
            sizeOrNone("fragment-size", MIN_FRAGMENT_SIZE),
        ],
        [
            "max-connections",
            None,
            None,
            "Most client connections at once; more are closed at once (default: from the open-file limit)",
            number(int, "max-connections", 1),
        ],
        [
            "handler-timeout",
            None,
            30.0,
            "Answer a request still being handled after this many seconds with an ERROR ('none': never).",
            timeout("handler-timeout"),
        ],
        [
            "frame-timeout",
            None,
            30.0,
            "Abort a connection whose frame is still incomplete this many seconds after it began ('none': never).",
            timeout("frame-timeout"),
        ],
        [
            "max-connection-age",
            None,
            None,
            "Send GOAWAY on a connection this many seconds old, so its client moves to a fresh one ('none': never)",
            timeout("max-connection-age"),
        ],
        [
            "drain-timeout",
            None,
            30.0,
            "On stop (SIGTERM) or GOAWAY, abort a connection its client has not closed after this many seconds.",
            timeout("drain-timeout"),
        ],
        ["port-file", None, None, "Write the listening port's number to this file."],
    ]

    def postOptions(self) -> None:
        from twisted.internet import reactor

        try:
            self["endpoint"] = serverFromString(reactor, self["listen"])
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(f"--listen {self['listen']!r} is not a valid endpoint: {e}") from e


class _DrainingServerService(_PortFileService):
    """
    On stop (C{twistd} SIGTERM): stop listening, send GOAWAY on every
    connection, answer what is in flight, and stop once every client has
    closed its connection (or C{drainTimeout} aborted it).  If none had to be
    aborted, the exit is clean: status 0, not the signal's.
    """

    factory: SockShareServerFactory

    def stopService(self) -> Deferred[None]:
        from twisted.internet import reactor

        def drain(_: object) -> Deferred[int]:
            _log.info("Draining {count} connections", count=self.factory.stats()["connections"])
            return self.factory.drain()

        def done(aborted: int) -> None:
            if aborted == 0:
                forgetExitSignal(reactor)

        return maybeDeferred(super().stopService).addCallback(drain).addCallback(done)


def makeServerService(options: ServerOptions) -> IService:
    """
    The demo backend service described by C{options}.
    """
    from twisted.internet import reactor

    backend = DemoBackend(reactor, options["delay"], options["jitter"])
    factory = SockShareServerFactory(
        backend,
        maxPayload=options["max-payload"],
        idleTimeout=options["idle-timeout"],
        maxInFlight=options["max-in-flight"],
        whenFull=options["when-full"],
        writeBufferSize=options["write-buffer-size"],
        fragmentSize=options["fragment-size"],
        maxConnections=options["max-connections"],
        handlerTimeout=options["handler-timeout"],
        frameTimeout=options["frame-timeout"],
        maxConnectionAge=options["max-connection-age"],
        drainTimeout=options["drain-timeout"],
    )
    backend.stats = factory.stats
    return _DrainingServerService(options["endpoint"], factory, options["port-file"])


class ClientOptions(usage.Options):
    """
    Options of C{twistd sockshare-client}.
    """

    synopsis = "[options]"
    longdesc = (
        "The twisted_sockshare demo API gateway: POST /request exchanges the body with the "
        "backend; GET /stats, /metrics and /healthz report."
    )
    optParameters = [
        ["listen", "l", "tcp:8080:interface=127.0.0.1", "HTTP endpoint to listen on (a server endpoint string)."],
        ["strategy", "s", "shared", f"How to reach the backend: {' or '.join(STRATEGIES)}."],
        [
            "idle-timeout",
            None,
            0.5,
            "Seconds to keep the backend connection open once nothing is pending (0: close at zero).",
            number(float, "idle-timeout", 0),
        ],
        [
            "connect-timeout",
            None,
            10.0,
            "Seconds a connection attempt may take ('none': endpoint's).",
            timeout("connect-timeout"),
        ],
        [
            "request-timeout",
            None,
            30.0,
            "Seconds a backend request may take ('none': forever).",
            timeout("request-timeout"),
        ],
        ["max-pending", None, 10_000, "Most backend requests outstanding at once.", number(int, "max-pending", 1)],
        ["max-payload", None, 1_048_576, "Largest payload, in bytes.", number(int, "max-payload", 0)],
        [
            "fragment-size",
            None,
            16_384,
            "Backend requests above this many bytes go in fragments of this size to backends that take them "
            "(wire v3), so the others are not held behind them ('none': none, either way)",
            sizeOrNone("fragment-size", MIN_FRAGMENT_SIZE),
        ],
        [
            "drain-timeout",
            None,
            10.0,
            "On shutdown, seconds to let in-flight requests finish.",
            number(float, "drain-timeout", 0),
        ],
        ["port-file", None, None, "Write the HTTP port's number to this file."],
        [
            "backend-dns",
            None,
            None,
            "Find the backend's endpoints in DNS: an SRV name (_service._tcp.domain), or an A/AAAA name with "
            "--backend-port; not with --backend.",
        ],
        ["backend-port", None, None, "The port of an A/AAAA --backend-dns name", number(int, "backend-port", 1)],
        ["dns-server", None, None, "Ask this DNS server (HOST:PORT) instead of the system's resolver."],
        [
            "dns-refresh",
            None,
            30.0,
            "Seconds between two lookups of --backend-dns.",
            number(float, "dns-refresh", 0, False),
        ],
    ]
    optFlags = [
        ["reset-on-timeout", None, "Reset the backend connection when a request times out (the others on it fail)."],
        [
            "no-reset-on-timeout",
            None,
            "Fail only the late request (and send CANCEL); the default with the sockshare frames.",
        ],
        [
            "wait-for-ready",
            None,
            "While the backend is down, let requests wait (up to --connect-timeout, or the caller's "
            "X-Request-Timeout) for it to come back, rather than fail at once with 502.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["backends"] = []

    def opt_backend(self, endpoint: str) -> None:
        """The backend (a client endpoint string). Give it more than once for one backend on several endpoints: each request goes to the least busy one that is up. Default: tcp:127.0.0.1:9000."""  # noqa: E501 (usage shows the docstring as written: one line, or gaps)
        self["backends"].append(endpoint)

    opt_b = opt_backend

    def postOptions(self) -> None:
        from twisted.internet import reactor

        self._checkDNS()
        if not self["backends"]:
            self["backends"] = ["tcp:127.0.0.1:9000"]
        self["backend"] = self["backend-dns"] or ",".join(self["backends"])
        if len(self["backends"]) > 1 and self["strategy"] != "shared":
            raise usage.UsageError("--backend may be given more than once only with --strategy shared")
        if self["strategy"] not in STRATEGIES:
            raise usage.UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {self['strategy']!r}")
        if self["reset-on-timeout"] and self["no-reset-on-timeout"]:
            raise usage.UsageError("give --reset-on-timeout or --no-reset-on-timeout, not both")
        try:
            self["endpoint"] = serverFromString(reactor, self["listen"])
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(f"--listen {self['listen']!r} is not a valid endpoint: {e}") from e
        for backend in self["backends"]:
            try:
                clientFromString(reactor, backend)
            except (ValueError, TypeError, KeyError) as e:
                raise usage.UsageError(f"--backend {backend!r} is not a valid endpoint: {e}") from e

    def _checkDNS(self) -> None:
        from ..discovery import isServiceName

        name = self["backend-dns"]
        if name is None:
            for option in ("backend-port", "dns-server"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --backend-dns")
            return
        if self["backends"]:
            raise usage.UsageError("give --backend or --backend-dns, not both")
        if self["strategy"] != "shared":
            raise usage.UsageError("--backend-dns needs --strategy shared")
        if not isServiceName(name) and self["backend-port"] is None:
            raise usage.UsageError(f"--backend-dns {name!r} is an A/AAAA name: give --backend-port")
        server = self["dns-server"]
        if server is not None:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise usage.UsageError(f"--dns-server takes HOST:PORT, not {server!r}")
            self["dns-server"] = (host.strip("[]"), int(port))

    def clientOptions(self) -> dict[str, Any]:
        """
        The keyword options for the backend client.
        """
        return {
            "idleTimeout": self["idle-timeout"],
            "connectTimeout": self["connect-timeout"],
            "requestTimeout": self["request-timeout"],
            "maxPending": self["max-pending"],
            "maxPayload": self["max-payload"],
            "fragmentSize": self["fragment-size"],
            "resetOnTimeout": True if self["reset-on-timeout"] else False if self["no-reset-on-timeout"] else None,
            # For /metrics: the backend requests' latency.
            "latencyHistogram": True,
        }


class _DrainService(Service):
    """
    On stop: let in-flight requests finish (up to C{drainTimeout}), cancel
    the rest, then close the backend client.
    """

    def __init__(self, resource: GatewayResource, client: Any, drainTimeout: float, reactor: IReactorCore) -> None:
        self._resource = resource
        self._client = client
        self._drainTimeout = drainTimeout
        self._reactor = reactor

    def stopService(self) -> Deferred[None]:
        super().stopService()
        pending = len(self._resource.inFlight)
        if pending:
            _log.info(
                "Draining {count} in-flight requests (up to {seconds}s)", count=pending, seconds=self._drainTimeout
            )
        drained = self._resource.drained()
        timer = self._reactor.callLater(self._drainTimeout, self._resource.cancelInFlight)  # type: ignore[attr-defined]

        def closeClient(_: object) -> Deferred[None]:
            if timer.active():
                timer.cancel()
                # Every request was answered: this is a clean exit, so twistd
                # exits 0 rather than re-raising the signal that asked for it.
                forgetExitSignal(self._reactor)
            return maybeDeferred(self._client.close)

        return drained.addCallback(closeClient)


class _GatewayService(MultiService):
    """
    The HTTP listener and the drain step; the listener stops first.
    """

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        listener, drain = list(self)

        def thenDrain(_: object) -> Deferred[Any]:
            return maybeDeferred(drain.stopService)

        return DeferredList([maybeDeferred(listener.stopService).addCallback(thenDrain)])


def makeClientService(options: ClientOptions) -> IService:
    """
    The demo gateway service described by C{options}.
    """
    from twisted.internet import reactor

    clientOptions = options.clientOptions()
    client: Any
    if options["backend-dns"] is not None:
        from ..discovery import systemResolver

        client = SockShareBalancer.fromDNS(
            options["backend-dns"],
            reactor,
            port=options["backend-port"],
            resolver=systemResolver(reactor, options["dns-server"]),
            refreshInterval=options["dns-refresh"],
            **clientOptions,
        )
    elif len(options["backends"]) > 1:
        client = SockShareBalancer(options["backends"], reactor, **clientOptions)
    elif options["strategy"] == "shared":
        client = SockShareClientFactory(options["backend"], reactor, **clientOptions)
    else:
        client = PerRequestClient(options["backend"], reactor, **clientOptions)
    resource = GatewayResource(
        client,
        options["strategy"],
        options["backend"],
        requestTimeout=options["request-timeout"],
        waitForReady=bool(options["wait-for-ready"]),
    )
    site = makeSite(resource, options["max-payload"])
    service = _GatewayService()
    _PortFileService(options["endpoint"], site, options["port-file"]).setServiceParent(service)
    _DrainService(resource, client, options["drain-timeout"], reactor).setServiceParent(service)
    return service
