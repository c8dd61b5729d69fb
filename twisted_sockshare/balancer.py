# -*- test-case-name: tests.test_pool,tests.test_balancer -*-
"""
One logical backend made of several endpoints, each with its own shared
client: which endpoint each request goes to, which endpoints are skipped,
which failed requests are tried again elsewhere, and how the membership
changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._membership import OUTLIER_STREAK, Membership, _Member
from ._reactor import maybeGlobalReactor
from ._retrybudget import _RetryBudget
from .client import SockShareClientFactory
from .discovery import DNSDiscovery, systemResolver
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    ProtocolViolation,
    RemoteError,
    RequestRefused,
    RequestTimeout,
    TooManyPending,
)
from .hedging import Hedge, _Delays
from .interfaces import ISockShareClient
from .options import ClientOptions, checkTimeout
from .stats import ClientStats
from .target import Target

_log = Logger(namespace="twisted_sockshare.pool")

#: Consecutive failures of these kinds on one endpoint eject it.
OUTLIER_ERRORS = (RequestTimeout, ConnectionDropped, ProtocolViolation)
#: The membership of a balancer made by L{SockShareBalancer.fromDNS}, until
#: DNS answers.
_FROM_DNS: list[Target] = []


class _Call:
    """
    One request of a L{SockShareBalancer}, across its attempts.

    @ivar result: the caller's Deferred.
    @ivar tried: the members it was sent to.
    @ivar why: why each earlier attempt failed.
    @ivar attempt: the member client's Deferred of the attempt under way.
    @ivar timer: while it waits (for the first DNS answer, or, with
        C{waitForReady}, for a member to be up), what ends the wait.
    @ivar queue: the list it waits in, while it waits.
    @ivar deadline: when its own timeout runs out, if it has one.
    @ivar waitUntil: with C{waitForReady}, when it stops waiting for a
        member to be up.
    @ivar started: when the attempt under way was sent.
    @ivar member: the member it was sent to.
    @ivar hedgeCall: while a backup may still be sent, what sends it.
    @ivar backup: the backup's Deferred and member, while it is under way.
    @ivar hedged: whether a backup was sent (there is one at most).
    @ivar settled: whether a copy's answer decided it (the other copy's
        cancel then changes nothing).
    """

    __slots__ = (
        "payload", "idempotent", "result", "tried", "why", "attempt", "timer", "queue", "deadline", "timeout",
        "waitForReady", "waitUntil", "refused", "started", "member", "hedgeCall", "backup", "hedged", "settled",
    )  # fmt: skip

    def __init__(
        self,
        payload: bytes,
        idempotent: bool,
        canceller: Callable[[_Call], None],
        timeout: float | None = None,
        waitForReady: bool = False,
        now: float = 0.0,
    ) -> None:
        self.payload = payload
        self.idempotent = idempotent
        self.result: Deferred[bytes] = Deferred(lambda result: canceller(self))
        self.tried: set[_Member] = set()
        self.why: list[str] = []
        self.attempt: Deferred[bytes] | None = None
        self.timer: IDelayedCall | None = None
        self.queue: list[_Call] | None = None
        self.timeout = timeout
        self.deadline = None if timeout is None else now + timeout
        self.waitForReady = waitForReady
        self.waitUntil = 0.0
        self.refused = False
        self.started = now
        self.member: _Member | None = None
        self.hedgeCall: IDelayedCall | None = None
        self.backup: tuple[Deferred[bytes], _Member] | None = None
        self.hedged = False
        self.settled = False


@implementer(ISockShareClient)
class SockShareBalancer:
    """
    One logical backend made of several endpoints, each with its own shared
    client.

    Each request goes to the cheaper of two endpoints picked at random,
    weighted by their SRV weight, among the endpoints of the lowest priority
    that are up; so many balancers started at once do not all pick the same
    endpoint first.  An endpoint's cost is its pending requests (with this
    one) times its "peak EWMA" latency: the average of its reply latencies,
    raised at once by a slower reply and lowered slowly, so a slow endpoint
    loses traffic within a few requests even when it has few pending.

    An endpoint whose connect fails is skipped for a backoff period
    (exponential, with jitter, capped) and the request is tried on another
    one: it was never sent.  An endpoint whose requests fail
    L{OUTLIER_STREAK} times in a row with L{RequestTimeout},
    L{ConnectionDropped} or L{ProtocolViolation} is ejected for a backoff
    period too, but never more than half of the endpoints at once for that.
    Once every endpoint is down, requests fail at once with L{ConnectFailed}
    instead of queueing.

    A request lost with its connection is tried again on another endpoint
    only if the caller says it is idempotent (C{request(payload,
    idempotent=True)}), and within the retry budget.

    With C{hedge}, an idempotent request still unanswered after the latency
    that only C{hedge.maxExtraLoad} of the recent requests exceeded gets a
    backup copy on another endpoint, within the retry budget; the first
    answer wins and the other copy is cancelled (CANCEL).
    """

    def __init__(
        self,
        endpoints: Sequence[IStreamClientEndpoint | str | Target],
        reactor: IReactorTime | None = None,
        *,
        backoff: float = 0.5,
        maxBackoff: float = 30.0,
        random: Callable[[], float] = random.random,
        hedge: Hedge | None = None,
        **clientOptions: Any,
    ) -> None:
        """
        @param endpoints: the endpoints (objects, strings, or L{Target}s) of
            the backend.
        @param backoff: seconds an endpoint is skipped after its first failed
            connect; doubled for each further failure in a row (each period
            is randomised between half and all of it), up to C{maxBackoff}.
        @param random: gives numbers in [0, 1), for the choices and the jitter.
        @param hedge: when to send backup copies of idempotent requests
            (L{Hedge}); L{None}: never.
        @param clientOptions: L{SockShareClientFactory}'s keyword options,
            checked now.
        @raise TypeError: if an option is unknown or has the wrong type.
        @raise ValueError: if there is no endpoint, or an option is out of range.
        """
        if not endpoints and endpoints is not _FROM_DNS:
            raise ValueError("a balancer needs at least one endpoint")
        if not 0 < backoff <= maxBackoff:
            raise ValueError(f"need 0 < backoff <= maxBackoff, not {backoff!r} and {maxBackoff!r}")
        if hedge is not None and not isinstance(hedge, Hedge):
            raise TypeError(f"hedge must be a twisted_sockshare.Hedge or None, not {type(hedge).__name__}")
        self._requestTimeout = ClientOptions(**clientOptions).requestTimeout
        self._clock = maybeGlobalReactor(reactor)
        self._delays = None if hedge is None else _Delays(hedge, self._clock.seconds())
        self.hedge = hedge
        self._options = clientOptions
        self._membership = Membership(self._clock, clientOptions, random, backoff, maxBackoff)
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self._budget = _RetryBudget(self._clock)
        # The balancer's own counters.
        self._retries = 0
        self._refusedRetries = 0
        # Backups sent, backups that answered first, and copies the
        # balancer cancelled itself (losers); and the requests with two
        # copies under way now (their endpoints count both as pending).
        self._hedges = self._hedgeWins = self._hedgeCancels = self._doubled = 0
        # The balancer's own counters: requests it failed or refused
        # without any member client seeing them.
        self._own = {"requests": 0, "failures": 0, "rejected": 0, "cancelled": 0, "timeouts": 0}
        self._discovery: DNSDiscovery | None = None
        # Requests made before the first DNS answer.
        self._early: list[_Call] = []
        # Requests made with waitForReady while every member is down.
        self._waiting: list[_Call] = []
        # Once close() was called: its Deferreds, until every client closed.
        self._closed = False
        self._closeWaiters: list[Deferred[None]] | None = None
        if endpoints:
            self.setEndpoints(endpoints)

    @property
    def discoveryFailures(self) -> int:
        """
        How many DNS lookups failed or came back empty (L{fromDNS}).
        """
        return 0 if self._discovery is None else self._discovery.failures

    @classmethod
    def fromDNS(
        cls,
        name: str,
        reactor: IReactorTime | None = None,
        *,
        port: int | None = None,
        resolver: Any = None,
        refreshInterval: float = 30.0,
        **options: Any,
    ) -> SockShareBalancer:
        """
        A balancer whose membership is what C{name} resolves to, looked up
        now, then every C{refreshInterval} seconds, and early after a member
        fails to connect (at most once a second).

        A name like C{_sockshare._tcp.example.test} is an SRV lookup: its
        targets (host names resolved through the same resolver, or IP
        literals), ports, priorities and weights; any other name is an
        A/AAAA lookup, and needs C{port}.  A failed lookup or an empty answer
        keeps the last membership (logged, and counted in
        C{discoveryFailures}): a DNS outage never empties the balancer.
        Requests made before the first answer wait for it, up to the
        client's C{connectTimeout}, then fail with L{ConnectFailed} naming
        the DNS error.

        @param resolver: a C{twisted.names} C{IResolver}; the system's
            (C{/etc/resolv.conf}) if L{None}.
        @param options: the balancer's and its clients' keyword options.
        """
        clock = maybeGlobalReactor(reactor)
        if not refreshInterval > 0:
            raise ValueError(f"refreshInterval must be > 0, not {refreshInterval!r}")
        balancer = cls(_FROM_DNS, clock, **options)
        resolver = resolver if resolver is not None else systemResolver(clock)
        discovery = DNSDiscovery(name, resolver, clock, port, refreshInterval, balancer._discovered)
        balancer._discovery = discovery
        discovery.start()
        return balancer

    def _discovered(self, targets: list[Target]) -> None:
        """
        DNS answered: apply the membership, and send the requests that
        waited for it.
        """
        if self._closed:
            return
        self.setEndpoints(targets)
        for call in list(self._early):
            self._stopWaiting(call)
            self._attempt(call)

    def _waitForMembers(self, call: _Call) -> None:
        timeout = call.timeout or self._options.get("connectTimeout", 10.0) or 10.0

        def expired() -> None:
            self._stopWaiting(call)
            why = self._discovery.lastError if self._discovery is not None else None
            name = self._discovery.name if self._discovery is not None else "the backend"
            self._fail(call, ConnectFailed(f"no endpoint for {name} after {timeout} s: {why or 'no DNS answer yet'}"))

        self._wait(call, self._early, timeout, expired)

    def _wait(self, call: _Call, queue: list[_Call], seconds: float, then: Callable[[], None]) -> None:
        """
        C{call} waits in C{queue}; C{then} runs after C{seconds}.
        """
        call.queue = queue
        queue.append(call)
        call.timer = self._clock.callLater(seconds, then)

    def _stopWaiting(self, call: _Call) -> None:
        """
        C{call} waits no more: leave its queue, stop its timer.
        """
        if call.timer is not None:
            if call.timer.active():
                call.timer.cancel()
            call.timer = None
        if call.queue is not None:
            if call in call.queue:
                call.queue.remove(call)
            call.queue = None

    # -- Membership --------------------------------------------------------

    def setEndpoints(self, endpoints: Iterable[IStreamClientEndpoint | str | Target]) -> None:
        """
        Replace the membership.  A new endpoint takes requests at once; one
        that is no longer listed takes no new request, finishes those it has,
        then closes; one that stays keeps its client, its connection and its
        state.

        @param endpoints: endpoint objects, strings or L{Target}s.
        @raise ValueError: if C{endpoints} is empty (the membership is kept).
        """
        targets = [e if isinstance(e, Target) else Target(e) for e in endpoints]
        if not targets:
            raise ValueError("a balancer needs at least one endpoint")
        self._membership.replace(targets)

    @property
    def endpoints(self) -> list[str]:
        """
        The current members' endpoints, as messages name them.
        """
        return [member.client.endpointDescription for member in self._membership.members]

    # -- Requests ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """
        How many requests were accepted and have not been answered or failed
        yet (those waiting for the first DNS answer included).
        """
        clients = sum(member.client.pending for member in self._membership.everyone())
        return clients - self._doubled + self._waitingCount

    @property
    def _waitingCount(self) -> int:
        """How many requests wait for DNS or for a member to be up."""
        return len(self._early) + len(self._waiting)

    @property
    def reachable(self) -> bool:
        """
        Whether an endpoint is up (not skipped after failures).
        """
        now = self._clock.seconds()
        return any(member.downUntil <= now for member in self._membership.members)

    @property
    def closed(self) -> bool:
        """Whether L{close} has been called."""
        return self._closed

    def request(
        self,
        payload: bytes,
        idempotent: bool = False,
        timeout: float | None = None,
        waitForReady: bool = False,
    ) -> Deferred[bytes]:
        """
        Send C{payload} to an endpoint that is up (see the class
        description, and L{SockShareClientFactory.request}).  Never raises.

        @param idempotent: whether the request may be sent again: its
            endpoint's client sends it again on a fresh connection as
            L{SockShareClientFactory.request} does; if it is still lost with
            its connection (L{ConnectionDropped}), it is tried once more on
            another endpoint, within the balancer's retry budget.  With
            C{hedge}, a slow one also gets a backup copy on another
            endpoint; the first answer (a reply or a L{RemoteError}) wins.
        @param timeout: this request's own timeout in seconds, across its
            attempts (each is given what is left), instead of the clients'
            C{requestTimeout}.
        @param waitForReady: while every endpoint is down, wait for one to
            be up rather than failing at once with L{ConnectFailed}; fail
            only when C{timeout} (or, without one, C{connectTimeout}) runs
            out.
        @return: a Deferred as L{SockShareClientFactory.request}'s; cancelling
            it cancels the attempts under way (their endpoints' clients send
            CANCEL), or the wait for the first DNS answer or for an endpoint.
            It fails at once with L{ClientClosed} after L{close}, with
            C{TypeError} for a payload that is not bytes, and with
            C{TypeError} or C{ValueError} for a bad C{timeout}.
        """
        problem = checkTimeout(timeout)
        if self._closed or not isinstance(payload, bytes) or problem is not None:
            self._own["rejected"] += 1
            if self._closed:
                return fail(ClientClosed("the balancer is closed; make a new one"))
            if problem is not None:
                return fail(problem)
            kind = type(payload).__name__
            return fail(TypeError(f"request() takes bytes, not {kind}; encode text first, e.g. text.encode('utf-8')"))
        now = self._clock.seconds()
        call = _Call(payload, idempotent, self._cancel, timeout, bool(waitForReady), now)
        if waitForReady:
            call.waitUntil = now + (timeout or self._options.get("connectTimeout", 10.0) or 10.0)
        self._budget.request()
        if not self._membership.members:
            self._waitForMembers(call)
        else:
            self._attempt(call)
        return call.result

    def _cancel(self, call: _Call) -> None:
        """
        The caller cancelled C{call}: cancel what it waits for.  Its Deferred
        then fails with C{CancelledError}.
        """
        if call.timer is not None:
            self._stopWaiting(call)
            self._own["requests"] += 1
            self._own["failures"] += 1
            self._own["cancelled"] += 1
        elif call.backup is not None or call.hedgeCall is not None:
            copies = self._settle(call)
            # One copy's cancel is the caller's; the other's is the balancer's.
            self._hedgeCancels += max(len(copies) - 1, 0)
            for copy in copies:
                copy.cancel()
        elif call.attempt is not None:
            call.attempt.cancel()

    def _fail(self, call: _Call, error: BaseException) -> None:
        """
        Fail C{call} with C{error}, which no member client counted.
        """
        self._own["requests"] += 1
        self._own["failures"] += 1
        call.result.errback(Failure(error))

    def _attempt(self, call: _Call) -> None:
        if self._closed:
            self._fail(call, ClientClosed("the balancer was closed before the request could be sent"))
            return
        now = self._clock.seconds()
        left = None if call.deadline is None else call.deadline - now
        if left is not None and left <= 0:
            self._own["timeouts"] += 1
            self._fail(
                call, RequestTimeout(f"no response within timeout={call.timeout} seconds ({'; '.join(call.why)})")
            )
            return
        member = self._membership.firstChoice(now) if not call.tried and now >= self._membership.upFrom else None
        if member is None:
            candidates = self._membership.available(call.tried)
            if not candidates:
                self._noneUp(call, now)
                return
            member = self._membership.choose(candidates, now)
        call.tried.add(member)
        call.started = now
        call.member = member
        if left is None:
            call.attempt = attempt = member.client.request(call.payload, idempotent=call.idempotent)
        else:
            call.attempt = attempt = member.client.request(call.payload, idempotent=call.idempotent, timeout=left)
        attempt.addCallbacks(
            self._succeeded, self._failed, callbackArgs=(member, call, now), errbackArgs=(member, call, now)
        )
        delays = self._delays
        if delays is not None and call.idempotent and not call.hedged and call.attempt is attempt:
            delay = delays.delay()
            if delay is not None and (left is None or delay < left):
                call.hedgeCall = self._clock.callLater(delay, self._sendBackup, call)

    def _noneUp(self, call: _Call, now: float) -> None:
        """
        No member can take C{call} now: wait for one (C{waitForReady}), or
        fail it with L{ConnectFailed}.
        """
        wait = min(m.downUntil for m in self._membership.members) - now
        if call.waitForReady and now < call.waitUntil:
            limit = self._options.get("maxPending", 10_000) * len(self._membership.members)
            if len(self._waiting) >= limit:
                self._fail(call, TooManyPending(f"{limit} requests already wait for an endpoint to be up"))
                return
            self._waitForReady(call, min(max(wait, 0.01), call.waitUntil - now))
            return
        detail = "; ".join(call.why) if call.why else f"next retry in {max(wait, 0):.1f} s"
        self._fail(call, ConnectFailed(f"all {len(self._membership.members)} endpoints are down ({detail})"))

    def _sendBackup(self, call: _Call) -> None:
        """
        C{call}'s first copy is slow: send a backup copy to another member,
        if one is up and the retry budget allows it.
        """
        call.hedgeCall = None
        if self._closed or call.attempt is None:
            return
        now = self._clock.seconds()
        if call.deadline is not None:
            left: float | None = call.deadline - now
        elif self._requestTimeout is not None:
            left = call.started + self._requestTimeout - now  # both copies time out together
        else:
            left = None
        candidates = self._membership.available(call.tried)
        if (left is not None and left <= 0) or not candidates or not self._budget.withdraw():
            return
        member = self._membership.choose(candidates, now)
        call.tried.add(member)
        call.hedged = True
        self._hedges += 1
        self._doubled += 1
        backup = member.client.request(call.payload, idempotent=True, timeout=left)
        call.backup = (backup, member)
        backup.addCallbacks(
            self._succeeded, self._failed, callbackArgs=(member, call, now), errbackArgs=(member, call, now)
        )

    def _settle(self, call: _Call) -> list[Deferred[bytes]]:
        """
        C{call} is decided: no backup will be sent, and the copies still
        under way are detached from it.

        @return: those copies, for the caller to cancel once C{call}'s
            Deferred has fired.
        """
        if call.hedgeCall is not None:
            call.hedgeCall.cancel()
            call.hedgeCall = None
        if call.attempt is not None and call.backup is not None:
            self._doubled -= 1
        copies = []
        if call.attempt is not None:
            copies.append(call.attempt)
            call.attempt = None
        if call.backup is not None:
            copies.append(call.backup[0])
            call.backup = None
        return copies

    def _copyLost(self, call: _Call, member: _Member) -> bool:
        """
        A copy of C{call} (hedging on), sent to C{member}, failed: detach it.

        @return: whether the other copy is still under way.
        """
        if call.hedgeCall is not None:
            call.hedgeCall.cancel()
            call.hedgeCall = None
        if call.backup is None:
            call.attempt = None
            return False
        if call.backup[1] is member:
            call.backup = None
            if call.attempt is None:
                return False
        else:
            call.attempt = None
        self._doubled -= 1
        return True

    def _waitForReady(self, call: _Call, seconds: float) -> None:
        """
        Every member is down: C{call} (made with C{waitForReady}) is tried
        again in C{seconds}, on any member, the ones it tried included.
        """

        def again() -> None:
            self._stopWaiting(call)
            call.tried.clear()
            self._attempt(call)

        self._wait(call, self._waiting, seconds, again)

    def _succeeded(self, reply: bytes, member: _Member, call: _Call, started: float) -> None:
        now = self._clock.seconds()
        member.observe(now - started, now)
        member.failures = member.streak = member.ejections = 0
        if member.refusals:
            member.refusals //= 2
        delays = self._delays
        if delays is None:
            call.attempt = None
            call.result.callback(reply)
            return
        if call.backup is not None and call.backup[1] is member:
            call.backup = None
            self._hedgeWins += 1
            if call.attempt is not None and call.member is not None:
                # The first copy is still under way: it is at least this slow.
                self._doubled -= 1
                elapsed = now - call.started
                delays.record(elapsed, now)
                call.member.observe(elapsed, now)
        else:
            call.attempt = None
            delays.record(now - started, now)
            if call.backup is not None:
                self._doubled -= 1
        self._decided(call, reply)

    def _decided(self, call: _Call, outcome: bytes | Failure) -> None:
        """
        A copy's answer decides C{call} (hedging on): the other copy is
        cancelled first, so that every count is settled when the caller's
        callbacks run.
        """
        losers = self._settle(call)
        call.settled = True
        self._hedgeCancels += len(losers)
        for loser in losers:
            loser.cancel()
        if isinstance(outcome, Failure):
            call.result.errback(outcome)
        else:
            call.result.callback(outcome)

    def _failed(self, reason: Failure, member: _Member, call: _Call, started: float) -> None:
        if call.settled or call.result.called:
            return  # a copy cancelled because the other one answered
        if reason.check(CancelledError):
            call.attempt = None
            call.result.errback(reason)
            return
        if self._delays is None:
            call.attempt = None
            waiting = False
        else:
            # With the other copy under way, this one's failure is not the caller's yet.
            waiting = self._copyLost(call, member)
        if reason.check(ConnectFailed):
            if member.downUntil <= self._clock.seconds():
                # One failed connect fails every request waiting on it: count
                # it once, or a burst of callers would push the backoff to its cap.
                member.failures += 1
                self._membership.skip(member, member.failures, reason.getErrorMessage())
                if self._discovery is not None:
                    self._discovery.connectFailed()
            if not waiting:
                self._retry(call, reason)
            return
        if reason.check(RequestRefused):
            # Not processed: safe to send anywhere, even if not idempotent;
            # once, to another endpoint if one is up, within the budget.
            member.refusals += 1
            if waiting:
                return
            if not call.refused and self._budget.withdraw():
                call.refused = True
                if not self._membership.available(call.tried):
                    call.tried.discard(member)
                self._refusedRetries += 1
                call.why.append(reason.getErrorMessage())
                self._attempt(call)
                return
            call.result.errback(reason)
            return
        if reason.check(RequestTimeout, RemoteError):
            now = self._clock.seconds()
            member.observe(now - started, now)
        if reason.check(*OUTLIER_ERRORS):
            member.streak += 1
            if member.streak >= OUTLIER_STREAK and not member.ejected:
                self._membership.eject(member, reason)
        elif reason.check(RemoteError):
            # It answered: whatever failed before, it is up.
            member.failures = member.streak = member.ejections = 0
        if waiting:
            if reason.check(RequestTimeout, RemoteError):
                # The copies share one deadline; and an error is an answer.
                self._decided(call, reason)
            return
        if call.idempotent and reason.check(ConnectionDropped) and len(call.tried) == 1:
            if self._membership.available(call.tried) and self._budget.withdraw():
                self._retry(call, reason)
                return
        call.result.errback(reason)

    def _retry(self, call: _Call, reason: Failure) -> None:
        # The attempt's failure is the balancer's own, not its caller's.
        self._retries += 1
        call.why.append(reason.getErrorMessage())
        self._attempt(call)

    def stats(self) -> dict[str, int]:
        """
        The sum of every endpoint's counters (L{SockShareClientFactory.stats};
        C{connected} counts connected endpoints, C{peakPending} is the
        largest endpoint's), those of endpoints that left included, with the
        balancer's own retries and backups taken out of C{requests} and
        C{failures} (a retried attempt is not a failure of the caller); plus
        C{retries}, C{ejections} (outliers ejected), C{hedges} (backups
        sent), C{hedgeWins} (backups that answered first), C{discoveryFailures} (failed or
        empty lookups, for L{fromDNS}), C{endpoints} (members) and
        C{endpointsDown} (members skipped now).
        """
        every = [ClientStats.fromDict(m.client.stats()) for m in self._membership.everyone()]
        waiting = self._waitingCount
        own = ClientStats(
            pending=waiting - self._doubled, requests=self._own["requests"] + waiting, failures=self._own["failures"],
            rejected=self._own["rejected"], cancelled=self._own["cancelled"], timeouts=self._own["timeouts"],
        )  # fmt: skip
        totals = ClientStats.total([self._membership.departed, own, *every]).asDict()
        # Retries and backups are the balancer's attempts, not its callers'
        # requests; a request whose two copies are settled has one failed
        # (or cancelled) copy that is not its caller's failure.
        extra = self._retries + self._refusedRetries + self._hedges
        totals["requests"] -= extra
        totals["failures"] -= extra - self._doubled
        totals["cancelled"] -= self._hedgeCancels
        totals["refusedRetried"] += self._refusedRetries
        now = self._clock.seconds()
        totals["retries"] += self._retries
        totals["ejections"] = self._membership.ejections
        totals["hedges"] = self._hedges
        totals["hedgeWins"] = self._hedgeWins
        totals["discoveryFailures"] = self.discoveryFailures
        totals["endpoints"] = len(self._membership.members)
        totals["endpointsDown"] = sum(member.downUntil > now for member in self._membership.members)
        return totals

    def endpointClients(self) -> dict[str, SockShareClientFactory]:
        """
        Each endpoint's client, named as in L{endpointStats}.
        """
        out: dict[str, SockShareClientFactory] = {}
        for index, member in enumerate(self._membership.members):
            name = member.client.endpointDescription
            out[f"{name} #{index}" if name in out else name] = member.client
        return out

    def endpointStats(self) -> dict[str, dict[str, int]]:
        """
        Each endpoint's counters, plus C{down}: 1 while it is skipped.
        """
        now = self._clock.seconds()
        down = {member.client: member.downUntil > now for member in self._membership.members}
        return {name: {**client.stats(), "down": int(down[client])} for name, client in self.endpointClients().items()}

    def close(self) -> Deferred[None]:
        """
        Close the balancer: new requests fail with L{ClientClosed}, DNS is no
        longer looked up, requests waiting for the first DNS answer fail with
        L{ClientClosed}, and every endpoint's client closes (its pending
        requests get up to C{closeTimeout} seconds).

        @return: a Deferred that fires with L{None} once every client is
            closed.  Calling it again is harmless.
        """
        waiter: Deferred[None] = Deferred()
        if self._closeWaiters is not None:
            self._closeWaiters.append(waiter)
        elif self._closed:
            waiter.callback(None)
        else:
            self._closed = True
            self._closeWaiters = [waiter]
            if self._discovery is not None:
                self._discovery.stop()
            queues = [(self._early, "before DNS answered"), (self._waiting, "while every endpoint was down")]
            for queue, why in queues:
                for call in list(queue):
                    self._stopWaiting(call)
                    self._fail(call, ClientClosed(f"the balancer was closed {why}"))
            members = self._membership.everyone()
            for member in members:
                member.readmit()
            DeferredList([member.client.close() for member in members]).addCallback(self._allClosed)
        return waiter

    def _allClosed(self, result: object) -> None:
        waiters, self._closeWaiters = self._closeWaiters or [], None
        for waiter in waiters:
            waiter.callback(None)


__all__ = ["SockShareBalancer", "Target", "OUTLIER_STREAK"]
