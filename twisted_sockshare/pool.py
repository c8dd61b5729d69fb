# -*- test-case-name: tests.test_pool -*-
"""
More than one backend: a pool of shared clients, one per destination.

(The balancer, which spreads requests over the endpoints of one logical
backend, is L{twisted_sockshare.balancer}; C{twisted_sockshare.pool.SockShareBalancer}
stays importable, for the code that imports it from here.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from ._reactor import maybeGlobalReactor
from .balancer import SockShareBalancer  # importable from here, as it was
from .client import SockShareClientFactory
from .errors import ClientClosed
from .options import ClientOptions
from .stats import ClientStats

_log = Logger(namespace="twisted_sockshare.pool")


class SockSharePool:
    """
    One shared client per destination, made on the first request to it and
    dropped once it is idle with no connection, unless its last connect
    failed: that client is kept, with its connect backoff, until a connect
    succeeds (or the pool closes), so requests to a destination that is down
    fail fast instead of each making a new client that connects again.

    A destination is an endpoint string (C{"tcp:10.0.0.7:9000"}), or any
    key given with an endpoint object to L{clientFor} or L{request}.
    """

    def __init__(self, reactor: IReactorTime | None = None, **clientOptions: Any) -> None:
        """
        @param reactor: as for L{SockShareClientFactory}.
        @param clientOptions: L{SockShareClientFactory}'s keyword options,
            for every client of the pool.
        @raise ValueError: if an option is out of range.
        """
        ClientOptions(**clientOptions)
        self._reactor = maybeGlobalReactor(reactor)
        self._options = clientOptions
        self._clients: dict[str, SockShareClientFactory] = {}
        self._closing = False
        self._dropped: dict[str, ClientStats] = {}

    def clientFor(self, destination: str, endpoint: IStreamClientEndpoint | None = None) -> SockShareClientFactory:
        """
        The shared client of C{destination}, made if there is none.

        @param endpoint: where C{destination} is, if it is not an endpoint
            string itself.
        @raise ClientClosed: if the pool is closed.
        """
        if self._closing:
            raise ClientClosed("the pool is closed; make a new one")
        client = self._clients.get(destination)
        if client is None or client.closed:
            client = SockShareClientFactory(endpoint or destination, self._reactor, **self._options)
            self._clients[destination] = client
        return client

    def request(
        self,
        destination: str,
        payload: bytes,
        endpoint: IStreamClientEndpoint | None = None,
        *,
        idempotent: bool = False,
        timeout: float | None = None,
        waitForReady: bool = False,
    ) -> Deferred[bytes]:
        """
        Send C{payload} to C{destination}'s shared client; C{idempotent},
        C{timeout} and C{waitForReady} mean what they mean there (see
        L{SockShareClientFactory.request}).
        """
        self._sweep()
        try:
            client = self.clientFor(destination, endpoint)
        except ClientClosed as error:
            return fail(error)
        return client.request(payload, idempotent=idempotent, timeout=timeout, waitForReady=waitForReady)

    def _sweep(self) -> None:
        """
        Drop the clients with nothing pending and no connection, keeping
        their counters; keep those whose last connect failed (their backoff).
        """
        for destination, client in list(self._clients.items()):
            if not client.pending and not client.openConnections and client.reachable:
                del self._clients[destination]
                dropped = self._dropped.get(destination, ClientStats())
                self._dropped[destination] = dropped + ClientStats.fromDict(client.stats())

    @property
    def destinations(self) -> list[str]:
        """
        The destinations that have a client now.
        """
        self._sweep()
        return list(self._clients)

    def stats(self) -> dict[str, dict[str, int]]:
        """
        Each destination's counters (L{SockShareClientFactory.stats}),
        including those of clients already dropped.
        """
        totals = dict(self._dropped)
        for destination, client in self._clients.items():
            totals[destination] = totals.get(destination, ClientStats()) + ClientStats.fromDict(client.stats())
        return {destination: record.asDict() for destination, record in totals.items()}

    def endpointStats(self) -> dict[str, dict[str, int]]:
        """
        The same as L{stats}, named as the balancer's is.
        """
        return self.stats()

    def endpointClients(self) -> dict[str, SockShareClientFactory]:
        """
        Each destination's client, while it has one (an idle client is
        dropped after a while; L{stats} keeps its counters).
        """
        return dict(self._clients)

    def close(self) -> Deferred[None]:
        """
        Close every client gracefully; new requests fail with L{ClientClosed}.
        """
        self._closing = True
        closing = [client.close() for client in self._clients.values()]
        return DeferredList(closing).addCallback(lambda _: None) if closing else succeed(None)


__all__ = ["SockSharePool", "SockShareBalancer"]
