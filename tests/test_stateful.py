"""
Hypothesis drives random interleavings of every event the shared client can
see, and checks its invariants after each step.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.connection import ConnectionState
from twisted_sockshare.wire import CANCEL, ERROR, FRAGMENT, GOAWAY, PING, PONG, REFUSED, RESPONSE, Hello, encodeFrame

from .helpers import Attempt, FakeEndpoint, SmallIds


class SharedClientMachine(RuleBasedStateMachine):
    """
    A client on a fake endpoint and clock, and a record of every Deferred it
    returned.
    """

    @initialize(
        idleTimeout=st.sampled_from([0.0, 1.0, 0.5]),
        requestTimeout=st.sampled_from([None, 3.0]),
        resetOnTimeout=st.sampled_from([None, True, False]),
        maxLifetime=st.sampled_from([None, 2.0]),
        maxOrphans=st.sampled_from([None, 1, 100]),
        pingInterval=st.sampled_from([None, 2.0]),
        maxRequestsPerConnection=st.sampled_from([None, 2]),
        maxRequestId=st.sampled_from([None, 2]),
    )
    def setUp(
        self,
        idleTimeout: float,
        requestTimeout: float | None,
        resetOnTimeout: bool | None,
        maxLifetime: float | None,
        maxOrphans: int | None,
        pingInterval: float | None,
        maxRequestsPerConnection: int | None,
        maxRequestId: int | None,
    ) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.client = SockShareClientFactory(
            self.endpoint,
            self.clock,
            idleTimeout=idleTimeout,
            requestTimeout=requestTimeout,
            resetOnTimeout=resetOnTimeout,
            connectTimeout=2.0,
            maxPending=6,
            maxLifetime=maxLifetime,
            maxOrphans=maxOrphans,
            pingInterval=pingInterval,
            pingTimeout=1.0,
            connectBackoff=lambda failures: 0.5,
            maxRequestsPerConnection=maxRequestsPerConnection,
            codec=None if maxRequestId is None else SmallIds(maxRequestId),
            fragmentSize=1024,
        )
        self.fired: list[list[object]] = []
        self.deferreds: list[Deferred[bytes]] = []
        self.closed: list[object] | None = None

    def track(self, d: Deferred[bytes]) -> None:
        results: list[object] = []
        self.fired.append(results)
        self.deferreds.append(d)
        d.addBoth(results.append)

    def openAttempts(self) -> list[Attempt]:
        return [a for a in self.endpoint.attempts if not a.deferred.called]

    def liveConnections(self) -> list[Attempt]:
        """The connections not lost yet, whatever their state."""
        return [
            a
            for a in self.endpoint.attempts
            if a.protocol is not None and a.protocol.state is not ConnectionState.LOST  # type: ignore[attr-defined]
        ]

    @rule()
    def request(self) -> None:
        self.track(self.client.request(b"payload"))

    @rule(
        idempotent=st.booleans(),
        timeout=st.sampled_from([None, 1.0, 5.0]),
        waitForReady=st.booleans(),
    )
    def requestWithOptions(self, idempotent: bool, timeout: float | None, waitForReady: bool) -> None:
        self.track(self.client.request(b"payload", idempotent=idempotent, timeout=timeout, waitForReady=waitForReady))

    @rule()
    def requestLarge(self) -> None:
        """A request above fragmentSize: in fragments, to a server that takes them."""
        self.track(self.client.request(b"L" * 2500))

    @rule()
    def turn(self) -> None:
        """The reactor turns once: fragments are written."""
        self.clock.advance(0)

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data(), pieces=st.integers(1, 3), last=st.sampled_from([RESPONSE, ERROR, None]))
    def respondInFragments(self, data: st.DataObject, pieces: int, last: int | None) -> None:
        """A reply in fragments, or (last None) only some of its first pieces."""
        connection = data.draw(st.sampled_from(self.liveConnections()))
        sent = connection.sentAnyRequests()
        if not sent:
            return
        requestId, _ = data.draw(st.sampled_from(sent))
        frames = [encodeFrame(requestId, FRAGMENT, b"piece") for _ in range(pieces)]
        if last is not None:
            frames.append(encodeFrame(requestId, last, b"end"))
        connection.protocol.dataReceived(b"".join(frames))  # type: ignore[attr-defined]

    @rule()
    def requestFromCallback(self) -> None:
        d = self.client.request(b"first")
        self.track(d)
        d.addBoth(lambda _: self.track(self.client.request(b"second")))

    @precondition(lambda self: self.openAttempts())
    @rule()
    def connectSucceeds(self) -> None:
        self.openAttempts()[0].succeed()

    @precondition(lambda self: self.openAttempts())
    @rule()
    def connectFails(self) -> None:
        self.openAttempts()[0].fail(ConnectionRefusedError())

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data(), error=st.booleans())
    def respond(self, data: st.DataObject, error: bool) -> None:
        connection = data.draw(st.sampled_from(self.liveConnections()))
        sent = connection.sentAnyRequests()
        if not sent:
            return
        requestId, _ = data.draw(st.sampled_from(sent))
        kind = ERROR if error else RESPONSE
        connection.protocol.dataReceived(encodeFrame(requestId, kind, b"answer"))  # type: ignore[attr-defined]

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def respondAll(self, data: st.DataObject) -> None:
        connection = data.draw(st.sampled_from(self.liveConnections()))
        answered = 0
        # Answering makes room for requests held within an announced limit.
        while answered < len(connection.sentAnyRequests()):
            for requestId, _ in connection.sentAnyRequests()[answered:]:
                answered += 1
                if connection.protocol.state is not ConnectionState.LOST:  # type: ignore[attr-defined]
                    connection.respond(requestId, b"answer")

    @precondition(lambda self: self.liveConnections())
    @rule(
        data=st.data(),
        maxInFlight=st.sampled_from([None, 1, 2]),
        deadlines=st.booleans(),
        refusals=st.booleans(),
        fragments=st.booleans(),
    )
    def hello(
        self, data: st.DataObject, maxInFlight: int | None, deadlines: bool, refusals: bool, fragments: bool
    ) -> None:
        """A server of wire version 3 announces itself (at any moment, as a fuzzer would)."""
        connection = data.draw(st.sampled_from(self.liveConnections()))
        hello = Hello(deadlines=deadlines, refusals=refusals, maxInFlight=maxInFlight, fragments=fragments)
        connection.protocol.dataReceived(encodeFrame(0, PING, hello.encode()))  # type: ignore[attr-defined]

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def speakV2(self, data: st.DataObject) -> None:
        """A server of wire version 2's first frame: its PONG to the client's HELLO."""
        data.draw(st.sampled_from(self.liveConnections())).speakV2()

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def refuse(self, data: st.DataObject) -> None:
        """The server refuses a request: it is sent again once, or fails with RequestRefused."""
        connection = data.draw(st.sampled_from(self.liveConnections()))
        sent = connection.sentAnyRequests()
        if sent:
            requestId, _ = data.draw(st.sampled_from(sent))
            connection.protocol.dataReceived(encodeFrame(requestId, REFUSED, b"busy"))  # type: ignore[attr-defined]

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def goaway(self, data: st.DataObject) -> None:
        """The server sends GOAWAY: the connection takes no new request."""
        connection = data.draw(st.sampled_from(self.liveConnections()))
        connection.protocol.dataReceived(encodeFrame(0, GOAWAY, b"bye"))  # type: ignore[attr-defined]
        assert connection.protocol.state is not ConnectionState.LIVE  # type: ignore[attr-defined]

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data(), token=st.integers(0, 2**32 - 1))
    def ping(self, data: st.DataObject, token: int) -> None:
        """The server sends PING: a usable connection answers PONG with the same token at once."""
        connection = data.draw(st.sampled_from(self.liveConnections()))
        protocol = connection.protocol
        usable = protocol.state in (ConnectionState.LIVE, ConnectionState.RETIRING)  # type: ignore[attr-defined]
        before = connection.sentFrames(PONG)
        protocol.dataReceived(encodeFrame(token, PING, b"tok"))  # type: ignore[attr-defined]
        after = connection.sentFrames(PONG)
        assert after[len(before) :] == ([(token, b"tok")] if usable else []), (before, after, usable)

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def garbage(self, data: st.DataObject) -> None:
        connection = data.draw(st.sampled_from(self.liveConnections()))
        connection.protocol.dataReceived(b"\x00\x00\x00\x01junk")  # type: ignore[attr-defined]

    @precondition(lambda self: self.liveConnections())
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.liveConnections())).drop()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.deferreds)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.deferreds)).cancel()

    @rule()
    def close(self) -> None:
        if self.closed is None:
            self.closed = []
            self.client.close().addBoth(self.closed.append)

    @invariant()
    def firedAtMostOnce(self) -> None:
        for results in self.fired:
            assert len(results) <= 1, results

    @invariant()
    def pendingIsUnfired(self) -> None:
        unfired = sum(1 for results in self.fired if not results)
        assert self.client.pending == unfired, (self.client.pending, unfired)
        s = self.client.stats()
        assert s["requests"] == s["responses"] + s["remoteErrors"] + s["failures"] + s["pending"], s

    @invariant()
    def atMostOneUsableConnection(self) -> None:
        """One LIVE connection at most, and it is the one the client uses."""
        usable = [a for a in self.liveConnections() if a.protocol.state is ConnectionState.LIVE]  # type: ignore[attr-defined]
        assert len(usable) <= 1, usable
        assert self.client.connected == bool(usable), (self.client, usable)
        assert len(self.openAttempts()) <= 1

    @invariant()
    def retiredOnlyWhileBusy(self) -> None:
        """A retiring connection stays open only while requests are on it."""
        for attempt in self.liveConnections():
            protocol = attempt.protocol
            if protocol.state is ConnectionState.RETIRING:  # type: ignore[attr-defined]
                assert protocol.outstanding > 0, protocol  # type: ignore[attr-defined]

    @invariant()
    def openConnectionsCounted(self) -> None:
        """The client knows every connection it was handed until it is lost."""
        handed = [a for a in self.liveConnections() if a.deferred.called]
        assert self.client.openConnections == len(handed), (self.client.openConnections, handed)

    @invariant()
    def cancelsNameSentRequests(self) -> None:
        """Every CANCEL names a request written earlier on its connection, once."""
        for attempt in self.endpoint.attempts:
            if attempt.transport is None:
                continue
            cancels = [requestId for requestId, _ in attempt.sentFrames(CANCEL)]
            # A request cancelled with part of it sent: only its FRAGMENTs were.
            parts = {requestId for requestId, _ in attempt.sentFrames(FRAGMENT)}
            assert set(cancels) <= {requestId for requestId, _ in attempt.sentAnyRequests()} | parts, cancels

    @invariant()
    def fragmentsOfOutstandingRequests(self) -> None:
        """
        Only outstanding requests are being sent in fragments, and only
        replies still waited for are kept in pieces; a connection that is
        not usable sends none.
        """
        for attempt in self.liveConnections():
            protocol = attempt.protocol
            table = protocol._table  # type: ignore[attr-defined]
            outbox = protocol._peer.outbox  # type: ignore[attr-defined]
            if outbox is not None:
                sending = set(outbox._byId)
                assert sending <= set(table), (sending, table)
                assert not sending or protocol.usable, protocol  # type: ignore[attr-defined]
            pieces = protocol._pieces  # type: ignore[attr-defined]
            if pieces is not None:
                assert len(pieces) > 0
                for requestId in pieces._pieces:
                    assert requestId in table, (requestId, table)

    @invariant()
    def heldOnlyWhileFull(self) -> None:
        """
        A connection holds requests (wire v3) only while it is LIVE and has
        as many outstanding as the server's limit (or, before the server's
        first frame, the initial window).
        """
        for attempt in self.liveConnections():
            protocol = attempt.protocol
            waiting = [request for request, _ in protocol._held if not request.called]  # type: ignore[attr-defined]
            if waiting:
                assert protocol.state is ConnectionState.LIVE, protocol  # type: ignore[attr-defined]
                assert protocol.outstanding >= protocol._peer.limit, protocol  # type: ignore[attr-defined]

    @invariant()
    def timersOwned(self) -> None:
        names = [call.func.__name__ for call in self.clock.getDelayedCalls()]
        assert names.count("checkDeadlines") <= 1, names
        assert names.count("_turn") <= len(self.liveConnections()), names
        assert names.count("abandon") == len(self.openAttempts()), names
        idle = names.count("_closeIdle")
        # The idle timer is set when the count falls to zero and is not moved
        # by the requests made before it fires (it checks the count then).
        assert idle == 0 or (idle == 1 and self.client.connected), names
        assert names.count("_closeTimedOut") <= (1 if self.closed is not None and not self.closed else 0), names

    @invariant()
    def nothingLeftAfterClose(self) -> None:
        if self.closed:
            assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()
            assert not self.liveConnections()

    def teardown(self) -> None:
        """
        Close, let every connection end, and check that everything fired.
        """
        if not hasattr(self, "client"):
            return
        self.close()
        for _ in range(10):
            for attempt in self.openAttempts():
                attempt.fail(ConnectionRefusedError())
            for attempt in self.liveConnections():
                attempt.drop()
            self.clock.advance(5)
        assert self.closed == [None], self.closed
        assert all(len(results) == 1 for results in self.fired)
        assert self.client.pending == 0
        assert self.clock.getDelayedCalls() == []


# The examples, their number and whether they are random come from the
# Hypothesis profile (tests/__init__.py): fixed in CI, random in a search.
SharedClientMachine.TestCase.settings = settings(stateful_step_count=50)


class StatefulTests(SharedClientMachine.TestCase):  # type: ignore[misc,valid-type]
    """
    Random interleavings keep every invariant.
    """

    def test_interleavings(self) -> None:
        """Requests, responses, errors, losses, timeouts, cancels and closes in any order."""
        self.runTest()
