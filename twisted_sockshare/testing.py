# -*- test-case-name: tests.test_testing -*-
"""
Doubles for testing your own code against twisted_sockshare, with no
sockets and no real time.

    - L{StubSockShareClient}: the real client, whose requests a handler
      answers at once, in memory (as C{treq.testing.StubTreq} answers HTTP
      requests with a resource).  Use it where your code takes any
      L{ISockShareClient}.
    - L{MemoryBackend}: a real L{SockShareServerFactory} behind an endpoint
      that connects in memory (Twisted's C{iosim}), on a L{Clock}: a real
      L{SockShareClientFactory} talks to it frame by frame, and your test
      decides when bytes move (L{MemoryBackend.flush}) and when time passes
      (C{backend.clock.advance}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IConsumer, IProtocol, IProtocolFactory, IStreamClientEndpoint, ITransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from .client import SockShareClientFactory
from .server import Handler, HandlerResult, SockShareServerFactory


class StubSockShareClient(SockShareClientFactory):
    """
    A real L{SockShareClientFactory} whose backend is C{handler}, reached
    over an in-memory connection that delivers every byte as soon as it is
    written: a request whose handler returns bytes is answered before
    C{request()} returns (as C{treq.testing.StubTreq} drives the real treq).

    The handler is a server's (a real L{SockShareServerFactory} runs it): it
    gets each request's payload and returns the reply's bytes, a Deferred of
    them, or a coroutine returning them; an exception it raises or fails
    with fails the request with L{RemoteError} carrying C{"ClassName:
    text"}.  Every rule of the client holds, since it is the client: its
    options (C{maxPending}, C{maxPayload}, C{requestTimeout},
    C{closeTimeout}...) are checked and enforced, a cancelled request sends
    CANCEL (the handler's Deferred is cancelled), and its timers run on
    L{clock}.

    @ivar requests: every payload the handler was given, in order.
    @ivar clock: the time of the client's timeouts (advance it to fire them).
    @ivar serverFactory: the server running the handler; its C{stats()}
        show what it saw.
    """

    def __init__(
        self,
        handler: Handler,
        clock: Clock | None = None,
        *,
        serverOptions: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """
        @param handler: answers each request (see L{SockShareServerFactory}).
        @param clock: the client's clock; a new L{Clock} if L{None}.
        @param serverOptions: L{SockShareServerFactory}'s keyword options for
            the server running the handler (its C{maxInFlight}, which it
            announces, C{whenFull}...).
        @param options: L{SockShareClientFactory}'s keyword options;
            C{fragmentSize} is L{None} unless given (and the server's too:
            no fragments either way), so that large messages are answered
            at once as well: with fragments, they move a turn of the clock
            at a time.
        @raise TypeError: if an option is unknown or has the wrong type.
        @raise ValueError: if an option is out of range.
        """
        self.requests: list[bytes] = []
        self.clock = clock if clock is not None else Clock()
        endpoint = _LoopbackEndpoint("stub:sockshare")
        # Messages go whole, unless told otherwise: fragments take turns of
        # the clock, and a reply is to come before request() returns.
        options.setdefault("fragmentSize", None)
        super().__init__(endpoint, self.clock, **options)

        def record(payload: bytes) -> HandlerResult:
            self.requests.append(payload)
            return handler(payload)

        # The server takes what the client may send, and holds as many
        # requests in its handler as the client may have pending, unless
        # told otherwise.
        server: dict[str, Any] = {
            "maxPayload": self.maxPayload,
            "maxInFlight": self.maxPending,
            "frameTimeout": None,
            "fragmentSize": None,
        }
        server.update(serverOptions or {})
        self.serverFactory = endpoint.serverFactory = _StubServerFactory(record, clock=self.clock, **server)
        self._stubEndpoint = endpoint

    def disconnect(self, clean: bool = True) -> None:
        """
        The backend closes every connection open now, with the requests on
        it unanswered: cleanly (as a server that closes a connection after
        a number of requests, or restarts), or with a reset if not
        C{clean}.  What the client does then (fail them with
        L{ConnectionDropped}, or send the idempotent ones again) is what a
        real backend's close would make it do.
        """
        for link in self._stubEndpoint.links:
            link.closeFromServer(clean)


class _StubServerFactory(SockShareServerFactory):
    logHandlerFailures = False


@implementer(ITransport, IConsumer)
class _LoopbackTransport:
    """
    One end of a L{_Link}.
    """

    disconnecting = False
    producer: Any = None

    def __init__(self, link: _Link, protocol: IProtocol) -> None:
        self._link = link
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        if data and not self.disconnecting:
            self._link.deliver(self, data)

    def writeSequence(self, data: list[bytes]) -> None:  # type: ignore[override]
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._link.close(self, abort=False)

    def abortConnection(self) -> None:
        self._link.close(self, abort=True)

    def getPeer(self) -> IPv4Address:
        return _ADDRESS

    def getHost(self) -> IPv4Address:
        return _ADDRESS

    # The server registers itself as its transport's producer, and pauses
    # reading at its in-flight bound; it then keeps what it read in its own
    # backlog, so nothing here needs to stop.
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.loseConnection()


class _Link:
    """
    An in-memory connection between two protocols: what one end writes is
    delivered to the other at once, or, while a delivery is under way, right
    after it, in order (never from inside the peer's own C{dataReceived}).
    A close delivers what was written before it (an abort drops it), then
    C{connectionLost} to both ends.
    """

    def __init__(self, one: IProtocol, other: IProtocol) -> None:
        self.ends = (_LoopbackTransport(self, one), _LoopbackTransport(self, other))
        self._queue: deque[tuple[IProtocol, bytes]] = deque()
        self._delivering = False
        self._lost: list[tuple[IProtocol, Failure]] | None = None

    @property
    def open(self) -> bool:
        """Whether C{connectionLost} has not reached both ends yet."""
        return self._lost is None or bool(self._lost)

    def deliver(self, source: _LoopbackTransport, data: bytes) -> None:
        target = self.ends[1] if source is self.ends[0] else self.ends[0]
        self._queue.append((target.protocol, data))
        self._run()

    def close(self, source: _LoopbackTransport, abort: bool) -> None:
        if self._lost is not None:
            return
        peer = self.ends[1] if source is self.ends[0] else self.ends[0]
        for end in self.ends:
            end.disconnecting = True
        if abort:
            self._queue.clear()
            reasons = (Failure(ConnectionAborted()), Failure(ConnectionLost("the peer aborted the connection")))
        else:
            reasons = (Failure(ConnectionDone()), Failure(ConnectionDone()))
        self._lost = [(source.protocol, reasons[0]), (peer.protocol, reasons[1])]
        self._run()

    def closeFromServer(self, clean: bool = True) -> None:
        """
        The server's end closes: cleanly, or with a reset if not C{clean}.
        """
        server = self.ends[0]
        if clean:
            server.loseConnection()
        else:
            server.abortConnection()

    def _run(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._queue:
                protocol, data = self._queue.popleft()
                protocol.dataReceived(data)
            if self._lost:
                lost, self._lost = self._lost, []
                for protocol, reason in lost:
                    protocol.connectionLost(reason)
        finally:
            self._delivering = False


_ADDRESS = IPv4Address("TCP", "127.0.0.1", 9000)


@implementer(IStreamClientEndpoint)
class _LoopbackEndpoint:
    """
    Connects to C{serverFactory} over a new L{_Link}, at once.
    """

    serverFactory: IProtocolFactory | None = None

    def __init__(self, description: str) -> None:
        self._description = description
        self.links: list[_Link] = []

    def __repr__(self) -> str:
        return self._description

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        assert self.serverFactory is not None
        link = _loopback(self.serverFactory, factory)
        if link is None:
            return fail(ConnectionRefusedError("the server refused the connection"))
        self.links = [each for each in self.links if each.open] + [link]
        return succeed(link.ends[1].protocol)


def _loopback(serverFactory: IProtocolFactory, clientFactory: IProtocolFactory) -> _Link | None:
    """
    Connect a protocol of C{clientFactory} to one of C{serverFactory} over a
    new L{_Link}, at once; L{None} if either factory refuses.
    """
    client = clientFactory.buildProtocol(_ADDRESS)
    server = serverFactory.buildProtocol(_ADDRESS)
    if client is None or server is None:
        return None
    link = _Link(server, client)
    server.makeConnection(link.ends[0])
    client.makeConnection(link.ends[1])
    return link


@implementer(IStreamClientEndpoint)
class _MemoryEndpoint:
    """
    Connects through C{connectTo}: a L{MemoryBackend}'s in-memory connect.
    """

    def __init__(self, connectTo: Callable[[IProtocolFactory], IProtocol]) -> None:
        self._connectTo = connectTo

    def __repr__(self) -> str:
        return "memory:sockshare"

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return succeed(self._connectTo(factory))


class MemoryBackend:
    """
    A real L{SockShareServerFactory}, reached in memory.

    @ivar clock: the time of the server and of the clients made by L{client}.
    @ivar serverFactory: the server; its C{stats()} show what it saw.
    """

    def __init__(self, handler: Handler, clock: Clock | None = None, **serverOptions: Any) -> None:
        """
        @param handler: the server's request handler.
        @param clock: the clock to use; a new L{Clock} if L{None}.
        @param serverOptions: L{SockShareServerFactory}'s keyword options.
        """
        self.clock = clock if clock is not None else Clock()
        self.serverFactory = SockShareServerFactory(handler, clock=self.clock, **serverOptions)
        self._pumps: list[iosim.IOPump] = []

    def endpoint(self) -> IStreamClientEndpoint:
        """
        An endpoint whose every C{connect} makes a new in-memory connection
        to the server (it succeeds at once).
        """
        return _MemoryEndpoint(self._connect)

    def client(self, **options: Any) -> SockShareClientFactory:
        """
        A real shared client of this backend, on L{clock}.

        @param options: L{SockShareClientFactory}'s keyword options.
        """
        return SockShareClientFactory(self.endpoint(), self.clock, **options)

    def flush(self) -> None:
        """
        Move every byte written so far, both ways, until nothing moves.
        """
        moved = True
        while moved:
            moved = False
            for pump in list(self._pumps):
                moved = pump.pump() or moved
            self._pumps = [
                pump for pump in self._pumps if not (pump.clientIO.disconnected and pump.serverIO.disconnected)
            ]

    def _connect(self, factory: IProtocolFactory) -> IProtocol:
        address = IPv4Address("TCP", "127.0.0.1", 9000)
        client = factory.buildProtocol(address)
        server = self.serverFactory.buildProtocol(address)
        assert client is not None and server is not None
        clientTransport = iosim.FakeTransport(client, isServer=False, peerAddress=address)
        serverTransport = iosim.FakeTransport(server, isServer=True, hostAddress=address)
        self._pumps.append(
            iosim.connect(server, serverTransport, client, clientTransport, greet=False, clock=self.clock)
        )
        return client


__all__ = ["StubSockShareClient", "MemoryBackend"]
