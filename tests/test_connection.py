"""
The connection on its own, with a recording owner in place of the client:
its states, its table, reply matching, and what it tells its owner, in
which order.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import RequestTimeout, SockShareClientFactory
from twisted_sockshare._request import _Request
from twisted_sockshare.codecs import Delimited
from twisted_sockshare.connection import ConnectionState, SockShareClientProtocol
from twisted_sockshare.errors import ConnectionDropped, ProtocolViolation
from twisted_sockshare.options import ClientOptions
from twisted_sockshare.wire import CANCEL, ERROR, PING, PONG, RESPONSE, encodeFrame

from .helpers import FakeEndpoint, SmallIds, StrictTransport


class RecordingOwner:
    """
    Records, in order, everything a connection tells its client.
    """

    endpointDescription = "tcp:backend:9000"

    def __init__(self) -> None:
        self.events: list[tuple] = []

    noisy = False

    def requestAnswered(self, request: _Request, kind: int, payload: bytes, now: float) -> None:
        self.events.append(("settle", request, kind, payload))

    def requestFailed(self, request: _Request, error: BaseException) -> None:
        self.events.append(("fail", request, type(error)))

    def requestLost(self, request: _Request, error: BaseException, graceful: bool) -> None:
        self.events.append(("lost", request, type(error), graceful))

    def connectionFull(self, connection: SockShareClientProtocol, why: str) -> None:
        self.events.append(("full", why))
        connection.retire()

    def lateReply(self) -> None:
        self.events.append(("late",))

    def connectionUnusable(self, connection: SockShareClientProtocol) -> None:
        self.events.append(("unusable", connection.state))

    def connectionGone(self, connection: SockShareClientProtocol, tlsFailed: bool) -> None:
        self.events.append(("gone", tlsFailed))


class ConnectionTests(SynchronousTestCase):
    def connect(self, **options: object) -> tuple[SockShareClientProtocol, StrictTransport]:
        self.owner = RecordingOwner()
        self.clock = Clock()
        connection = SockShareClientProtocol(self.owner, ClientOptions(**options), self.clock)  # type: ignore[arg-type]
        transport = StrictTransport()
        connection.makeConnection(transport)
        return connection, transport

    def request(self) -> _Request:
        request = _Request()
        request.sentAt = 0.0
        return request

    def test_repliesMatchedAndSettled(self) -> None:
        """Replies go to their requests by id, in the order they arrive; unknown ids are late."""
        connection, transport = self.connect()
        first, second = self.request(), self.request()
        connection.send(first, b"a")
        connection.send(second, b"b")
        self.assertEqual((first.requestId, second.requestId), (0, 1))
        self.assertEqual(connection.outstanding, 2)
        connection.dataReceived(
            encodeFrame(1, RESPONSE, b"B") + encodeFrame(0, ERROR, b"E") + encodeFrame(7, RESPONSE, b"")
        )
        self.assertEqual(
            self.owner.events,
            [("settle", second, RESPONSE, b"B"), ("settle", first, ERROR, b"E"), ("late",)],
        )
        self.assertEqual(connection.outstanding, 0)
        self.assertIs(connection.state, ConnectionState.LIVE)

    def test_retireThenQuiet(self) -> None:
        """Retiring: the owner is told at once; the connection closes itself after its last reply."""
        connection, transport = self.connect()
        request = self.request()
        connection.send(request, b"a")
        connection.retire()
        self.assertEqual(self.owner.events, [("unusable", ConnectionState.RETIRING)])
        self.assertFalse(transport.disconnecting)
        connection.dataReceived(encodeFrame(0, RESPONSE, b"A"))
        self.assertIs(connection.state, ConnectionState.CLOSING)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([call.func.__name__ for call in self.clock.getDelayedCalls()], ["_abortClosing"])
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertIs(connection.state, ConnectionState.LOST)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.owner.events[-1], ("gone", False))

    def test_retireIdleClosesAtOnce(self) -> None:
        """A connection retired with nothing on it closes at once."""
        connection, transport = self.connect()
        connection.retire()
        self.assertIs(connection.state, ConnectionState.CLOSING)
        self.assertTrue(transport.disconnecting)

    def test_violationFailsAllOnceAfterTellingOwner(self) -> None:
        """A broken frame: the owner hears 'unusable' first, then each request fails once; more junk does nothing."""
        connection, transport = self.connect()
        requests = [self.request() for _ in range(3)]
        for request in requests:
            connection.send(request, b"x")
        connection.dataReceived(b"\x00\x00\x00\x01junk")
        connection.dataReceived(b"\x00\x00\x00\x01junk")
        self.assertTrue(transport.aborted)
        self.assertEqual(self.owner.events[0], ("unusable", ConnectionState.CLOSING))
        self.assertEqual(self.owner.events[1:], [("fail", r, ProtocolViolation) for r in requests])
        self.assertEqual(connection.outstanding, 0)

    def test_lostFailsOutstandingAfterGone(self) -> None:
        """
        connectionLost: the owner forgets the connection first, then is told
        each request was lost (not gracefully: nothing came before the reset).
        """
        connection, transport = self.connect()
        request = self.request()
        connection.send(request, b"x")
        connection.connectionLost(Failure(ConnectionLost("peer vanished")))
        self.assertEqual(self.owner.events, [("gone", False), ("lost", request, ConnectionDropped, False)])

    def test_lostGracefully(self) -> None:
        """
        A clean close after the server sent something is graceful (it meant
        to close); a clean close before any byte, or a reset after some, is not.
        """
        for received, reason, graceful in [
            (True, ConnectionDone("closed"), True),
            (False, ConnectionDone("closed"), False),
            (True, ConnectionLost("reset"), False),
        ]:
            connection, transport = self.connect()
            answered, request = self.request(), self.request()
            connection.send(answered, b"x")
            connection.send(request, b"y")
            if received:
                connection.dataReceived(encodeFrame(answered.requestId, RESPONSE, b"ok"))
            connection.connectionLost(Failure(reason))
            self.assertEqual(self.owner.events[-1], ("lost", request, ConnectionDropped, graceful))

    def test_idSpaceWrapsSkippingHeld(self) -> None:
        """
        With a codec's maxRequestId, ids wrap at it and skip the ids still
        held (in flight or orphaned); once every id is held the connection
        is full, and no id is ever given twice.
        """
        connection, transport = self.connect(codec=SmallIds(3))
        first = [self.request() for _ in range(3)]
        for request in first:
            connection.send(request, b"x")
        self.assertEqual([r.requestId for r in first], [0, 1, 2])
        connection.dataReceived(encodeFrame(1, RESPONSE, b"ok"))
        connection.forget(first[2])  # orphaned: id 2 stays held
        again = self.request()
        connection.send(again, b"x")
        self.assertEqual(again.requestId, 3)
        wrapped = self.request()
        connection.send(wrapped, b"x")
        self.assertEqual(wrapped.requestId, 1)  # 0 and 2 are held
        self.assertEqual(self.owner.events[-2:], [("full", "ids"), ("unusable", ConnectionState.RETIRING)])

    def test_requestCap(self) -> None:
        """After maxRequestsPerConnection writes the connection is full, whatever was answered."""
        connection, transport = self.connect(maxRequestsPerConnection=3)
        for count in range(3):
            request = self.request()
            connection.send(request, b"x")
            connection.dataReceived(encodeFrame(request.requestId, RESPONSE, b"ok"))
            if count < 2:
                self.assertIs(connection.state, ConnectionState.LIVE)
        self.assertIn(("full", "requests"), self.owner.events)
        self.assertIsNot(connection.state, ConnectionState.LIVE)

    def test_requestCapWithSmallIds(self) -> None:
        """The cap and the id space count down together: whichever comes first makes it full."""
        connection, transport = self.connect(codec=SmallIds(1), maxRequestsPerConnection=10)
        for _ in range(4):
            request = self.request()
            connection.send(request, b"x")
            connection.dataReceived(encodeFrame(request.requestId, RESPONSE, b"ok"))
        self.assertEqual([e for e in self.owner.events if e[0] == "full"], [])
        connection.send(self.request(), b"x")
        connection.send(self.request(), b"x")
        self.assertEqual([e for e in self.owner.events if e[0] == "full"], [("full", "ids")])

    def test_orderedForgetKeepsPlace(self) -> None:
        """With an ordered codec a forgotten request keeps its place, so the next reply is not taken for it."""
        connection, transport = self.connect(codec=Delimited())
        first, second = self.request(), self.request()
        connection.send(first, b"a\r\n")
        connection.send(second, b"b\r\n")
        connection.forget(first)
        connection.dataReceived(b"A\r\nB\r\n")
        self.assertEqual(self.owner.events, [("late",), ("settle", second, RESPONSE, b"B")])

    def test_orphansCounted(self) -> None:
        """A forgotten request sends CANCEL and holds its id, counted as an orphan until its late reply comes."""
        connection, transport = self.connect()
        request = self.request()
        connection.send(request, b"a")
        self.assertEqual(connection.forget(request), 1)
        self.assertEqual(connection.orphans, 1)
        self.assertEqual(transport.value()[-9:], encodeFrame(0, CANCEL, b""))
        other = self.request()
        connection.send(other, b"b")
        self.assertEqual(other.requestId, 1)  # the id is not reused before its reply
        connection.dataReceived(encodeFrame(0, RESPONSE, b"late"))
        self.assertEqual(connection.orphans, 0)
        self.assertEqual(self.owner.events, [("late",)])

    def test_repliesOnClosingConnectionAreLate(self) -> None:
        """After its close began, replies find nothing and count as late; nothing is written."""
        connection, transport = self.connect(codec=Delimited())
        connection.close()
        connection.dataReceived(b"stray\r\n")
        self.assertEqual(self.owner.events, [("unusable", ConnectionState.CLOSING), ("late",)])

    def test_slowCloseAborted(self) -> None:
        """A graceful close that does not finish within closeTimeout is aborted."""
        connection, transport = self.connect(closeTimeout=2.0)
        connection.close()
        self.clock.advance(2)
        self.assertTrue(transport.aborted)

    def test_batchedWritesFromCallbacks(self) -> None:
        """Requests sent while replies are delivered are written once, after the chunk."""
        connection, transport = self.connect()
        owner = self.owner
        sent: list[_Request] = []

        def settle(request: _Request, kind: int, payload: bytes, now: float) -> None:
            follow = self.request()
            sent.append(follow)
            connection.send(follow, payload + b"+")

        owner.requestAnswered = settle  # type: ignore[method-assign]
        for _ in range(3):
            connection.send(self.request(), b"x")
        calls = transport.writeCalls
        connection.dataReceived(b"".join(encodeFrame(i, RESPONSE, b"%d" % i) for i in range(3)))
        self.assertEqual(transport.writeCalls, calls + 1)
        self.assertEqual(connection.outstanding, 3)

    def readInChunks(self, stream: bytes, cuts: list[int], **options: object) -> tuple[list[tuple], bytes]:
        """
        Send three requests (ids 0 to 2), orphan the third, then receive
        C{stream} cut at C{cuts}: what the owner heard (requests by their
        index) and what was written after the requests.
        """
        connection, transport = self.connect(**options)
        requests = [self.request() for _ in range(3)]
        for request in requests:
            connection.send(request, b"q")
        connection.forget(requests[2])
        transport.clear()
        for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            connection.dataReceived(stream[start:stop])
        events = [
            tuple(requests.index(item) if isinstance(item, _Request) else item for item in event)
            for event in self.owner.events
        ]
        return events, transport.value()

    def test_anyCutReadsTheSame(self) -> None:
        """
        Replies, a late reply, an orphan's reply and a PING in one stream:
        however it is cut into chunks, the owner hears the same things in
        the same order and the same PONG is written.
        """
        stream = b"".join(
            [
                encodeFrame(1, RESPONSE, b"B"),
                encodeFrame(9, RESPONSE, b"unknown"),
                encodeFrame(7, PING, b"token"),
                encodeFrame(2, RESPONSE, b"orphan"),
                encodeFrame(0, ERROR, b"E" * 20),
            ]
        )
        expected = (
            [("settle", 1, RESPONSE, b"B"), ("late",), ("late",), ("settle", 0, ERROR, b"E" * 20)],
            encodeFrame(7, PONG, b"token"),
        )
        self.assertEqual(self.readInChunks(stream, []), expected)
        for cut in range(1, len(stream)):
            self.assertEqual(self.readInChunks(stream, [cut]), expected, f"cut at {cut}")
        self.assertEqual(self.readInChunks(stream, list(range(1, len(stream)))), expected)

    def test_anyCutFindsTheSameViolation(self) -> None:
        """
        A reply, then a frame above maxPayload that is whole in the chunk:
        however the stream is cut, the reply is settled, then the
        connection is dropped and the other request fails once.
        """
        stream = encodeFrame(1, RESPONSE, b"ok") + encodeFrame(0, RESPONSE, b"x" * 11)
        expected = [
            ("settle", 1, RESPONSE, b"ok"),
            ("unusable", ConnectionState.CLOSING),
            ("fail", 0, ProtocolViolation),
        ]
        for cuts in [[], *([cut] for cut in range(1, len(stream)))]:
            events, written = self.readInChunks(stream, cuts, maxPayload=10)
            self.assertEqual(events, expected, f"cuts {cuts}")

    def test_stateValuesDocumented(self) -> None:
        """The four states, in the order of a connection's life."""
        self.assertEqual([s.value for s in ConnectionState], ["live", "retiring", "closing", "lost"])


