# -*- test-case-name: tests.test_bench -*-
"""
What C{sockshare bench} measures: the library's strategies, and other tools
measured in the same run for reference.

Each contender is built from an endpoint and has C{request(payload)}
returning a Deferred of the reply, and C{close()}.  The endpoint handed to
it counts the connections it opens, whichever tool opens them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IConsumer, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from ..client import SockShareClientFactory
from ..demo.strategies import PerRequestClient, SerializedClient
from .backend import Echo


class Contender(TypingProtocol):
    """
    What the benchmark drives: the part of
    L{twisted_sockshare.interfaces.ISockShareClient} that other tools (minimal,
    AMP, HTTP) can offer too.  The library's strategies provide all of it.
    """

    def request(self, payload: bytes) -> Deferred[bytes]: ...

    def close(self) -> Deferred[Any]: ...


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """
    An endpoint that counts the connections made through it.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint
        self.connections = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self.connections += 1
        return self._endpoint.connect(protocolFactory)


# -- Other tools --------------------------------------------------------------

_HEADER = struct.Struct(">IIB")


class _Lazily:
    """
    Connects one protocol on the first request and uses it for ever after.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, make: Callable[[], Protocol]) -> None:
        self._endpoint = endpoint
        self._make = make
        self._protocol: Any = None
        self._waiting: list[tuple[bytes, Deferred[bytes]]] | None = None

    def request(self, payload: bytes) -> Deferred[bytes]:
        if self._protocol is not None:
            return self.send(self._protocol, payload)
        d: Deferred[bytes] = Deferred()
        if self._waiting is None:
            self._waiting = []
            connectProtocol(self._endpoint, self._make()).addCallbacks(self._connected, self._failed)
        self._waiting.append((payload, d))
        return d

    def send(self, protocol: Any, payload: bytes) -> Deferred[bytes]:
        return protocol.request(payload)

    def _connected(self, protocol: Protocol) -> None:
        self._protocol = protocol
        waiting, self._waiting = self._waiting or [], None
        for payload, d in waiting:
            self.send(protocol, payload).chainDeferred(d)

    def _failed(self, reason: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for _, d in waiting:
            d.errback(reason)

    def close(self) -> Deferred[None]:
        """
        Close the connection; fire once it is gone.
        """
        if self._protocol is None:
            return succeed(None)
        self._protocol.transport.loseConnection()
        lost: Deferred[None] = self._protocol.lost
        return lost


class _MinimalProtocol(Protocol):
    """
    The simplest I{correct} multiplexed client of the wire format a user
    could write instead of the library: a dict of Deferreds by id, one
    C{struct} header and one C{transport.write} per request; ERROR frames
    fail their request, unknown ids are ignored, a lost connection fails
    what waits.  No timeouts, no counting, never closes by itself.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, Deferred[bytes]] = {}
        self._nextId = 0
        self._buffer = b""
        self.lost: Deferred[None] = Deferred()

    def request(self, payload: bytes) -> Deferred[bytes]:
        requestId = self._nextId
        self._nextId = (requestId + 1) & 0xFFFFFFFF
        d = self._waiting[requestId] = Deferred()
        self.transport.write(_HEADER.pack(5 + len(payload), requestId, 1) + payload)  # type: ignore[union-attr]
        return d

    def dataReceived(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        offset, end = 0, len(data)
        while end - offset >= 9:
            length, requestId, kind = _HEADER.unpack_from(data, offset)
            stop = offset + 4 + length
            if stop > end:
                break
            d = self._waiting.pop(requestId, None)
            if d is not None:
                if kind == 2:
                    d.callback(data[offset + 9 : stop])
                else:
                    d.errback(RuntimeError(data[offset + 9 : stop].decode("utf-8", "replace")))
            offset = stop
        self._buffer = data[offset:]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(reason)
        self.lost.callback(None)


class MinimalClient(_Lazily):
    """
    C{minimal}: the floor the shared client is measured against, the
    simplest correct client a user could write instead of the library.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        super().__init__(endpoint, _MinimalProtocol)

    def _connected(self, protocol: Protocol) -> None:
        # Once connected, requests go straight to the protocol, as in a
        # hand-written program: the floor pays for no wrapper.
        self.request = protocol.request  # type: ignore[attr-defined, method-assign]
        super()._connected(protocol)


class _AMP(amp.AMP):
    def __init__(self) -> None:
        super().__init__()
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class AmpClient(_Lazily):
    """
    C{amp}: Twisted AMP's C{callRemote} over one connection.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        super().__init__(endpoint, _AMP)

    def send(self, protocol: Any, payload: bytes) -> Deferred[bytes]:
        return protocol.callRemote(Echo, payload=payload).addCallback(_payloadOf)


def _payloadOf(response: dict[str, bytes]) -> bytes:
    return response["payload"]


@implementer(IBodyProducer)
class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class HttpClient:
    """
    C{http}: HTTP/1.1 keep-alive through twisted.web's C{Agent} and a
    persistent C{HTTPConnectionPool} (one connection per concurrent caller,
    as HTTP/1.1 cannot multiplex).
    """

    _headers = Headers({b"content-type": [b"application/octet-stream"]})

    def __init__(self, endpoint: IStreamClientEndpoint, reactor: Any, concurrency: int) -> None:
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = concurrency
        self._pool.retryAutomatically = False
        self._agent = Agent.usingEndpointFactory(reactor, _OneEndpoint(endpoint), pool=self._pool)

    def request(self, payload: bytes) -> Deferred[bytes]:
        d = self._agent.request(b"POST", b"http://backend/", self._headers, _Body(payload))
        return d.addCallback(_body)

    def close(self) -> Deferred[None]:
        return self._pool.closeCachedConnections()


def _body(response: IResponse) -> Deferred[bytes]:
    if response.code != 200:
        raise RuntimeError(f"HTTP {response.code}")
    return readAll(response)


class _Collect(Protocol):
    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def readAll(response: IResponse) -> Deferred[bytes]:
    """
    The whole body of C{response} (as C{twisted.web.client.readBody}, which
    warns about transports without C{abortConnection}, such as HTTP/1.1
    client responses').
    """
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Collect(done))
    return done


