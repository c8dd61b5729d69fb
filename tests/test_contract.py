"""
One promise, kept by every implementation of L{ISockShareClient}: the shared
client, the balancer (static members and from DNS), a pool's destination and
the stub.  C{request()} never raises; every Deferred fires exactly once;
C{cancel()} fails that request alone and frees what it held; C{close()} is
bounded and refuses what comes after; options are checked when it is made;
nothing is left scheduled or open afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_sockshare import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    InvalidRequest,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
    SockShareError,
    TooManyPending,
)
from twisted_sockshare._fragments import TURN_BYTES
from twisted_sockshare.interfaces import ISockShareClient
from twisted_sockshare.stats import STAT_KEYS

from .contract import IMPLEMENTATIONS, Backends, RefusingCodec
from .helpers import oneTurn


class Outcomes:
    """
    Every Deferred a test got, and each result it fired with; a second
    firing would be recorded too (Deferreds refuse it, but the record shows
    it).
    """

    def __init__(self) -> None:
        self.results: list[list[object]] = []

    def track(self, d: Deferred[bytes]) -> list[object]:
        results: list[object] = []
        self.results.append(results)

        def record(result: object) -> None:
            results.append(result)

        d.addBoth(record)
        return results

    def allFiredOnce(self) -> bool:
        return all(len(results) == 1 for results in self.results)


def failedWith(results: list[object], kind: type[BaseException]) -> bool:
    return len(results) == 1 and isinstance(results[0], Failure) and results[0].check(kind) is not None


class ContractMixin:
    """
    The checks; each subclass names one implementation.
    """

    make: Callable[..., Any]
    endpoints: int
    throughReactor: bool

    assertEqual: Callable[..., None]
    assertTrue: Callable[..., None]
    assertFalse: Callable[..., None]
    assertIn: Callable[..., None]
    assertRaises: Callable[..., Any]
    addCleanup: Callable[..., None]
    flushLoggedErrors: Callable[..., Any]

    def setUp(self) -> None:
        self.backends = Backends()
        self.reactor = self.backends.reactor
        self.handler = self.backends.handler
        self.outcomes = Outcomes()

    def client(self, **options: Any) -> Any:
        options.setdefault("idleTimeout", 1.0)
        return type(self).make(self.backends, **options)

    def openTransports(self, client: Any) -> int:
        if self.throughReactor:
            return len(self.reactor.openLinks)
        return client.openConnections  # the stub's own in-memory link

    def assertNothingLeft(self, client: Any) -> None:
        """
        Close C{client}, let the close finish, and check that nothing is
        pending, scheduled or open, and that every Deferred fired once.
        """
        closed = self.outcomes.track(client.close())
        self.reactor.advance(60)
        self.assertEqual(len(closed), 1)
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.openTransports(client), 0)
        self.assertTrue(self.outcomes.allFiredOnce(), self.outcomes.results)

    def serverCloses(self, client: Any, clean: bool = True) -> None:
        """
        The backends close every open connection, cleanly or with a reset,
        leaving the requests on them unanswered.
        """
        if not self.throughReactor:
            client.disconnect(clean)
            return
        for link in self.reactor.openLinks:
            link.closeFromServer(clean)

    # -- The checks -----------------------------------------------------------

    def test_providesTheInterface(self) -> None:
        """It provides ISockShareClient, and its stats() has the client's keys."""
        client = self.client()
        self.assertTrue(verifyObject(ISockShareClient, client))
        self.assertEqual([key for key in STAT_KEYS if key in client.stats()], list(STAT_KEYS))

    def test_neverRaises(self) -> None:
        """request() returns a failed Deferred for any bad argument, before and after close()."""
        client = self.client(maxPayload=100)
        for argument in [None, "text", 7, object(), bytearray(b"x"), b"x" * 101]:
            results = self.outcomes.track(client.request(argument))
            self.assertTrue(failedWith(results, TypeError) or failedWith(results, PayloadTooLarge), results)
        client.close()
        for argument in [b"echo", None]:
            results = self.outcomes.track(client.request(argument))
            self.assertTrue(failedWith(results, ClientClosed) or failedWith(results, TypeError), results)
        self.assertNothingLeft(client)

    def test_everyKindOfAnswer(self) -> None:
        """A reply now, from a coroutine, later, or a handler's error: each fires once, with what it should."""
        client = self.client()
        echo = self.outcomes.track(client.request(b"echo 1"))
        coroutine = self.outcomes.track(client.request(b"async 2"))
        error = self.outcomes.track(client.request(b"raise 3"))
        later = self.outcomes.track(client.request(b"hold 4"))
        self.assertEqual((echo, coroutine, later), ([b"echo 1"], [b"async 2"], []))
        self.assertTrue(failedWith(error, RemoteError))
        self.assertIn("ValueError: the handler refused raise 3", str(error[0].value))  # type: ignore[union-attr]
        self.assertEqual(client.pending, 1)
        self.handler.answer(b"hold 4")
        self.assertEqual(later, [b"hold 4"])
        self.flushLoggedErrors(ValueError)  # the real servers log the handler's error
        self.assertEqual(client.pending, 0)
        stats = client.stats()
        self.assertEqual((stats["requests"], stats["responses"], stats["remoteErrors"]), (4, 3, 1))
        self.assertNothingLeft(client)

    def test_cancelFreesWhatItHeld(self) -> None:
        """cancel() fails that request alone, frees its pending count, and tells the backend (CANCEL)."""
        client = self.client(requestTimeout=5.0)
        first = self.outcomes.track(client.request(b"hold 1"))
        second = client.request(b"hold 2")
        secondResults = self.outcomes.track(second)
        self.assertEqual(client.pending, 2)
        second.cancel()
        self.assertTrue(failedWith(secondResults, CancelledError))
        self.assertEqual(client.pending, 1)
        self.assertEqual(self.handler.cancelled, [b"hold 2"])
        self.assertEqual(client.stats()["cancelled"], 1)
        self.handler.answer(b"hold 1")
        self.assertEqual(first, [b"hold 1"])
        self.assertNothingLeft(client)

    def test_timeoutFailsOneAndCancels(self) -> None:
        """requestTimeout fails the late request alone and cancels its handler; the others go on."""
        client = self.client(requestTimeout=5.0)
        late = self.outcomes.track(client.request(b"hold late"))
        self.reactor.advance(3)
        onTime = self.outcomes.track(client.request(b"hold on time"))
        self.reactor.advance(2)
        self.assertTrue(failedWith(late, RequestTimeout))
        self.assertEqual(self.handler.cancelled, [b"hold late"])
        self.assertEqual(onTime, [])
        self.handler.answer(b"hold on time")
        self.assertEqual(onTime, [b"hold on time"])
        self.assertNothingLeft(client)

    def test_closeIsBounded(self) -> None:
        """close() lets pending requests run closeTimeout seconds, then fails them with ClientClosed and fires."""
        client = self.client(closeTimeout=3.0, requestTimeout=None)
        stuck = self.outcomes.track(client.request(b"hold stuck"))
        closed = self.outcomes.track(client.close())
        self.reactor.advance(2.9)
        self.assertEqual((stuck, closed), ([], []))
        self.reactor.advance(0.1)
        self.assertTrue(failedWith(stuck, ClientClosed))
        self.assertEqual(closed, [None])
        after = self.outcomes.track(client.request(b"echo after"))
        self.assertTrue(failedWith(after, ClientClosed))
        self.assertEqual(self.outcomes.track(client.close()), [None])
        self.assertNothingLeft(client)

    def test_closeLetsPendingFinish(self) -> None:
        """A request pending at close() is still answered; close() fires after it."""
        client = self.client()
        pending = self.outcomes.track(client.request(b"hold 1"))
        closed = self.outcomes.track(client.close())
        self.assertEqual(closed, [])
        self.handler.answer(b"hold 1")
        self.assertEqual((pending, closed), ([b"hold 1"], [None]))
        self.assertNothingLeft(client)

    def test_optionsCheckedWhenMade(self) -> None:
        """A misspelt or out-of-range option is refused when it is made, naming the option."""
        with self.assertRaises(TypeError) as typo:
            self.client(requestTimout=5)
        self.assertIn("requestTimout", str(typo.exception))
        with self.assertRaises(ValueError) as negative:
            self.client(idleTimeout=-1)
        self.assertIn("idleTimeout", str(negative.exception))
        with self.assertRaises(TypeError) as wrongType:
            self.client(maxPending="many")
        self.assertIn("maxPending", str(wrongType.exception))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_maxPendingEnforced(self) -> None:
        """maxPending requests may be pending per endpoint; one more fails at once with TooManyPending."""
        client = self.client(maxPending=2)
        allowed = [self.outcomes.track(client.request(b"hold %d" % i)) for i in range(2 * self.endpoints)]
        refused = self.outcomes.track(client.request(b"hold over"))
        self.assertTrue(failedWith(refused, TooManyPending), refused)
        self.assertEqual(client.pending, 2 * self.endpoints)
        for i in range(2 * self.endpoints):
            self.handler.answer(b"hold %d" % i)
        self.assertEqual(allowed, [[b"hold %d" % i] for i in range(2 * self.endpoints)])
        self.assertNothingLeft(client)

    def test_codecRefusalFailsThatRequestAlone(self) -> None:
        """A codec that refuses a payload, or raises anything, fails that request alone; the others go on."""
        client = self.client(codec=RefusingCodec())
        self.assertEqual(self.outcomes.track(client.request(b"echo first")), [b"echo first"])
        refused = self.outcomes.track(client.request(b"refuse me"))
        exploded = self.outcomes.track(client.request(b"explode"))
        self.assertTrue(failedWith(refused, InvalidRequest), refused)
        self.assertTrue(failedWith(exploded, InvalidRequest), exploded)
        self.assertIn("RuntimeError: the codec broke", str(exploded[0].value))  # type: ignore[union-attr]
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.outcomes.track(client.request(b"echo next")), [b"echo next"])
        self.assertNothingLeft(client)

    def test_errorsAreOurs(self) -> None:
        """Every failure is a SockShareError, CancelledError or (for a non-bytes payload) TypeError."""
        client = self.client(requestTimeout=1.0, maxPending=1)
        results = [
            self.outcomes.track(client.request(payload)) for payload in [b"hold a", b"hold b", b"raise", b"hold c"]
        ]
        self.reactor.advance(2)
        client.close()
        self.reactor.advance(60)
        self.flushLoggedErrors(ValueError)
        for outcome in results:
            self.assertEqual(len(outcome), 1)
            self.assertTrue(isinstance(outcome[0], Failure) and outcome[0].check(SockShareError), outcome)
        self.assertNothingLeft(client)

    # -- A request's own options: timeout, idempotent, waitForReady ---------------

    def test_ownTimeout(self) -> None:
        """
        timeout= overrides requestTimeout for that request alone, shorter or
        longer; it fails alone, its handler cancelled; a bad one is refused at once.
        """
        client = self.client(requestTimeout=10.0)
        short = self.outcomes.track(client.request(b"hold short", timeout=2))
        shared = self.outcomes.track(client.request(b"hold shared"))
        long = self.outcomes.track(client.request(b"hold long", timeout=25.5))
        self.reactor.advance(2)
        self.assertTrue(failedWith(short, RequestTimeout), short)
        self.assertIn("timeout=2", str(short[0].value))  # type: ignore[union-attr]
        self.assertEqual(self.handler.cancelled, [b"hold short"])
        self.assertEqual((shared, long), ([], []))
        self.reactor.advance(8)
        self.assertTrue(failedWith(shared, RequestTimeout), shared)
        self.assertEqual(long, [])
        self.reactor.advance(15)
        self.assertEqual(long, [])
        self.reactor.advance(0.5)
        self.assertTrue(failedWith(long, RequestTimeout), long)
        self.assertEqual(client.stats()["timeouts"], 3)
        for bad, kind in [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("1", TypeError)]:
            refused = self.outcomes.track(client.request(b"echo", timeout=bad))
            self.assertTrue(failedWith(refused, kind), (bad, refused))
        answered = self.outcomes.track(client.request(b"hold on time", timeout=5))
        self.handler.answer(b"hold on time")
        self.assertEqual(answered, [b"hold on time"])
        self.assertNothingLeft(client)

    def test_idempotentSentAgainAfterClose(self) -> None:
        """
        The server closes the connection with requests unanswered: the
        idempotent one is sent again on a fresh connection and answered, the
        other fails with ConnectionDropped; the resend is counted in
        retries, never as a failure.
        """
        client = self.client(requestTimeout=None)
        self.assertEqual(self.outcomes.track(client.request(b"echo first")), [b"echo first"])
        again = self.outcomes.track(client.request(b"hold again", idempotent=True))
        lost = self.outcomes.track(client.request(b"hold lost"))
        self.serverCloses(client)
        self.assertTrue(failedWith(lost, ConnectionDropped), lost)
        self.assertEqual(again, [])
        self.assertEqual(self.handler.seen.count(b"hold again"), 2)
        self.handler.answer(b"hold again")
        self.assertEqual(again, [b"hold again"])
        stats = client.stats()
        self.assertEqual((stats["retries"], stats["failures"], stats["responses"]), (1, 1, 2))
        self.assertNothingLeft(client)

    def test_idempotentAfterResetOnce(self) -> None:
        """
        After a reset (the server may have crashed on it) an idempotent
        request is sent again once; a second reset fails it.
        """
        client = self.client(requestTimeout=None)
        again = self.outcomes.track(client.request(b"hold again", idempotent=True))
        self.serverCloses(client, clean=False)
        self.assertEqual((again, self.handler.seen.count(b"hold again")), ([], 2))
        self.serverCloses(client, clean=False)
        self.assertTrue(failedWith(again, ConnectionDropped), again)
        self.assertEqual(self.handler.seen.count(b"hold again"), 2)
        self.assertEqual(client.stats()["retries"], 1)
        self.assertNothingLeft(client)

    def test_waitForReadyAnswered(self) -> None:
        """With a backend up, waitForReady changes nothing: the request is answered."""
        client = self.client()
        answered = self.outcomes.track(client.request(b"echo ready", waitForReady=True, timeout=5))
        self.assertEqual(answered, [b"echo ready"])
        self.assertNothingLeft(client)

    def test_deadlineReachesTheHandler(self) -> None:
        """
        Wire v3: a request's timeout reaches the backend's handler as its
        deadline (whole milliseconds, rounded up), on a connection's first
        request and on the next ones; a request without one has none.
        """
        client = self.client(requestTimeout=None)
        first = self.outcomes.track(client.request(b"deadline 1", timeout=2.0))
        second = self.outcomes.track(client.request(b"deadline 2", timeout=0.25))
        plain = self.outcomes.track(client.request(b"deadline 3"))
        self.assertEqual((first, second, plain), ([b"2.001"], [b"0.251"], [b"None"]))
        self.assertNothingLeft(client)

    def test_largeMessagesInFragments(self) -> None:
        """
        Wire v3: requests and replies above fragmentSize cross in fragments,
        a turn of the reactor at a time, while a small request made after
        them is answered at once; a request cancelled with part of it sent
        fails alone and never reaches the handler, and one cut by the
        backend's reset fails with ConnectionDropped; every Deferred fires
        once and nothing is left.
        """
        # The backends' default (the stub's server sends whole messages
        # unless told).
        self.backends.serverOptions["fragmentSize"] = 16_384
        client = self.client(fragmentSize=1024, requestTimeout=None)
        self.assertEqual(self.outcomes.track(client.request(b"echo warm")), [b"echo warm"])
        large = [b"echo %d " % i + bytes([65 + i]) * (3 * TURN_BYTES) for i in range(3)]
        answers = [self.outcomes.track(client.request(payload)) for payload in large]
        held = b"hold " + b"h" * (3 * TURN_BYTES)
        cancelled = client.request(held)
        cancelledResults = self.outcomes.track(cancelled)
        small = self.outcomes.track(client.request(b"echo small"))
        self.assertEqual((small, answers[0]), ([b"echo small"], []))
        oneTurn(self.reactor)
        cancelled.cancel()
        self.assertTrue(failedWith(cancelledResults, CancelledError))
        for _ in range(40):
            oneTurn(self.reactor)
        self.assertEqual(answers, [[payload] for payload in large])
        self.assertNotIn(held, self.handler.seen)
        self.assertEqual(client.pending, 0)
        # The backend goes away with a request half sent: it fails alone,
        # once, and nothing of it is left.
        cut = self.outcomes.track(client.request(b"echo cut " + b"c" * (3 * TURN_BYTES)))
        oneTurn(self.reactor)
        self.serverCloses(client, clean=False)
        for _ in range(5):
            oneTurn(self.reactor)
        self.assertTrue(failedWith(cut, ConnectionDropped), cut)
        self.assertNothingLeft(client)

    def test_keepsWithinTheServersLimit(self) -> None:
        """
        Wire v3: against servers that announce maxInFlight=2, no server's
        handlers hold more than 2 requests at once; a request waiting on the
        client's side that is cancelled fires once and never reaches a
        handler; every other one is answered.
        """
        self.backends = Backends(maxInFlight=2)
        self.reactor, self.handler = self.backends.reactor, self.backends.handler
        client = self.client(requestTimeout=None)
        held = [self.outcomes.track(client.request(b"hold %d" % i)) for i in range(8)]
        last = client.request(b"hold last")
        cancelled = self.outcomes.track(last)
        last.cancel()
        self.assertTrue(failedWith(cancelled, CancelledError), cancelled)
        for _ in range(20):
            if not self.handler.held:
                break
            self.assertLessEqual(len(self.handler.held), 2 * self.endpoints)
            for payload in list(self.handler.held):
                self.handler.answer(payload)
        self.assertEqual(held, [[b"hold %d" % i] for i in range(8)])
        self.assertNotIn(b"hold last", self.handler.seen)
        for server in self.backends.servers.values():
            self.assertLessEqual(server.stats()["peakInFlight"], 2)
        self.assertNothingLeft(client)

    def warmUp(self, client: Any) -> None:
        """Enough answered requests for a hedging balancer to know its latencies."""
        for i in range(100):
            self.outcomes.track(client.request(b"echo warm %d" % i, idempotent=True))

    def copiesOfSlowRequests(self, client: Any) -> int:
        """How many copies of a slow idempotent request reach the backends: two if it hedges."""
        return 2 if getattr(client, "hedge", None) is not None else 1

    def test_hedgedRequestAnsweredOnce(self) -> None:
        """
        A slow idempotent request (and, hedging, its backup on the other
        endpoint) fires once, with the first answer; the other copy is
        cancelled at its backend and counted nowhere.
        """
        client = self.client(requestTimeout=5.0)
        self.warmUp(client)
        slow = self.outcomes.track(client.request(b"hold slow", idempotent=True))
        self.reactor.advance(0.1)
        copies = self.handler.seen.count(b"hold slow")
        self.assertEqual(copies, self.copiesOfSlowRequests(client))
        if copies == 2:
            self.handler.answerCopy(b"hold slow")
            self.assertEqual(slow, [b"hold slow (copy)"])
        else:
            self.handler.answer(b"hold slow")
            self.assertEqual(slow, [b"hold slow"])
        self.assertEqual(self.handler.cancelled, [b"hold slow"] * (copies - 1))
        self.assertEqual(client.pending, 0)
        stats = client.stats()
        self.assertEqual(
            (stats["requests"], stats["responses"], stats["failures"], stats["cancelled"]), (101, 101, 0, 0)
        )
        self.assertNothingLeft(client)

    def test_cancelCancelsEveryCopy(self) -> None:
        """Cancelling a hedged request cancels every copy at its backend; it fails once, counted once."""
        client = self.client(requestTimeout=5.0)
        self.warmUp(client)
        request = client.request(b"hold cancelled", idempotent=True)
        cancelled = self.outcomes.track(request)
        self.reactor.advance(0.1)
        copies = self.handler.seen.count(b"hold cancelled")
        self.assertEqual(copies, self.copiesOfSlowRequests(client))
        request.cancel()
        self.assertTrue(failedWith(cancelled, CancelledError), cancelled)
        self.assertEqual(self.handler.cancelled, [b"hold cancelled"] * copies)
        stats = client.stats()
        self.assertEqual((stats["requests"], stats["failures"], stats["cancelled"], client.pending), (101, 1, 1, 0))
        self.assertNothingLeft(client)

    def test_closeWithCopiesUnderWay(self) -> None:
        """close() lets a hedged request finish: the first answer wins, the other copy is cancelled."""
        client = self.client(requestTimeout=5.0, closeTimeout=10.0)
        self.warmUp(client)
        slow = self.outcomes.track(client.request(b"hold closing", idempotent=True))
        self.reactor.advance(0.1)
        copies = self.handler.seen.count(b"hold closing")
        closed = self.outcomes.track(client.close())
        self.assertEqual((slow, closed), ([], []))
        self.handler.answer(b"hold closing")
        self.assertEqual(slow, [b"hold closing"])
        self.assertEqual(self.handler.cancelled, [b"hold closing"] * (copies - 1))
        self.reactor.advance(1)
        self.assertEqual(closed, [None])
        self.assertNothingLeft(client)


