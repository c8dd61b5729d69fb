"""
The server's promise: every REQUEST is answered exactly once, at any
C{maxInFlight}, whatever its handler returns; nothing is left scheduled
after C{connectionLost}; and C{stats()} adds up at every moment.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.wire import (
    CANCEL,
    ERROR,
    FRAGMENT,
    PING,
    REQUEST,
    RESPONSE,
    FrameDecoder,
    Hello,
    encodeFrame,
)

#: The maxInFlight values every check runs at: the smallest, a small one, the default.
IN_FLIGHT = (1, 2, 1_000)


class Later:
    """
    A handler whose Deferreds the test fires.
    """

    def __init__(self) -> None:
        self.held: dict[bytes, Deferred[bytes]] = {}

    def __call__(self, payload: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.held[payload] = d
        return d


async def _coroutine(payload: bytes) -> bytes:
    return payload


def _raises(payload: bytes) -> bytes:
    raise ValueError(payload.decode())


#: Handlers whose answer is there at once, by what they return.
AT_ONCE: dict[str, Any] = {
    "value": lambda payload: payload,
    "succeed": succeed,
    "async def": _coroutine,
    "exception": _raises,
    "failed Deferred": lambda payload: fail(ValueError(payload.decode())),
}


def answers(transport: StringTransport) -> dict[int, list[int]]:
    """
    The kinds of reply written for each request id, in order.
    """
    out: dict[int, list[int]] = {}
    for requestId, kind, _ in FrameDecoder(2**31, {RESPONSE, ERROR, FRAGMENT, PING}).feed(transport.value()):
        if kind in (RESPONSE, ERROR):
            out.setdefault(requestId, []).append(kind)
    return out


def serve(handler: Any, **options: Any) -> tuple[SockShareServerFactory, Any, StringTransport, Clock]:
    clock = Clock()
    factory = SockShareServerFactory(handler, clock=clock, **options)
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    return factory, protocol, transport, clock


def addsUp(stats: dict[str, int]) -> bool:
    return stats["requests"] == stats["responses"] + stats["errors"] + stats["inFlight"] + stats["unanswered"]


class ServerContractTests(SynchronousTestCase):
    def assertEveryRequestAnsweredOnce(self, transport: StringTransport, count: int) -> None:
        replies = answers(transport)
        self.assertEqual(sorted(replies), list(range(count)))
        self.assertEqual({len(kinds) for kinds in replies.values()}, {1})

    def test_answersAtOnceAnyInFlight(self) -> None:
        """Pipelined requests whose handler answers at once are each answered once, at every maxInFlight."""
        for name, handler in AT_ONCE.items():
            for maxInFlight in IN_FLIGHT:
                factory, protocol, transport, clock = serve(handler, maxInFlight=maxInFlight)
                protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(50)))
                self.assertEveryRequestAnsweredOnce(transport, 50)
                stats = factory.stats()
                self.assertTrue(addsUp(stats), (name, maxInFlight, stats))
                self.assertEqual(stats["inFlight"], 0)
                protocol.connectionLost(Failure(ConnectionDone()))
                self.assertEqual(clock.getDelayedCalls(), [], (name, maxInFlight))
        self.flushLoggedErrors(ValueError)

    def test_noRecursionAtTheMark(self) -> None:
        """6,000 pipelined frames at maxInFlight=1 to an async def handler: all 6,000 answered, in a loop."""
        factory, protocol, transport, clock = serve(_coroutine, maxInFlight=1)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"x") for i in range(6000)))
        self.assertEveryRequestAnsweredOnce(transport, 6000)
        self.assertEqual(factory.stats()["responses"], 6000)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_answeredLaterAnyInFlight(self) -> None:
        """Handlers firing later, in any order: each request answered once; reading resumes below the mark."""
        for maxInFlight in IN_FLIGHT:
            later = Later()
            factory, protocol, transport, clock = serve(later, maxInFlight=maxInFlight)
            protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(20)))
            answered = 0
            while later.held:
                self.assertLessEqual(len(later.held), maxInFlight)
                self.assertTrue(addsUp(factory.stats()))
                # The newest first, then the oldest: any order.
                payload = max(later.held) if answered % 2 else min(later.held)
                later.held.pop(payload).callback(payload)
                answered += 1
            self.assertEqual(answered, 20)
            self.assertEveryRequestAnsweredOnce(transport, 20)
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_lostWithRequestsInFlight(self) -> None:
        """Requests whose connection is lost are counted unanswered; a handler ending after it writes nothing."""
        later = Later()
        factory, protocol, transport, clock = serve(later, maxInFlight=2, handlerTimeout=5.0)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(4)))
        self.assertEqual(factory.stats()["inFlight"], 2)
        written = transport.value()
        protocol.connectionLost(Failure(ConnectionDone()))
        stats = factory.stats()
        self.assertEqual((stats["requests"], stats["unanswered"], stats["inFlight"]), (2, 2, 0))
        self.assertTrue(addsUp(stats))
        self.assertEqual(transport.value(), written)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_handlerTimeoutThenAnotherFrame(self) -> None:
        """A handler timeout that lets a waiting frame in leaves one timer, none after connectionLost."""
        later = Later()
        factory, protocol, transport, clock = serve(later, maxInFlight=1, handlerTimeout=5.0)
        protocol.dataReceived(encodeFrame(0, REQUEST, b"a") + encodeFrame(1, REQUEST, b"b"))
        clock.advance(5)
        self.assertEqual(answers(transport), {0: [ERROR]})
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(addsUp(factory.stats()))

    def test_handlerTimeoutsInOrder(self) -> None:
        """Each of several handlers times out at its own deadline, through one timer."""
        later = Later()
        factory, protocol, transport, clock = serve(later, maxInFlight=1, handlerTimeout=5.0)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(3)))
        for expected in range(1, 4):
            clock.advance(5)
            self.assertEqual(len(answers(transport)), expected)
            self.assertLessEqual(len(clock.getDelayedCalls()), 2)  # the handler timer, the frame timer at most
        self.assertEqual(factory.stats()["handlerTimeouts"], 3)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    # A fifth of the profile's examples (tests/__init__.py): fixed in CI, random in a search.
    @settings(max_examples=max(1, settings.default.max_examples // 5))
    @given(
        maxInFlight=st.sampled_from(IN_FLIGHT),
        kinds=st.lists(st.sampled_from(sorted(AT_ONCE) + ["later"]), min_size=1, max_size=30),
    )
    def test_mixedHandlers(self, maxInFlight: int, kinds: list[str]) -> None:
        """Any mix of handler results, at any maxInFlight: every request answered once once the later ones fire."""
        later = Later()

        def handler(payload: bytes) -> Any:
            kind = kinds[int(payload)]
            return later(payload) if kind == "later" else AT_ONCE[kind](payload)

        factory, protocol, transport, clock = serve(handler, maxInFlight=maxInFlight)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(len(kinds))))
        while later.held:
            payload = min(later.held)
            later.held.pop(payload).callback(payload)
        self.assertEveryRequestAnsweredOnce(transport, len(kinds))
        self.assertTrue(addsUp(factory.stats()))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.flushLoggedErrors(ValueError)


class ServerMachine(RuleBasedStateMachine):
    """
    Random interleavings of requests (answered at once, later, or by an
    exception; small, or large: in fragments both ways, to a client that
    takes them), CANCELs, handler completions, paused writes, time passing
    and the connection's loss; each request is answered at most once (a
    request cancelled while partly received never), the counters add up,
    and after the loss nothing is scheduled.
    """

    @initialize(
        maxInFlight=st.sampled_from(IN_FLIGHT), handlerTimeout=st.sampled_from([None, 3.0]), fragments=st.booleans()
    )
    def setUp(self, maxInFlight: int, handlerTimeout: float | None, fragments: bool) -> None:
        self.later = Later()
        self.kinds: dict[bytes, str] = {}

        def handler(payload: bytes) -> Any:
            kind = self.kinds[payload]
            return self.later(payload) if kind == "later" else AT_ONCE[kind](payload)

        self.factory, self.protocol, self.transport, self.clock = serve(
            handler, maxInFlight=maxInFlight, handlerTimeout=handlerTimeout, fragmentSize=1024
        )
        if fragments:
            self.protocol.dataReceived(encodeFrame(0, PING, Hello(fragments=True).encode()))
        self.fragments = fragments
        # Large requests whose first piece was sent (id: the rest), and the
        # ones cancelled then, never answered.
        self.partial: dict[int, bytes] = {}
        self.dropped: set[int] = set()
        self.large: list[int] = []
        # Hypothesis runs many examples in one test: the handlers' exceptions
        # are answered, not logged (trial would count each logged one).
        self.factory.logHandlerFailures = False
        self.nextId = 0
        self.lost = False

    @rule(kind=st.sampled_from(sorted(AT_ONCE) + ["later", "later"]), count=st.integers(1, 4))
    def requests(self, kind: str, count: int) -> None:
        frames = []
        for _ in range(count):
            payload = b"%d" % self.nextId
            self.kinds[payload] = kind
            frames.append(encodeFrame(self.nextId, REQUEST, payload))
            self.nextId += 1
        if not self.lost:
            self.protocol.dataReceived(b"".join(frames))

    @rule(kind=st.sampled_from(sorted(AT_ONCE) + ["later"]))
    def startLarge(self, kind: str) -> None:
        """The first piece of a request in fragments (a large one, whole, to a server not asked to)."""
        if self.lost or len(self.partial) >= self.factory.maxInFlight:
            return
        requestId = self.nextId
        self.nextId += 1
        self.large.append(requestId)
        payload = (b"%d:" % requestId).ljust(2500, b"x")
        self.kinds[payload] = kind
        if not self.fragments:
            self.protocol.dataReceived(encodeFrame(requestId, REQUEST, payload))
            return
        self.partial[requestId] = payload[1024:]
        self.protocol.dataReceived(encodeFrame(requestId, FRAGMENT, payload[:1024]))

    @precondition(lambda self: self.partial and not self.lost)
    @rule(data=st.data())
    def finishLarge(self, data: st.DataObject) -> None:
        if self.partial and not self.lost:
            requestId = data.draw(st.sampled_from(sorted(self.partial)))
            self.sendRest(requestId)

    def sendRest(self, requestId: int) -> None:
        rest = self.partial.pop(requestId)
        self.protocol.dataReceived(
            encodeFrame(requestId, FRAGMENT, rest[:1024]) + encodeFrame(requestId, REQUEST, rest[1024:])
        )

    @rule()
    def turn(self) -> None:
        """The reactor turns: fragments of large responses are written."""
        self.clock.advance(0)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        if self.later.held:
            payload = data.draw(st.sampled_from(sorted(self.later.held)))
            d = self.later.held.pop(payload)
            if not d.called:
                d.callback(payload)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.nextId and not self.lost:
            # Often a large one: partly received, or its response partly sent.
            ids = st.integers(0, self.nextId - 1)
            requestId = data.draw(st.one_of(st.sampled_from(self.large[-2:]), ids) if self.large else ids)
            if self.partial.pop(requestId, None) is not None:
                self.dropped.add(requestId)
            self.protocol.dataReceived(encodeFrame(requestId, CANCEL, b""))

    @rule(paused=st.booleans())
    def writesBlocked(self, paused: bool) -> None:
        if self.lost:
            return
        if paused:
            self.protocol.pauseProducing()
        else:
            self.protocol.resumeProducing()

    @rule(seconds=st.sampled_from([0.5, 3.0]))
    def time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    @invariant()
    def answeredAtMostOnce(self) -> None:
        replies = answers(self.transport)
        assert all(len(kinds) == 1 for kinds in replies.values()), replies

    @invariant()
    def countersAddUp(self) -> None:
        stats = self.factory.stats()
        assert addsUp(stats), stats
        assert stats["inFlight"] <= self.factory.maxInFlight

    def teardown(self) -> None:
        if not self.lost:
            self.protocol.resumeProducing()
            for requestId in sorted(self.partial):
                self.sendRest(requestId)
            while self.later.held:
                payload = min(self.later.held)
                d = self.later.held.pop(payload)
                if not d.called:
                    d.callback(payload)
            self.clock.advance(0)  # the last fragments of large responses
            replies = answers(self.transport)
            expected = sorted(set(range(self.nextId)) - self.dropped)
            assert sorted(replies) == expected, (sorted(replies), expected)
            self.protocol.connectionLost(Failure(ConnectionDone()))
        assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()


# The examples, their number and whether they are random come from the
# Hypothesis profile (tests/__init__.py): fixed in CI, random in a search.
ServerMachine.TestCase.settings = settings(stateful_step_count=30)


class ServerMachineTests(ServerMachine.TestCase):  # type: ignore[misc,valid-type]
    """
    Random interleavings keep the server's promise.
    """

    def test_interleavings(self) -> None:
        """Requests, completions, CANCELs, paused writes, timeouts and the loss, in any order."""
        self.runTest()