class _OneEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return self._endpoint


# -- The registry --------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """
    How to build one contender.

    @ivar name: its name on the command line.
    @ivar service: which backend service it talks to (C{sockshare}, C{amp}
        or C{http}).
    @ivar library: whether it is this library's code (else another tool,
        measured for reference).
    @ivar summary: one line for the help and the report.
    @ivar build: makes the contender from an endpoint, a reactor and the
        L{Settings}.
    @ivar maxPayload: the largest payload it can carry.
    @ivar measures: C{"client"} if it compares ways of sending requests to
        the same server, C{"server"} if it drives a server with the minimal
        client, to compare servers (not measured unless asked for).
    """

    name: str
    service: str
    library: bool
    summary: str
    build: Callable[[IStreamClientEndpoint, Any, Settings], Contender]
    maxPayload: int = 1_048_576
    measures: str = "client"


@dataclass(frozen=True)
class Settings:
    """
    The options every contender is built with.
    """

    concurrency: int
    idleTimeout: float
    maxPending: int


def _shared(settingsIdle: bool = False, **options: Any) -> Callable[..., Contender]:
    """
    Build the library's client with its defaults, but for C{options} (and
    the idle timeout of the settings, if C{settingsIdle}).
    """

    def build(endpoint: IStreamClientEndpoint, reactor: Any, settings: Settings) -> Contender:
        if settingsIdle:
            options["idleTimeout"] = settings.idleTimeout
        return SockShareClientFactory(endpoint, reactor, maxPending=settings.maxPending, **options)

    return build


#: The strategies that are the library's shared client, which take request
#: options (C{sockshare bench --idempotent --wait-for-ready}).
SHARED_CLIENTS = ("shared", "shared-eager", "shared-linger", "persistent")

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in [
        Kind(
            "per-request",
            "sockshare",
            True,
            "a new connection per request, closed after the reply",
            lambda e, r, s: PerRequestClient(e, r, maxPending=s.maxPending),
        ),
        Kind(
            "serialized",
            "sockshare",
            True,
            "one connection, one request at a time",
            lambda e, r, s: SerializedClient(e, r),
        ),
        Kind(
            "shared",
            "sockshare",
            True,
            "one shared connection, the library's defaults (closed 0.5 s after the last reply)",
            _shared(),
        ),
        Kind(
            "shared-eager", "sockshare", True, "one shared connection, closed at zero pending", _shared(idleTimeout=0.0)
        ),
        Kind(
            "shared-linger",
            "sockshare",
            True,
            "one shared connection, closed after --idle-timeout idle",
            _shared(settingsIdle=True),
        ),
        Kind("persistent", "sockshare", True, "one shared connection, never closed", _shared(idleTimeout=None)),
        Kind(
            "minimal",
            "sockshare",
            False,
            "the simplest correct hand-written multiplexed client (the floor)",
            lambda e, r, s: MinimalClient(e),
        ),
        Kind(
            "amp",
            "amp",
            False,
            "Twisted AMP callRemote over one connection",
            lambda e, r, s: AmpClient(e),
            maxPayload=amp.MAX_VALUE_LENGTH,
        ),
        Kind(
            "http",
            "http",
            False,
            "HTTP/1.1 keep-alive, twisted.web Agent + HTTPConnectionPool",
            lambda e, r, s: HttpClient(e, r, s.concurrency),
        ),
        Kind(
            "server",
            "echo",
            True,
            "the library's server (defaults, an identity handler), driven by minimal",
            lambda e, r, s: MinimalClient(e),
            measures="server",
        ),
        Kind(
            "minimal-server",
            "minimal-server",
            False,
            "the simplest correct hand-written server (the server's floor), driven by minimal",
            lambda e, r, s: MinimalClient(e),
            measures="server",
        ),
    ]
}

#: What C{sockshare bench} measures unless told: the ways of sending
#: requests, not the servers.
DEFAULT_KINDS = [name for name, kind in KINDS.items() if kind.measures == "client"]
