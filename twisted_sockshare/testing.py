# -*- test-case-name: tests.test_testing -*-
"""
Doubles for testing your own code against twisted_sockshare, with no
sockets and no real time.

    - L{StubSockShareClient}: a client whose requests a handler answers at
      once, in memory (as C{treq.testing.StubTreq} answers HTTP requests with
      a resource).  Use it where your code takes any
      L{ISockShareClient}.
    - L{MemoryBackend}: a real L{SockShareServerFactory} behind an endpoint
      that connects in memory (Twisted's C{iosim}), on a L{Clock}: a real
      L{SockShareClientFactory} talks to it frame by frame, and your test
      decides when bytes move (L{MemoryBackend.flush}) and when time passes
      (C{backend.clock.advance}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from .client import SockShareClientFactory
from .errors import ClientClosed, RemoteError
from .interfaces import ISockShareClient
from .server import Handler, SockShareServerFactory, describeError
from .stats import ClientStats


@implementer(ISockShareClient)
class StubSockShareClient:
    """
    A client answered by C{handler}, in memory.

    The handler gets each request's payload and returns the reply's bytes, a
    Deferred of them, or a coroutine returning them, as a server's handler
    does; an exception it raises or fails with fails the request with
    L{RemoteError} carrying C{"ClassName: text"}, as the backend's ERROR frame
    would.  A payload that is not bytes fails with C{TypeError}, and requests
    after L{close} with L{ClientClosed}, as with the real client.

    @ivar requests: every payload accepted, in order.
    """

    def __init__(self, handler: Handler) -> None:
        """
        @param handler: answers each request (see L{SockShareServerFactory}).
        """
        self._handler = handler
        self._pending: set[Deferred[bytes]] = set()
        # The handler's Deferred of each pending request.
        self._answers: dict[Deferred[bytes], Deferred[Any]] = {}
        self._closing = False
        self._closeWaiters: list[Deferred[None]] = []
        self._counts = {"responses": 0, "remoteErrors": 0, "failures": 0, "rejected": 0, "cancelled": 0}
        self._peak = 0
        self.requests: list[bytes] = []

    @property
    def pending(self) -> int:
        """How many requests wait for the handler."""
        return len(self._pending)

    def request(self, payload: bytes) -> Deferred[bytes]:
        """
        Hand C{payload} to the handler.  Never raises.
        """
        if not isinstance(payload, bytes):
            self._counts["rejected"] += 1
            return fail(TypeError(f"request() takes bytes, not {type(payload).__name__}"))
        if self._closing:
            self._counts["rejected"] += 1
            return fail(ClientClosed("the stub client is closed"))
        self.requests.append(payload)
        answer = maybeDeferred(self._handler, payload)
        result: Deferred[bytes] = Deferred(self._cancel)
        self._answers[result] = answer
        self._pending.add(result)
        self._peak = max(self._peak, len(self._pending))
        answer.addCallbacks(self._answered, self._failed, callbackArgs=(result,), errbackArgs=(result,))
        return result

    def _cancel(self, result: Deferred[bytes]) -> None:
        # The request fails with CancelledError once this returns.
        self._pending.discard(result)
        self._counts["cancelled"] += 1
        self._counts["failures"] += 1
        self._answers.pop(result).cancel()
        self._maybeClosed()

    def _answered(self, reply: object, result: Deferred[bytes]) -> None:
        if result not in self._pending:  # cancelled by the caller
            return
        if not isinstance(reply, (bytes, bytearray)):
            self._failed(Failure(TypeError(f"handler returned {type(reply).__name__}, not bytes")), result)
            return
        self._pending.discard(result)
        self._answers.pop(result, None)
        self._counts["responses"] += 1
        result.callback(bytes(reply))
        self._maybeClosed()

    def _failed(self, reason: Failure, result: Deferred[bytes]) -> None:
        if result not in self._pending:  # cancelled by the caller
            return
        self._pending.discard(result)
        self._answers.pop(result, None)
        assert reason.value is not None
        self._counts["remoteErrors"] += 1
        result.errback(Failure(RemoteError(describeError(reason.value))))
        self._maybeClosed()

    def close(self) -> Deferred[None]:
        """
        Refuse new requests; fire once the pending ones are answered.
        """
        self._closing = True
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        self._maybeClosed()
        return waiter

    def _maybeClosed(self) -> None:
        if self._closing and not self._pending:
            waiters, self._closeWaiters = self._closeWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def stats(self) -> dict[str, int]:
        """
        The same keys as L{SockShareClientFactory.stats}; connection counters
        stay 0.
        """
        counts = self._counts
        return ClientStats(
            pending=len(self._pending),
            peakPending=self._peak,
            requests=counts["responses"] + counts["remoteErrors"] + counts["failures"] + len(self._pending),
            **counts,
        ).asDict()


@implementer(IStreamClientEndpoint)
class _MemoryEndpoint:
    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend

    def __repr__(self) -> str:
        return "memory:sockshare"

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return succeed(self._backend._connect(factory))


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
        return _MemoryEndpoint(self)

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
