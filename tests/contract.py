"""
What the contract suites run against: in-memory backends on one clock, a
handler the test steers, and every implementation of L{ISockShareClient}
built on them.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_sockshare import Hedge, RequestContext, SockShareBalancer, SockSharePool, SockShareServerFactory
from twisted_sockshare.codecs import Multiplexed
from twisted_sockshare.errors import InvalidRequest
from twisted_sockshare.interfaces import ISockShareClient
from twisted_sockshare.stats import ClientStats
from twisted_sockshare.testing import StubSockShareClient, _Link, _loopback

#: The ports of the in-memory backends.
PORTS = (9000, 9001, 9002)


class LoopbackReactor(MemoryReactorClock):
    """
    A clock whose TCP connections to 127.0.0.1 reach in-memory servers at
    once (or, while L{holding}, when the test says); a port with no server
    refuses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[int, IProtocolFactory] = {}
        self.links: list[_Link] = []
        self.holding = False
        self.held: list[tuple[int, Any, Any]] = []

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None) -> Any:
        connector = super().connectTCP(host, port, factory, timeout, bindAddress)
        if self.holding:
            self.held.append((port, factory, connector))
        else:
            self.complete(port, factory, connector)
        return connector

    def complete(self, port: int, factory: Any, connector: Any) -> None:
        server = self.servers.get(port)
        link = _loopback(server, factory) if server is not None else None
        if link is None:
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError("no server there")))
        else:
            self.links.append(link)

    def release(self) -> None:
        """
        Complete the connection attempts held so far.
        """
        held, self.held = self.held, []
        for port, factory, connector in held:
            if not connector.stoppedConnecting:  # the attempt was cancelled
                self.complete(port, factory, connector)

    @property
    def openLinks(self) -> list[_Link]:
        return [link for link in self.links if link.open]


class Handler:
    """
    The backends' handler.  A payload's first word says what it does:
    C{echo} answers it at once, C{async} from a coroutine, C{raise} raises,
    C{hold} returns a Deferred the test fires (L{held}; a second copy of
    the same payload, a balancer's backup, in L{copies}), and C{deadline}
    answers with the seconds left of its caller's budget (C{b"None"}: none).
    """

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.held: dict[bytes, Deferred[bytes]] = {}
        self.copies: dict[bytes, Deferred[bytes]] = {}
        self.cancelled: list[bytes] = []

    def __call__(self, payload: bytes) -> Any:
        self.seen.append(payload)
        if payload.startswith(b"hold"):
            d: Deferred[bytes] = Deferred(lambda _: self.cancelled.append(payload))
            if payload in self.held and not self.held[payload].called:
                self.copies[payload] = d
            else:
                self.held[payload] = d
            return d
        if payload.startswith(b"async"):

            async def answer() -> bytes:
                return payload

            return answer()
        if payload.startswith(b"deadline"):
            return repr(RequestContext.current().remaining()).encode()
        if payload.startswith(b"raise"):
            raise ValueError("the handler refused " + payload.decode())
        return payload

    def answer(self, payload: bytes) -> None:
        self.held.pop(payload).callback(payload)

    def answerCopy(self, payload: bytes) -> None:
        self.copies.pop(payload).callback(payload + b" (copy)")


class RefusingCodec(Multiplexed):
    """
    The project's frames, except that C{encodeRequest} refuses payloads that
    start with C{refuse} (L{InvalidRequest}) or C{explode} (any exception).
    """

    def encodeRequest(self, requestId: int, payload: bytes) -> bytes:
        if payload.startswith(b"refuse"):
            raise InvalidRequest("this codec refuses " + payload.decode())
        if payload.startswith(b"explode"):
            raise RuntimeError("the codec broke")
        return super().encodeRequest(requestId, payload)


class FakeSRV:
    """
    A resolver whose SRV answer lists C{ports} on 127.0.0.1; while
    C{holding}, the lookups wait for L{answer}.
    """

    def __init__(self, ports: tuple[int, ...] = PORTS[:2]) -> None:
        self.ports = ports
        self.holding = False
        self.waiting: list[Deferred[Any]] = []

    def lookupService(self, name: str) -> Deferred[Any]:
        records = [dns.RRHeader(type=dns.SRV, payload=dns.Record_SRV(0, 1, port, "127.0.0.1")) for port in self.ports]
        answer = (records, [], [])
        if not self.holding:
            return succeed(answer)
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        d.addCallback(lambda _: answer)
        return d

    def answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


@implementer(ISockShareClient)
class PoolDestination:
    """
    One destination of a L{SockSharePool}, seen as a client.
    """

    def __init__(self, pool: SockSharePool, destination: str) -> None:
        self.pool = pool
        self.destination = destination

    def request(
        self, payload: bytes, idempotent: bool = False, timeout: float | None = None, waitForReady: bool = False
    ) -> Deferred[bytes]:
        return self.pool.request(
            self.destination, payload, idempotent=idempotent, timeout=timeout, waitForReady=waitForReady
        )

    @property
    def pending(self) -> int:
        return sum(client.pending for client in self.pool.endpointClients().values())

    def close(self) -> Deferred[None]:
        return self.pool.close()

    def stats(self) -> dict[str, int]:
        return self.pool.stats().get(self.destination) or ClientStats().asDict()


class Backends:
    """
    Servers on L{PORTS} of a L{LoopbackReactor}, all running one L{Handler}.
    """

    def __init__(self, **serverOptions: Any) -> None:
        self.serverOptions = serverOptions
        self.reactor = LoopbackReactor()
        self.handler = Handler()
        self.servers = {}
        for port in PORTS:
            server = SockShareServerFactory(self.handler, clock=self.reactor, **serverOptions)
            self.servers[port] = self.reactor.servers[port] = server


def makeClient(backends: Backends, **options: Any) -> Any:
    from twisted_sockshare import SockShareClientFactory

    return SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, **options)


def makeBalancer(backends: Backends, **options: Any) -> Any:
    endpoints = [f"tcp:127.0.0.1:{port}" for port in PORTS[:2]]
    return SockShareBalancer(endpoints, backends.reactor, random=Random(7).random, **options)


def makeHedgedBalancer(backends: Backends, **options: Any) -> Any:
    endpoints = [f"tcp:127.0.0.1:{port}" for port in PORTS[:2]]
    return SockShareBalancer(endpoints, backends.reactor, random=Random(7).random, hedge=Hedge(), **options)


def makeDNSBalancer(backends: Backends, resolver: FakeSRV | None = None, **options: Any) -> Any:
    return SockShareBalancer.fromDNS(
        "_sockshare._tcp.contract.test",
        backends.reactor,
        resolver=resolver if resolver is not None else FakeSRV(),
        random=Random(7).random,
        **options,
    )


def makePoolDestination(backends: Backends, **options: Any) -> Any:
    return PoolDestination(SockSharePool(backends.reactor, **options), f"tcp:127.0.0.1:{PORTS[0]}")


def makeStub(backends: Backends, **options: Any) -> Any:
    return StubSockShareClient(backends.handler, backends.reactor, serverOptions=backends.serverOptions, **options)


#: Every implementation: its name, how to make it, how many endpoints it
#: spreads over, and whether its connects go through the reactor.
IMPLEMENTATIONS: list[tuple[str, Callable[..., Any], int, bool]] = [
    ("client", makeClient, 1, True),
    ("balancer", makeBalancer, 2, True),
    ("hedgedBalancer", makeHedgedBalancer, 2, True),
    ("dnsBalancer", makeDNSBalancer, 2, True),
    ("poolDestination", makePoolDestination, 1, True),
    ("stub", makeStub, 1, False),
]
