"""
Hypothesis drives random interleavings of what a balancer sees - requests,
answers, cancels, membership changes, dropped connections, time, close - and
checks the contract's invariants after each step.
"""

from __future__ import annotations

from random import Random
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from twisted_sockshare import Hedge, SockShareBalancer, SockShareError

from .contract import PORTS, Backends, FakeSRV


class BalancerMachine(RuleBasedStateMachine):
    """
    A balancer over in-memory backends on one clock (static members, or
    members from DNS), and every Deferred it returned.
    """

    @initialize(
        fromDNS=st.booleans(),
        requestTimeout=st.sampled_from([None, 2.0]),
        idleTimeout=st.sampled_from([0.0, 1.0]),
        hedge=st.booleans(),
    )
    def setUp(self, fromDNS: bool, requestTimeout: float | None, idleTimeout: float, hedge: bool) -> None:
        self.backends = Backends()
        for server in self.backends.servers.values():
            server.logHandlerFailures = False  # answered as RemoteError; many examples, one test
        self.reactor = self.backends.reactor
        self.handler = self.backends.handler
        options: dict[str, Any] = {
            "requestTimeout": requestTimeout,
            "idleTimeout": idleTimeout,
            "closeTimeout": 3.0,
            "random": Random(3).random,
            # Backups after a few answers: the slowest half, after 0.5 s at least.
            "hedge": Hedge(maxExtraLoad=0.5, minDelay=0.5) if hedge else None,
        }
        if fromDNS:
            self.resolver = FakeSRV()
            self.resolver.holding = True
            self.balancer = SockShareBalancer.fromDNS(
                "_sockshare._tcp.machine.test", self.reactor, resolver=self.resolver, refreshInterval=5.0, **options
            )
        else:
            self.resolver = None
            self.balancer = SockShareBalancer([f"tcp:127.0.0.1:{port}" for port in PORTS[:2]], self.reactor, **options)
        self.deferreds: list[Deferred[bytes]] = []
        self.results: list[list[object]] = []
        self.closed: list[object] | None = None
        self.count = 0
        if hedge and not fromDNS:
            # Answered requests: the balancer knows its latencies, and hedges from the first step.
            for _ in range(4):
                self.request(b"echo", False, None, False)

    @rule(
        kind=st.sampled_from([b"echo", b"hold", b"hold", b"raise"]),
        idempotent=st.booleans(),
        timeout=st.sampled_from([None, None, 1.0, 5.0]),
        waitForReady=st.booleans(),
    )
    def request(self, kind: bytes, idempotent: bool, timeout: float | None, waitForReady: bool) -> None:
        self.count += 1
        d = self.balancer.request(
            kind + b" %d" % self.count, idempotent=idempotent, timeout=timeout, waitForReady=waitForReady
        )
        results: list[object] = []
        d.addBoth(results.append)
        self.deferreds.append(d)
        self.results.append(results)

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        held = [(payload, False) for payload in self.handler.held] + [
            (payload, True) for payload in self.handler.copies
        ]
        if held:
            payload, copy = data.draw(st.sampled_from(sorted(held)))
            d = (self.handler.copies if copy else self.handler.held).pop(payload)
            if not d.called:
                d.callback(payload)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.deferreds:
            data.draw(st.sampled_from(self.deferreds)).cancel()

    @rule(ports=st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True))
    def membership(self, ports: list[int]) -> None:
        if self.resolver is not None:
            self.resolver.ports = tuple(ports)
        elif not self.balancer.closed:
            self.balancer.setEndpoints([f"tcp:127.0.0.1:{port}" for port in ports])

    @rule()
    def dnsAnswers(self) -> None:
        if self.resolver is not None:
            self.resolver.answer()

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        links = self.reactor.openLinks
        if links:
            link = data.draw(st.sampled_from(links))
            link.closeFromServer(clean=False)

    @rule(port=st.sampled_from(PORTS), up=st.booleans())
    def serverUp(self, port: int, up: bool) -> None:
        if up:
            self.reactor.servers[port] = self.backends.servers[port]
        else:
            self.reactor.servers.pop(port, None)

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0]))
    def time(self, seconds: float) -> None:
        self.reactor.advance(seconds)

    @rule()
    def close(self) -> None:
        if self.closed is None:
            self.closed = []
            self.balancer.close().addBoth(self.closed.append)

    @invariant()
    def firedAtMostOnce(self) -> None:
        assert all(len(results) <= 1 for results in self.results), self.results

    @invariant()
    def pendingIsWhatHasNotFired(self) -> None:
        unfired = sum(1 for results in self.results if not results)
        assert self.balancer.pending == unfired, (self.balancer.pending, unfired)

    @invariant()
    def countersAddUp(self) -> None:
        stats = self.balancer.stats()
        assert stats["requests"] + stats["rejected"] == len(self.results), (stats, len(self.results))
        assert stats["requests"] == stats["responses"] + stats["remoteErrors"] + stats["failures"] + stats["pending"]

    @invariant()
    def failuresAreOurs(self) -> None:
        for results in self.results:
            if results and isinstance(results[0], Failure):
                assert results[0].check(SockShareError, CancelledError) is not None, results[0]

    def teardown(self) -> None:
        if self.closed is None:
            self.close()
        for _ in range(10):
            if self.resolver is not None:
                self.resolver.answer()
            self.reactor.advance(5)
        assert self.closed == [None], self.closed
        assert all(len(results) == 1 for results in self.results), self.results
        assert self.balancer.pending == 0
        assert self.reactor.getDelayedCalls() == [], self.reactor.getDelayedCalls()
        assert self.reactor.openLinks == []


# The examples, their number and whether they are random come from the
# Hypothesis profile (tests/__init__.py): fixed in CI, random in a search.
BalancerMachine.TestCase.settings = settings(stateful_step_count=30)


class BalancerStatefulTests(BalancerMachine.TestCase):  # type: ignore[misc,valid-type]
    """
    Random interleavings keep the balancer's promise.
    """

    def test_interleavings(self) -> None:
        """Requests, answers, cancels, membership changes, drops, time and close, in any order."""
        self.runTest()
