# -*- test-case-name: tests.test_strategies -*-
"""
Other ways to talk to a backend, kept to compare against the shared client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from zope.interface import implementer

from ..client import SockShareClientFactory
from ..errors import ClientClosed, TooManyPending
from ..interfaces import ISockShareClient
from ..stats import ClientStats


@implementer(ISockShareClient)
class PerRequestClient:
    """
    The legacy strategy the shared client replaces: every request opens its
    own connection, and closes it after the reply.

    It has the shared client's C{request}, C{close}, C{pending} and C{stats},
    with the same options and errors, so either can sit behind the gateway.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | str,
        reactor: IReactorTime | None = None,
        **options: Any,
    ) -> None:
        """
        @param endpoint: where the backend is.
        @param reactor: as for L{SockShareClientFactory}.
        @param options: L{SockShareClientFactory}'s keyword options
            (C{idleTimeout} is ignored: every connection closes after its reply).
        """
        options["idleTimeout"] = 0.0
        self._maxPending = options.pop("maxPending", 10_000)
        self._endpoint = endpoint
        self._reactor = reactor
        self._options = options
        self._clients: set[SockShareClientFactory] = set()
        self._retiredStats = ClientStats()
        self._rejected = 0
        self._peakPending = 0
        self._closing = False
        # Validate the options once, up front.
        self._template = SockShareClientFactory(endpoint, reactor, maxPending=self._maxPending, **options)

    @property
    def pending(self) -> int:
        return sum(client.pending for client in self._clients)

    @property
    def connected(self) -> bool:
        return any(client.connected for client in self._clients)

    def request(
        self, payload: bytes, idempotent: bool = False, timeout: float | None = None, waitForReady: bool = False
    ) -> Deferred[bytes]:
        """
        Send C{payload} on a new connection, closed once it is answered (the
        options as for L{SockShareClientFactory.request}).
        """
        if self._closing or len(self._clients) >= self._maxPending:
            return self._refuse()
        client = SockShareClientFactory(self._endpoint, self._reactor, maxPending=1, **self._options)
        self._clients.add(client)
        self._peakPending = max(self._peakPending, len(self._clients))
        result = client.request(payload, idempotent, timeout, waitForReady)
        client.close().addBoth(self._retire, client)
        return result

    def _refuse(self) -> Deferred[bytes]:
        """
        Refuse as the shared client would: closed, or C{maxPending} connections open.
        """
        self._rejected += 1
        where = self._template.endpointDescription
        if self._closing:
            return fail(ClientClosed(f"the client for {where} is closed; make a new one"))
        return fail(
            TooManyPending(
                f"{len(self._clients)} requests already pending to {where} "
                f"(maxPending={self._maxPending}); retry later or raise maxPending"
            )
        )

    def _retire(self, _: object, client: SockShareClientFactory) -> None:
        self._clients.discard(client)
        self._retiredStats += ClientStats.fromDict(client.stats())

    def close(self) -> Deferred[None]:
        """
        Refuse new requests; fire once every connection is gone.
        """
        self._closing = True
        if not self._clients:
            return succeed(None)
        waiting = DeferredList([client.close() for client in list(self._clients)])
        return waiting.addCallback(lambda _: None)

    def stats(self) -> dict[str, int]:
        """
        The sum of every connection's counters (see L{SockShareClientFactory.stats}).
        """
        totals = ClientStats.total([self._retiredStats, *(ClientStats.fromDict(c.stats()) for c in self._clients)])
        out = totals.asDict()
        out.update(
            pending=self.pending,
            peakPending=self._peakPending,
            connected=int(self.connected),
            rejected=totals.rejected + self._rejected,
        )
        return out


@implementer(ISockShareClient)
class SerializedClient:
    """
    One connection kept open, one request at a time: a request waits until
    the previous one is answered (the "lock around a socket" design).

    It exists to be measured against the shared client, which sends every
    concurrent request at once on the same connection.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | str,
        reactor: IReactorTime | None = None,
        **options: Any,
    ) -> None:
        """
        @param endpoint: where the backend is.
        @param reactor: as for L{SockShareClientFactory}.
        @param options: L{SockShareClientFactory}'s keyword options;
            C{idleTimeout} defaults to L{None} (the connection stays open).
        """
        options.setdefault("idleTimeout", None)
        self._client = SockShareClientFactory(endpoint, reactor, **options)
        self._turn = DeferredLock()
        self._waiting = 0

    @property
    def pending(self) -> int:
        return self._client.pending + self._waiting

    def request(
        self, payload: bytes, idempotent: bool = False, timeout: float | None = None, waitForReady: bool = False
    ) -> Deferred[bytes]:
        """
        Send C{payload} once every earlier request has been answered (or
        has failed); the options as for L{SockShareClientFactory.request},
        C{timeout} counted from its turn.  Requests still waiting their turn
        when L{close} is called fail with L{ClientClosed}.
        """
        self._waiting += 1
        return self._turn.run(self._send, payload, idempotent, timeout, waitForReady)

    def _send(self, payload: bytes, idempotent: bool, timeout: float | None, waitForReady: bool) -> Deferred[bytes]:
        self._waiting -= 1
        return self._client.request(payload, idempotent, timeout, waitForReady)

    def close(self) -> Deferred[None]:
        """
        Close the connection once the request being answered is done.
        """
        return self._client.close()

    def stats(self) -> dict[str, int]:
        """
        The connection's counters (see L{SockShareClientFactory.stats}).
        """
        return self._client.stats()


__all__ = ["PerRequestClient", "SerializedClient"]
