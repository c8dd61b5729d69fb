# -*- test-case-name: tests.test_discovery -*-
"""
A balancer's membership from DNS, through C{twisted.names}: SRV records
(Kubernetes headless services, Consul's DNS interface) or A/AAAA records,
looked up again every C{refreshInterval}, and early after a connect failure.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure

from .target import Target

_log = Logger(namespace="twisted_sockshare.pool")

#: The least time between two lookups brought forward by connect failures.
EARLY_REFRESH = 1.0


def isServiceName(name: str) -> bool:
    """
    Whether C{name} is looked up as SRV (C{_service._tcp.domain}) rather than
    A/AAAA.
    """
    return name.startswith("_") and "._tcp." in name


def endpointString(address: str, port: int) -> str:
    """
    The client endpoint string of C{address} (an IPv4 or IPv6 literal) and
    C{port}.
    """
    # Twisted's TCP client connects to an IPv6 literal over IPv6.
    return "tcp:host=" + address.replace(":", "\\:") + f":port={port}"


class DNSDiscovery:
    """
    Looks a DNS name up, again every C{refreshInterval}, and hands each
    non-empty answer on: what keeps a balancer's membership equal to it.

    @ivar lastError: why the last lookup failed or was empty, if it did.
    @ivar failures: how many lookups failed or came back empty.
    """

    def __init__(
        self,
        name: str,
        resolver: Any,
        clock: IReactorTime,
        port: int | None,
        refreshInterval: float,
        found: Callable[[list[Target]], None],
    ) -> None:
        """
        @param found: called with the targets of each answer that has any
            (a failed or empty lookup keeps the last ones).
        """
        if not isServiceName(name) and port is None:
            raise ValueError(f"{name!r} is an A/AAAA name: give its port (port=...)")
        self._found = found
        # The endpoints of the last answer handed on.
        self._current: set[IStreamClientEndpoint | str] = set()
        self.failures = 0
        self.name = name
        self._resolver = resolver
        self._clock = clock
        self._port = port
        self.refreshInterval = refreshInterval
        self.lastError: str | None = None
        self._call: IDelayedCall | None = None
        self._lookingUp: Deferred[None] | None = None
        self._lastLookup = -EARLY_REFRESH
        self._stopped = False

    def start(self) -> Deferred[None]:
        """
        Look the name up now, then every C{refreshInterval}.
        """
        return self.refresh()

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def connectFailed(self) -> None:
        """
        A member could not be reached: look again soon, at most once every
        L{EARLY_REFRESH} seconds.
        """
        if self._lookingUp is None and self._clock.seconds() - self._lastLookup >= EARLY_REFRESH:
            self.refresh()

    def refresh(self) -> Deferred[None]:
        """
        Look the name up now and apply the answer.
        """
        if self._lookingUp is not None:
            return self._lookingUp
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._lastLookup = self._clock.seconds()
        d = self._targets().addCallback(self._answered).addErrback(self._failed)
        self._lookingUp = d

        def done(_: None) -> None:
            self._lookingUp = None
            if not self._stopped:
                self._call = self._clock.callLater(self.refreshInterval, self.refresh)

        d.addCallback(done)
        return d

    def _targets(self) -> Deferred[list[Target]]:
        if isServiceName(self.name):
            return self._resolver.lookupService(self.name).addCallback(self._fromSRV)
        port = self._port
        assert port is not None

        def targets(addresses: list[str]) -> list[Target]:
            return [Target(endpointString(address, port)) for address in addresses]

        return self._addresses(self.name).addCallback(targets)

    def _fromSRV(self, result: tuple[list[Any], list[Any], list[Any]]) -> Deferred[list[Target]]:
        records = [rr.payload for rr in result[0] if rr.type == dns.SRV]

        def resolve(record: Any) -> Deferred[list[Target]]:
            target = record.target.name.decode("ascii").rstrip(".")
            return self._addresses(target).addCallback(
                lambda addresses: [
                    Target(endpointString(address, record.port), record.priority, max(record.weight, 1))
                    for address in addresses
                ]
            )

        return gatherResults([resolve(record) for record in records], consumeErrors=True).addCallback(
            lambda lists: [target for targets in lists for target in targets]
        )

    def _addresses(self, host: str) -> Deferred[list[str]]:
        """
        The IPv4 and IPv6 addresses of C{host} (itself if it is one).
        """
        if isIPAddress(host) or isIPv6Address(host):
            d: Deferred[list[str]] = Deferred()
            d.callback([host])
            return d

        def records(result: tuple[list[Any], list[Any], list[Any]]) -> list[str]:
            out = []
            for rr in result[0]:
                if rr.type == dns.A:
                    out.append(rr.payload.dottedQuad())
                elif rr.type == dns.AAAA:
                    out.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
            return out

        def none(reason: Failure) -> list[str]:
            return []

        v4 = self._resolver.lookupAddress(host).addCallback(records)
        v6 = self._resolver.lookupIPV6Address(host).addCallbacks(records, none)
        return gatherResults([v4, v6], consumeErrors=True).addCallback(lambda both: both[0] + both[1])

    def _answered(self, targets: list[Target]) -> None:
        if self._stopped:  # the balancer closed while the lookup was out
            return
        if not targets:
            self._failed(Failure(LookupError(f"{self.name} has no address")))
            return
        unique = list(dict.fromkeys(targets))
        before, after = self._current, {target.endpoint for target in unique}
        self._current = after
        self.lastError = None
        self._found(unique)
        if before != after:
            _log.info(
                "{name}: {count} endpoints ({added} added, {removed} removed)",
                name=self.name,
                count=len(after),
                added=len(after - before),
                removed=len(before - after),
            )

    def _failed(self, reason: Failure) -> None:
        if self._stopped:
            return
        value: Any = reason.value
        if hasattr(value, "subFailure"):  # gatherResults' FirstError
            value = value.subFailure.value
        self.lastError = f"DNS lookup of {self.name} failed: {type(value).__name__}: {value}"
        self.failures += 1
        _log.warn("{error}; keeping the last membership", error=self.lastError)


def systemResolver(reactor: Any, server: tuple[str, int] | None = None) -> Any:
    """
    The resolver of C{/etc/resolv.conf}, or of one DNS C{server}.
    """
    from twisted.names import client

    if server is not None:
        # Give up on a query after 1 + 3 seconds: a DNS outage then shows as
        # a counted discovery failure, not a lookup that hangs for a minute.
        return client.Resolver(servers=[server], reactor=reactor, timeout=(1, 3))
    return client.createResolver()


__all__ = ["DNSDiscovery", "isServiceName", "endpointString", "systemResolver"]