class QueuedContractMixin(ContractMixin):
    """
    The checks about requests made while a connection is being made, for
    the implementations whose connects go through the reactor (the stub's
    connect is done at once).
    """

    reactor: Any

    def test_codecRefusalWhileConnecting(self) -> None:
        """Made while connecting: a refused request fails alone, and the ones queued after it are sent."""
        self.reactor.holding = True
        client = self.client(codec=RefusingCodec(), requestTimeout=None)
        before = self.outcomes.track(client.request(b"echo before"))
        refused = self.outcomes.track(client.request(b"refuse me"))
        exploded = self.outcomes.track(client.request(b"explode"))
        after = self.outcomes.track(client.request(b"echo after"))
        self.reactor.holding = False
        self.reactor.release()
        self.assertTrue(failedWith(refused, InvalidRequest), refused)
        self.assertTrue(failedWith(exploded, InvalidRequest), exploded)
        self.assertEqual((before, after), ([b"echo before"], [b"echo after"]))
        self.assertEqual(client.pending, 0)
        self.assertNothingLeft(client)

    def test_cancelWhileConnecting(self) -> None:
        """A request cancelled while its connection is made is never sent."""
        self.reactor.holding = True
        client = self.client()
        cancelled = client.request(b"echo cancelled")
        results = self.outcomes.track(cancelled)
        kept = self.outcomes.track(client.request(b"echo kept"))
        cancelled.cancel()
        self.assertTrue(failedWith(results, CancelledError))
        self.reactor.holding = False
        self.reactor.release()
        self.assertEqual(kept, [b"echo kept"])
        self.assertEqual(self.handler.seen, [b"echo kept"])
        self.assertNothingLeft(client)

    def test_closeWhileConnecting(self) -> None:
        """close() while a connection is being made is bounded too."""
        self.reactor.holding = True
        client = self.client(closeTimeout=2.0, connectTimeout=30.0)
        waiting = self.outcomes.track(client.request(b"echo waiting"))
        closed = self.outcomes.track(client.close())
        self.reactor.advance(2)
        self.assertEqual(len(closed), 1)
        self.assertEqual(len(waiting), 1)
        self.reactor.holding = False
        self.reactor.release()
        self.assertNothingLeft(client)


