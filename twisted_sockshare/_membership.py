# -*- test-case-name: tests.test_balancer,tests.test_pool -*-
"""
The membership of a balancer (L{twisted_sockshare.balancer.SockShareBalancer}):
its endpoints, each with its own shared client; which of them are up; and
the choice of the endpoint a request goes to.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import SockShareClientFactory
from .stats import ClientStats
from .target import Target

_log = Logger(namespace="twisted_sockshare.pool")

#: How many failures in a row of the kinds that eject an endpoint
#: (C{balancer.OUTLIER_ERRORS}) eject it.
OUTLIER_STREAK = 5
#: How a member's latency average forgets: it decays toward 0 with this
#: mean lifetime in seconds (halved in about 7 s), so an idle member is tried
#: again; and each faster reply moves it by this share of the difference, so
#: a busy member's average follows its typical latency, not its last peak.
LATENCY_DECAY, LATENCY_WEIGHT = 10.0, 1 / 16
#: The cost of a member with requests pending and no reply yet: so one with
#: no latency known is tried, but with one request at a time.
_UNKNOWN_COST = float(2**47)


class _EndpointClient(SockShareClientFactory):
    """
    The client of one endpoint of a balancer: an idempotent request lost
    other than by a graceful close is not sent again here, but by the
    balancer, to another endpoint.
    """

    _retriesAfterReset = False
    _refusalsRetried = False


class _Member:
    """
    One endpoint of a L{SockShareBalancer}.

    @ivar failures: connect failures in a row.
    @ivar streak: outlier failures (L{OUTLIER_ERRORS}) in a row.
    @ivar downUntil: skipped until then.
    @ivar ejected: whether it is skipped as an outlier (not for connects).
    @ivar ejections: times it was ejected since it last answered; the next
        ejection lasts longer for each.
    @ivar refusals: requests it refused (REFUSED) lately, halved by each
        answer: counted as pending when members are compared.
    @ivar readmitCall: ends the ejection, while it is ejected.
    @ivar latency: its "peak EWMA" of reply latencies in seconds (0: none
        yet): a slower reply raises it at once, faster ones lower it
        slowly, and it decays toward 0 with time (L{LATENCY_DECAY}), so an
        idle member is tried again.
    @ivar stamp: when C{latency} was last brought up to date.
    """

    def __init__(self, key: object, client: SockShareClientFactory, priority: int, weight: int) -> None:
        self.key = key
        self.client = client
        self.priority = priority
        self.weight = weight
        self.failures = 0
        self.streak = 0
        self.downUntil = 0.0
        self.ejected = False
        self.ejections = 0
        self.refusals = 0
        self.readmitCall: IDelayedCall | None = None
        self.latency = 0.0
        self.stamp = 0.0

    def observe(self, seconds: float, now: float) -> None:
        """
        Count a reply after C{seconds} in its latency average: a slower one
        raises it at once (the peak), a faster one lowers it by
        L{LATENCY_WEIGHT} of the difference.
        """
        latency = self._decayed(now)
        self.latency = seconds if seconds > latency else latency + (seconds - latency) * LATENCY_WEIGHT

    def _decayed(self, now: float) -> float:
        if now > self.stamp:
            self.latency *= math.exp((self.stamp - now) / LATENCY_DECAY)
            self.stamp = now
        return self.latency

    def cost(self, now: float) -> float:
        """
        What sending it one more request costs: its latency average times
        its requests (pending and lately refused) with this one.
        """
        latency = self._decayed(now)
        load = self.client.pending + self.refusals
        if latency == 0.0:
            return _UNKNOWN_COST * load
        return latency * (load + 1)

    def readmit(self) -> None:
        """
        End its ejection (now, or because it left the balancer).
        """
        self.ejected = False
        if self.readmitCall is not None:
            if self.readmitCall.active():
                self.readmitCall.cancel()
            self.readmitCall = None


def _key(endpoint: object) -> object:
    """
    What identifies an endpoint across membership updates: its string, or
    the endpoint object itself.
    """
    return endpoint if isinstance(endpoint, str) else ("object", id(endpoint))


class Membership:
    """
    The endpoints of a balancer, each a L{_Member} with its own client.

    @ivar members: the current members, in the order listed.
    @ivar retired: members no longer listed whose client is still closing.
    @ivar departed: the counters of the members that left and closed.
    @ivar upFrom: when every member is up again (none skipped after then).
    @ivar ejections: members ejected as outliers, since the balancer was made.
    """

    def __init__(
        self,
        clock: IReactorTime,
        clientOptions: dict[str, Any],
        random: Callable[[], float],
        backoff: float,
        maxBackoff: float,
    ) -> None:
        self._clock = clock
        self._options = clientOptions
        self._random = random
        # Capped exponential; the jitter is applied as a factor in skip.
        self._backoffPolicy = backoffPolicy(backoff, maxBackoff, 2.0, jitter=lambda: 0.0)
        self.members: list[_Member] = []
        self.retired: list[_Member] = []
        self.departed = ClientStats()
        self.ejections = 0
        # The lowest priority's members with their running weights, and when
        # every member is up again: a request's first choice, while they
        # are, costs no scan of the membership.
        self._first: list[_Member] = []
        self._running: list[int] = []
        self.upFrom = 0.0

    def replace(self, targets: Sequence[Target]) -> None:
        """
        Make C{targets} (not empty) the membership: a new endpoint takes
        requests at once; one no longer listed takes no new request,
        finishes those it has, then closes; one that stays keeps its client.
        """
        current = {member.key: member for member in self.members}
        members = []
        for target in targets:
            key = _key(target.endpoint)
            member = current.pop(key, None)
            if member is None:
                client = _EndpointClient(target.endpoint, self._clock, **self._options)
                member = _Member(key, client, target.priority, target.weight)
            else:
                member.priority, member.weight = target.priority, target.weight
            if member not in members:
                members.append(member)
        self.members = members
        priority = min(member.priority for member in members)
        self._first = [member for member in members if member.priority == priority]
        self._running = []
        for member in self._first:
            self._running.append((self._running[-1] if self._running else 0) + member.weight)
        self.upFrom = max(member.downUntil for member in members)
        for member in current.values():
            _log.info("Endpoint {endpoint} left the membership", endpoint=member.client.endpointDescription)
            member.readmit()
            self.retired.append(member)
            member.client.close().addBoth(self._departedFully, member)

    def _departedFully(self, result: object, member: _Member) -> None:
        if member in self.retired:
            self.retired.remove(member)
            self.departed += ClientStats.fromDict(member.client.stats())

    def everyone(self) -> list[_Member]:
        """
        The members, and those that left whose client is still closing.
        """
        return self.members + self.retired

    def available(self, exclude: set[_Member]) -> list[_Member]:
        """
        The members up now and not in C{exclude}.
        """
        now = self._clock.seconds()
        return [m for m in self.members if m.downUntil <= now and m not in exclude and not m.client.closed]

    def _weighted(self, members: list[_Member]) -> _Member:
        point = self._random() * sum(member.weight for member in members)
        for member in members:
            point -= member.weight
            if point < 0:
                return member
        return members[-1]

    def choose(self, candidates: list[_Member], now: float) -> _Member:
        """
        The cheaper per unit of weight (L{_Member.cost}: latency average
        times pending requests) of two members picked at random (weighted) among
        the lowest priority's; the first picked on a tie, so ties break at
        random.
        """
        priority = min(member.priority for member in candidates)
        group = [member for member in candidates if member.priority == priority]
        first = self._weighted(group)
        if len(group) == 1:
            return first
        second = self._weighted([member for member in group if member is not first])
        # Per unit of weight: a member of weight 3 takes three times the
        # requests of one of weight 1.
        if second.cost(now) * first.weight < first.cost(now) * second.weight:
            return second
        return first

    def firstChoice(self, now: float) -> _Member | None:
        """
        L{choose} among the lowest priority's members when every member is
        up, in logarithmic time: the same picks for the same random numbers.

        @return: the member, or L{None} if a pick's client is closed.
        """
        group, running = self._first, self._running
        last = len(group) - 1
        index = min(bisect_right(running, self._random() * running[-1]), last)
        first = group[index]
        if last == 0:
            return None if first.client.closed else first
        # The second among the others: their running weights are those of
        # the group, less the first's weight after it.
        weight = first.weight
        point = self._random() * (running[-1] - weight)
        other = bisect_right(running, point if point < running[index] - weight else point + weight)
        if other > last or other == index:  # rounding at the top end: the last of the others
            other = last if index != last else last - 1
        second = group[other]
        if first.client.closed or second.client.closed:
            return None
        if second.cost(now) * first.weight < first.cost(now) * second.weight:
            return second
        return first

    def skip(self, member: _Member, count: int, why: str) -> None:
        """
        Skip C{member} for a backoff period: the C{count}th in a row.
        """
        period = self._backoffPolicy(count - 1) * (0.5 + 0.5 * self._random())
        member.downUntil = self._clock.seconds() + period
        self.upFrom = max(self.upFrom, member.downUntil)
        _log.warn(
            "Endpoint {endpoint} is skipped for {period:.1f} s: {why}",
            endpoint=member.client.endpointDescription,
            period=period,
            why=why,
        )

    def eject(self, member: _Member, reason: Failure) -> None:
        """
        Eject C{member} as an outlier (its requests failed L{OUTLIER_STREAK}
        times in a row, the last with C{reason}), unless half the members
        are ejected already.
        """
        now = self._clock.seconds()
        ejected = sum(1 for m in self.members if m.ejected and m.downUntil > now)
        if (ejected + 1) * 2 > len(self.members):
            return  # never more than half of the endpoints for this
        member.ejected = True
        member.streak = 0
        member.ejections += 1
        self.ejections += 1
        why = f"{OUTLIER_STREAK} requests in a row failed: {reason.getErrorMessage()}"
        self.skip(member, member.ejections, why)
        member.readmitCall = self._clock.callLater(member.downUntil - now, member.readmit)