class RetiringViolationTests(SynchronousTestCase):
    """
    A retiring connection that breaks the protocol fails its
    requests once, and is left for good (the flags of 0.1.0 diverged here).
    """

    def test_retiringConnectionBreaksProtocol(self) -> None:
        """Its requests fail with ProtocolViolation, once; it closes; the client goes on with a fresh connection."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, maxLifetime=1, idleTimeout=None, requestTimeout=None)
        stuck = client.request(b"1")
        old = endpoint.last
        old.succeed()
        clock.advance(2)
        fresh = client.request(b"2")
        self.assertIs(old.protocol.state, ConnectionState.RETIRING)  # type: ignore[attr-defined]
        old.protocol.dataReceived(b"\x00\x00\x00\x01junk")  # type: ignore[attr-defined]
        old.protocol.dataReceived(b"\x00\x00\x00\x01junk")  # type: ignore[attr-defined]
        self.failureResultOf(stuck, ProtocolViolation)
        self.assertIs(old.protocol.state, ConnectionState.CLOSING)  # type: ignore[attr-defined]
        self.assertTrue(old.transport.aborted)
        old.drop()
        self.assertIs(old.protocol.state, ConnectionState.LOST)  # type: ignore[attr-defined]
        endpoint.last.succeed()
        endpoint.last.respond(0, b"two")
        self.assertEqual(self.successResultOf(fresh), b"two")
        s = client.stats()
        self.assertEqual((s["failures"], s["responses"], s["pending"], s["connectionsClosed"]), (1, 1, 0, 1))

    def test_retiringRequestTimesOut(self) -> None:
        """A timeout on a retiring connection resets it; its other requests fail with ConnectionDropped."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(
            endpoint, clock, maxLifetime=1, idleTimeout=None, requestTimeout=3, resetOnTimeout=True
        )
        first = client.request(b"1")
        old = endpoint.last
        old.succeed()
        clock.advance(1)
        second = client.request(b"2")  # retires the old connection
        self.assertNoResult(second)
        clock.advance(2)
        self.failureResultOf(first, RequestTimeout)
        self.assertTrue(old.transport.aborted)
        self.assertNoResult(second)
        old.drop()
        self.assertNoResult(second)
        clock.advance(1)
        self.failureResultOf(second, RequestTimeout)
        self.assertEqual(client.pending, 0)
        self.assertEqual(client.stats()["failures"], 2)