class DownContractMixin(QueuedContractMixin):
    """
    The checks about backends that are down, for the implementations that
    reach them through the reactor.
    """

    def down(self) -> None:
        self.reactor.servers.clear()

    def up(self) -> None:
        self.reactor.servers.update(self.backends.servers)

    def test_waitForReadyWaitsThroughBackoff(self) -> None:
        """
        Every backend down: a request fails at once with ConnectFailed, but
        one made with waitForReady waits, and is answered once a backend is
        up again; without one coming up it fails when its timeout runs out.
        """
        self.down()
        client = self.client(requestTimeout=None)
        fast = self.outcomes.track(client.request(b"echo fast"))
        self.assertTrue(failedWith(fast, ConnectFailed), fast)
        waiting = self.outcomes.track(client.request(b"echo waiting", waitForReady=True, timeout=30))
        givesUp = self.outcomes.track(client.request(b"echo gives up", waitForReady=True, timeout=1))
        self.reactor.advance(1)
        self.assertTrue(failedWith(givesUp, RequestTimeout), givesUp)
        self.assertEqual(waiting, [])
        self.assertEqual(client.pending, 1)
        self.reactor.advance(5)
        self.assertEqual(waiting, [])
        self.up()
        for _ in range(100):
            self.reactor.advance(0.1)
        self.assertEqual(waiting, [b"echo waiting"])
        self.assertNothingLeft(client)

    def test_waitForReadyBoundedByConnectTimeout(self) -> None:
        """Without a timeout of its own, waitForReady waits connectTimeout at most, then fails with ConnectFailed."""
        self.down()
        client = self.client(connectTimeout=3.0, requestTimeout=None)
        self.outcomes.track(client.request(b"echo fast"))
        waiting = self.outcomes.track(client.request(b"echo waiting", waitForReady=True))
        self.reactor.advance(2.9)
        self.assertEqual(waiting, [])
        self.reactor.advance(0.2)
        self.assertTrue(failedWith(waiting, ConnectFailed), waiting)
        self.assertNothingLeft(client)

    def test_waitForReadyCountsAndCloses(self) -> None:
        """Waiting requests count toward maxPending; close() fails them with ClientClosed at once."""
        self.down()
        client = self.client(maxPending=2, requestTimeout=None)
        self.outcomes.track(client.request(b"echo fast"))
        waiting = [
            self.outcomes.track(client.request(b"echo %d" % i, waitForReady=True, timeout=60))
            for i in range(2 * self.endpoints)
        ]
        over = self.outcomes.track(client.request(b"echo over", waitForReady=True, timeout=60))
        self.assertTrue(failedWith(over, TooManyPending), over)
        self.assertEqual(client.pending, 2 * self.endpoints)
        self.assertEqual(self.outcomes.track(client.close()), [None])
        for each in waiting:
            self.assertTrue(failedWith(each, ClientClosed), each)
        self.assertNothingLeft(client)


def _contractCase(name: str, make: Callable[..., Any], endpoints: int, throughReactor: bool) -> type:
    mixin = DownContractMixin if throughReactor else ContractMixin
    attributes = {
        "make": staticmethod(make),
        "endpoints": endpoints,
        "throughReactor": throughReactor,
        "__doc__": f"The contract, for the {name}.",
        "__module__": __name__,
    }
    return type(f"{name[0].upper()}{name[1:]}ContractTests", (mixin, SynchronousTestCase), attributes)


for _implementation in IMPLEMENTATIONS:
    _case = _contractCase(*_implementation)
    globals()[_case.__name__] = _case
del _implementation, _case
