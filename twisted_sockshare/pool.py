# -*- test-case-name: tests.test_pool -*-
"""
More than one backend: a pool of shared clients, one per destination, and a
balancer that spreads requests over the endpoints of one logical backend.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._reactor import maybeGlobalReactor
from .client import SockShareClientFactory
from .errors import ClientClosed, ConnectFailed
from .interfaces import ISockShareClient
from .options import ClientOptions
from .stats import ClientStats

_log = Logger(namespace="twisted_sockshare.pool")


class SockSharePool:
    """
    One shared client per destination, made on the first request to it and
    dropped once it is idle with no connection.

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
        self, destination: str, payload: bytes, endpoint: IStreamClientEndpoint | None = None
    ) -> Deferred[bytes]:
        """
        Send C{payload} to C{destination}'s shared client (see
        L{SockShareClientFactory.request}).
        """
        self._sweep()
        try:
            client = self.clientFor(destination, endpoint)
        except ClientClosed as error:
            return fail(error)
        return client.request(payload)

    def _sweep(self) -> None:
        """
        Drop the clients with nothing pending and no connection, keeping
        their counters.
        """
        for destination, client in list(self._clients.items()):
            if not client.pending and not client.openConnections:
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


class _Member:
    """
    One endpoint of a L{SockShareBalancer}.
    """

    def __init__(self, client: SockShareClientFactory) -> None:
        self.client = client
        self.failures = 0
        self.downUntil = 0.0


@implementer(ISockShareClient)
class SockShareBalancer:
    """
    One logical backend made of several endpoints, each with its own shared
    client.  Each request goes to the endpoint with the fewest pending
    requests.  An endpoint whose connect fails is skipped for a backoff
    period (exponential, with jitter, capped) and the request is retried on
    another one; once every endpoint is down, requests fail at once with
    L{ConnectFailed} instead of queueing.

    Only requests that failed to connect are retried elsewhere: they were
    never sent.  A request lost with its connection fails as it would with
    one endpoint, since the backend may have acted on it.
    """

    def __init__(
        self,
        endpoints: Sequence[IStreamClientEndpoint | str],
        reactor: IReactorTime | None = None,
        *,
        backoff: float = 0.5,
        maxBackoff: float = 30.0,
        random: Callable[[], float] = random.random,
        **clientOptions: Any,
    ) -> None:
        """
        @param endpoints: the endpoints (objects or strings) of the backend.
        @param backoff: seconds an endpoint is skipped after its first failed
            connect; doubled for each further failure in a row (each period
            is randomised between half and all of it), up to C{maxBackoff}.
        @param random: gives numbers in [0, 1) for the jitter.
        @param clientOptions: L{SockShareClientFactory}'s keyword options.
        @raise ValueError: if there is no endpoint, or an option is out of range.
        """
        if not endpoints:
            raise ValueError("a balancer needs at least one endpoint")
        if not 0 < backoff <= maxBackoff:
            raise ValueError(f"need 0 < backoff <= maxBackoff, not {backoff!r} and {maxBackoff!r}")
        self._clock = maybeGlobalReactor(reactor)
        self._members = [_Member(SockShareClientFactory(e, self._clock, **clientOptions)) for e in endpoints]
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self._random = random
        # Capped exponential; the jitter is applied as a factor in _failed.
        self._backoffPolicy = backoffPolicy(backoff, maxBackoff, 2.0, jitter=lambda: 0.0)

    @property
    def pending(self) -> int:
        return sum(member.client.pending for member in self._members)

    @property
    def reachable(self) -> bool:
        """
        Whether an endpoint is up (not skipped after failures).
        """
        now = self._clock.seconds()
        return any(member.downUntil <= now for member in self._members)

    def endpointClients(self) -> dict[str, SockShareClientFactory]:
        """
        Each endpoint's client, named as in L{endpointStats}.
        """
        out: dict[str, SockShareClientFactory] = {}
        for index, member in enumerate(self._members):
            name = member.client.endpointDescription
            out[f"{name} #{index}" if name in out else name] = member.client
        return out

    def _available(self, exclude: set[_Member]) -> list[_Member]:
        now = self._clock.seconds()
        return [m for m in self._members if m.downUntil <= now and m not in exclude and not m.client.closed]

    def request(self, payload: bytes) -> Deferred[bytes]:
        """
        Send C{payload} to the least busy endpoint that is up (see
        L{SockShareClientFactory.request}).
        """
        result: Deferred[bytes] = Deferred()
        self._attempt(payload, result, set(), [])
        return result

    def _attempt(self, payload: bytes, result: Deferred[bytes], tried: set[_Member], why: list[str]) -> None:
        candidates = self._available(tried)
        if not candidates:
            now = self._clock.seconds()
            wait = min(m.downUntil for m in self._members) - now
            detail = "; ".join(why) if why else f"next retry in {max(wait, 0):.1f} s"
            result.errback(Failure(ConnectFailed(f"all {len(self._members)} endpoints are down ({detail})")))
            return
        member = min(candidates, key=lambda m: m.client.pending)
        tried.add(member)
        member.client.request(payload).addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(member, result),
            errbackArgs=(member, payload, result, tried, why),
        )

    def _succeeded(self, reply: bytes, member: _Member, result: Deferred[bytes]) -> None:
        member.failures = 0
        result.callback(reply)

    def _failed(
        self,
        reason: Failure,
        member: _Member,
        payload: bytes,
        result: Deferred[bytes],
        tried: set[_Member],
        why: list[str],
    ) -> None:
        if not reason.check(ConnectFailed):
            if member.client.connected:
                member.failures = 0
            result.errback(reason)
            return
        now = self._clock.seconds()
        if member.downUntil <= now:
            # One failed connect fails every request waiting on it: count it
            # once, or a burst of callers would push the backoff to its cap.
            member.failures += 1
            period = self._backoffPolicy(member.failures - 1) * (0.5 + 0.5 * self._random())
            member.downUntil = now + period
            _log.warn(
                "Endpoint {endpoint} is down for {period:.1f} s: {why}",
                endpoint=member.client.endpointDescription,
                period=period,
                why=reason.getErrorMessage(),
            )
        why.append(reason.getErrorMessage())
        self._attempt(payload, result, tried, why)

    def stats(self) -> dict[str, int]:
        """
        The sum of every endpoint's counters (L{SockShareClientFactory.stats};
        C{connected} counts connected endpoints, C{peakPending} is the
        largest endpoint's), plus C{endpointsDown}: how
        many are being skipped now.
        """
        totals = ClientStats.total(ClientStats.fromDict(m.client.stats()) for m in self._members).asDict()
        now = self._clock.seconds()
        totals["endpointsDown"] = sum(member.downUntil > now for member in self._members)
        return totals

    def endpointStats(self) -> dict[str, dict[str, int]]:
        """
        Each endpoint's counters, plus C{down}: 1 while it is skipped.
        """
        now = self._clock.seconds()
        down = {member.client: member.downUntil > now for member in self._members}
        return {name: {**client.stats(), "down": int(down[client])} for name, client in self.endpointClients().items()}

    def close(self) -> Deferred[None]:
        """
        Close every endpoint's client gracefully.
        """
        return DeferredList([m.client.close() for m in self._members]).addCallback(lambda _: None)


__all__ = ["SockSharePool", "SockShareBalancer"]
