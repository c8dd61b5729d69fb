"""
Large messages in fragments (wire version 3, FRAGMENTS), rule by rule, with
fake transports and clocks: the outbox that sends them a turn at a time,
the reassembly that receives them, the client's and the server's use of
both, and the two together in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ConnectionDropped, ProtocolViolation, RemoteError, SockShareServerFactory
from twisted_sockshare._fragments import TURN_BYTES, Outbox, Reassembly
from twisted_sockshare.wire import (
    BUDGET_SIZE,
    CANCEL,
    CLIENT_RECEIVES,
    ERROR,
    FRAGMENT,
    PING,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    TIMED_REQUEST,
    FrameDecoder,
    Hello,
    encodeFrame,
    encodeTimedRequest,
    parseHello,
)

from .contract import PORTS, Backends
from .helpers import ClientTestCase, connectServer, oneTurn


def decode(data: bytes, kinds: frozenset[int] = CLIENT_RECEIVES | SERVER_RECEIVES) -> list[tuple[int, int, bytes]]:
    decoder = FrameDecoder(2**31, kinds, BUDGET_SIZE)
    frames = decoder.feed(data)
    assert decoder.violation is None and decoder.idle, decoder.violation
    return frames


def turns(clock: Clock) -> list[Any]:
    """The fragment turns scheduled on C{clock}."""
    return [call for call in clock.getDelayedCalls() if getattr(call.func, "__name__", "") == "_turn"]


def fragmentsOf(requestId: int, kind: int, payload: bytes, size: int) -> bytes:
    """C{payload} as a sender of fragments of C{size} bytes writes it."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(encodeFrame(requestId, FRAGMENT, piece) for piece in pieces[:-1]) + encodeFrame(
        requestId, kind, pieces[-1]
    )


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.written: list[bytes] = []
        self.outbox = Outbox(self.clock, self.written.append, 1024)

    def test_fragmentsThenTheFramesOwnKind(self) -> None:
        """
        A frame leaves as FRAGMENTs of the fragment size with its id, then
        its own kind with the rest; nothing is written before the reactor
        turns.
        """
        payload = bytes(range(256)) * 10  # 2,560 bytes
        self.outbox.add(encodeFrame(7, RESPONSE, payload))
        self.assertEqual(self.written, [])
        self.assertEqual(self.outbox.queued, 2560)
        self.clock.advance(0)
        frames = decode(b"".join(self.written))
        self.assertEqual(
            [(i, kind, len(p)) for i, kind, p in frames], [(7, FRAGMENT, 1024), (7, FRAGMENT, 1024), (7, RESPONSE, 512)]
        )
        self.assertEqual(b"".join(p for _, _, p in frames), payload)
        self.assertEqual((self.outbox.queued, len(self.outbox), self.clock.getDelayedCalls()), (0, 0, []))

    def test_aTurnIsBounded(self) -> None:
        """A turn writes at most TURN_BYTES of payload; the next waits for the next turn of the reactor."""
        self.outbox.add(encodeFrame(1, REQUEST, b"x" * (3 * TURN_BYTES)))
        oneTurn(self.clock)
        self.assertEqual(len(self.written), 1)
        self.assertEqual(sum(len(p) for _, _, p in decode(self.written[0])), TURN_BYTES)
        oneTurn(self.clock)
        oneTurn(self.clock)
        self.assertEqual(len(self.written), 3)
        self.assertEqual(sum(len(p) for _, _, p in decode(b"".join(self.written))), 3 * TURN_BYTES)

    def test_messagesTakeTurns(self) -> None:
        """Two messages alternate, a fragment each, so neither waits for the whole of the other."""
        self.outbox.add(encodeFrame(1, REQUEST, b"a" * 3000))
        self.outbox.add(encodeFrame(2, REQUEST, b"b" * 2000))
        self.clock.advance(0)
        order = [(i, kind) for i, kind, _ in decode(b"".join(self.written))]
        self.assertEqual(order, [(1, FRAGMENT), (2, FRAGMENT), (1, FRAGMENT), (2, REQUEST), (1, REQUEST)])

    def test_remove(self) -> None:
        """remove() says whether some of the message was written, and nothing more of it is."""
        self.outbox.add(encodeFrame(1, REQUEST, b"a" * (2 * TURN_BYTES)))
        self.outbox.add(encodeFrame(2, REQUEST, b"b" * 2000))
        self.assertEqual(self.outbox.backlog, 2000)
        self.assertIs(self.outbox.remove(2), False)
        oneTurn(self.clock)
        self.assertIs(self.outbox.remove(1), True)
        self.assertIsNone(self.outbox.remove(1))
        before = len(self.written)
        self.clock.advance(0)
        self.assertEqual((len(self.written), self.outbox.queued, self.clock.getDelayedCalls()), (before, 0, []))

    def test_pausedWritesNothing(self) -> None:
        """While its transport's buffer is full (pauseProducing), no turn runs; resumeProducing goes on."""
        self.outbox.add(encodeFrame(1, REQUEST, b"a" * 5000))
        self.outbox.pauseProducing()
        self.assertTrue(self.outbox.paused)
        self.clock.advance(0)
        self.assertEqual((self.written, self.clock.getDelayedCalls()), ([], []))
        self.outbox.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(b"".join(p for _, _, p in decode(b"".join(self.written))), b"a" * 5000)

    def test_stop(self) -> None:
        """stopProducing (the connection is gone) forgets every message and its turn."""
        self.outbox.add(encodeFrame(1, REQUEST, b"a" * 5000))
        self.outbox.stopProducing()
        self.assertEqual((len(self.outbox), self.outbox.queued, self.clock.getDelayedCalls()), (0, 0, []))


class ReassemblyTests(SynchronousTestCase):
    def test_joinedOnce(self) -> None:
        """Pieces are kept as they came and joined with the last one; then nothing is held."""
        pieces = Reassembly(100, 2)
        self.assertIsNone(pieces.add(1, b"ab", now=5.0))
        self.assertIsNone(pieces.add(1, b"cd"))
        self.assertEqual((len(pieces), pieces.buffered, pieces.began), (1, 4, {1: 5.0}))
        self.assertIn(1, pieces)
        self.assertEqual(pieces.join(1, b"e"), b"abcde")
        self.assertEqual((len(pieces), pieces.buffered, pieces.began), (0, 0, {}))

    def test_limits(self) -> None:
        """A message above the limit, or one more message than allowed, is described as a violation."""
        pieces = Reassembly(10, 1)
        self.assertIsNone(pieces.add(1, b"x" * 10))
        self.assertIn("above maxPayload", pieces.add(1, b"y") or "")
        self.assertIn("more than 1 messages", pieces.add(2, b"z") or "")

    def test_discard(self) -> None:
        pieces = Reassembly(10, 2)
        pieces.add(1, b"abc")
        self.assertTrue(pieces.discard(1))
        self.assertFalse(pieces.discard(1))
        self.assertEqual(pieces.buffered, 0)


class ClientFragmentTests(ClientTestCase):
    """The client sends large requests in fragments to a server that takes them, and reads replies in fragments."""

    def connect(self, fragments: bool = True, **options: Any) -> Any:
        options.setdefault("fragmentSize", 1024)
        options.setdefault("requestTimeout", None)
        self.makeClient(**options)
        warm = self.client.request(b"warm")
        attempt = self.endpoint.last
        attempt.succeed()
        hello = Hello(deadlines=True, refusals=True, maxInFlight=100, fragments=fragments)
        attempt.protocol.dataReceived(encodeFrame(0, PING, hello.encode()))
        attempt.respond(0, b"warm")
        self.successResultOf(warm)
        attempt.transport.clear()
        return attempt

    def written(self, attempt: Any) -> list[tuple[int, int, bytes]]:
        return [frame for frame in decode(attempt.transport.value(), SERVER_RECEIVES) if frame[1] != PING]

    def test_largeRequestInFragments(self) -> None:
        """
        A request above fragmentSize leaves in fragments, a turn at a time;
        a small one made meanwhile is written at once, between them.
        """
        attempt = self.connect()
        large = self.client.request(b"L" * (TURN_BYTES + 3000))
        self.assertEqual(self.written(attempt), [])
        oneTurn(self.clock)
        small = self.client.request(b"small")
        oneTurn(self.clock)
        frames = self.written(attempt)
        kinds = [kind for _, kind, _ in frames]
        self.assertEqual(kinds.count(FRAGMENT), (TURN_BYTES + 3000) // 1024)
        self.assertEqual(kinds[TURN_BYTES // 1024], REQUEST)  # the small one, after the first turn
        self.assertEqual(kinds[-1], REQUEST)
        largeId = frames[0][0]
        body = b"".join(payload for requestId, _, payload in frames if requestId == largeId)
        self.assertEqual(body, b"L" * (TURN_BYTES + 3000))
        attempt.respond(largeId, b"done")
        attempt.respond(frames[TURN_BYTES // 1024][0], b"ok")
        self.assertEqual((self.successResultOf(large), self.successResultOf(small)), (b"done", b"ok"))
        self.assertInvariant()

    def test_wholeUnlessBothTakeThem(self) -> None:
        """A server that does not announce FRAGMENTS, or fragmentSize=None, gets the request whole."""
        for fragments, size in [(False, 1024), (True, None)]:
            attempt = self.connect(fragments=fragments, fragmentSize=size)
            self.client.request(b"L" * 5000)
            self.clock.advance(0)
            self.assertEqual([(kind, len(p)) for _, kind, p in self.written(attempt)], [(REQUEST, 5000)])

    def test_noneMeansNoFragmentsEitherWay(self) -> None:
        """With fragmentSize=None the client does not announce FRAGMENTS, and a FRAGMENT is a violation."""
        self.makeClient(fragmentSize=None, requestTimeout=None)
        large = self.client.request(b"big please")
        attempt = self.endpoint.last
        attempt.succeed()
        (_, hello), *_ = attempt.sentFrames(PING, announcements=True)
        self.assertFalse(parseHello(hello).fragments)  # type: ignore[union-attr]
        attempt.protocol.dataReceived(encodeFrame(0, PING, Hello(fragments=True).encode()))
        attempt.protocol.dataReceived(encodeFrame(0, FRAGMENT, b"R" * 1024))
        self.failureResultOf(large, ProtocolViolation)

    def test_wholeBeforeTheServerSpeaks(self) -> None:
        """Before the server's first frame its features are unknown: a large request goes whole."""
        self.makeClient(fragmentSize=1024, requestTimeout=None)
        self.client.request(b"L" * 5000)
        attempt = self.endpoint.last
        attempt.succeed()
        self.assertEqual([len(p) for _, p in attempt.sentFrames(REQUEST)], [5000])
        self.assertEqual(attempt.sentFrames(FRAGMENT), [])

    def test_cancelBeforeAnyFragment(self) -> None:
        """Cancelled before its first fragment, a request is never written: no CANCEL, its id free."""
        attempt = self.connect()
        large = self.client.request(b"L" * 5000)
        large.cancel()
        self.failureResultOf(large, CancelledError)
        self.clock.advance(0)
        self.assertEqual(self.written(attempt), [])
        self.assertEqual(attempt.protocol.outstanding, 0)
        self.assertEqual(turns(self.clock), [])

    def test_cancelMidMessage(self) -> None:
        """
        Cancelled with part of it written, a request's rest is never
        written, a CANCEL tells the server to drop the part, and its id is
        free at once (the server never answers a part).
        """
        attempt = self.connect()
        large = self.client.request(b"L" * (TURN_BYTES + 5000))
        oneTurn(self.clock)
        large.cancel()
        self.failureResultOf(large, CancelledError)
        self.clock.advance(0)
        frames = self.written(attempt)
        self.assertEqual({kind for _, kind, _ in frames[:-1]}, {FRAGMENT})
        self.assertEqual(frames[-1][1:], (CANCEL, b""))
        self.assertEqual((attempt.protocol.outstanding, attempt.protocol.orphans), (0, 0))
        self.assertEqual(self.client.stats()["cancelled"], 1)

    def test_answeredWhileBeingSent(self) -> None:
        """
        A server that answers a request before its last piece (not this
        project's) gets no more of it, and a CANCEL for the part it has,
        before the id can be used again; the reply is delivered.
        """
        attempt = self.connect()
        large = self.client.request(b"L" * (2 * TURN_BYTES))
        oneTurn(self.clock)
        attempt.protocol.dataReceived(encodeFrame(1, ERROR, b"TooBig: no"))
        self.failureResultOf(large, RemoteError)
        self.clock.advance(0)
        frames = self.written(attempt)
        self.assertEqual({kind for _, kind, _ in frames[:-1]}, {FRAGMENT})
        self.assertEqual(frames[-1], (1, CANCEL, b""))
        self.assertEqual(attempt.protocol.outstanding, 0)

    def test_replyInFragments(self) -> None:
        """A reply's fragments are joined; small replies between them are delivered meanwhile."""
        attempt = self.connect()
        large = self.client.request(b"big please")
        small = self.client.request(b"small")
        data = fragmentsOf(1, RESPONSE, b"R" * 5000, 1024)
        attempt.protocol.dataReceived(data[:1033])  # one fragment
        attempt.respond(2, b"ok")
        self.assertEqual(self.successResultOf(small), b"ok")
        self.assertNoResult(large)
        attempt.protocol.dataReceived(data[1033:])
        self.assertEqual(self.successResultOf(large), b"R" * 5000)

    def test_errorEndsAReplyInFragments(self) -> None:
        """An ERROR after fragments (a server that stopped sending) is the answer: its own message only."""
        attempt = self.connect()
        large = self.client.request(b"big please")
        attempt.protocol.dataReceived(encodeFrame(1, FRAGMENT, b"R" * 1024) + encodeFrame(1, ERROR, b"Oops: no"))
        failure = self.failureResultOf(large, RemoteError)
        self.assertEqual(str(failure.value), "Oops: no")

    def test_replyAboveMaxPayloadInFragments(self) -> None:
        """Fragments that add up to more than maxPayload are a violation, however small each is."""
        attempt = self.connect(maxPayload=3000)
        large = self.client.request(b"big please")
        attempt.protocol.dataReceived(fragmentsOf(1, RESPONSE, b"R" * 4000, 1024))
        self.failureResultOf(large, ProtocolViolation)

    def test_lateReplyInFragments(self) -> None:
        """The fragments of a reply no longer waited for are not kept; its last piece counts as late."""
        attempt = self.connect(requestTimeout=1.0)
        late = self.client.request(b"slow")
        attempt.protocol.dataReceived(encodeFrame(1, FRAGMENT, b"R" * 1024))
        self.clock.advance(1)
        self.failureResultOf(late)
        attempt.protocol.dataReceived(fragmentsOf(1, RESPONSE, b"R" * 5000, 1024)[1033:])
        self.assertEqual(self.client.stats()["lateResponses"], 1)
        self.assertIsNone(attempt.protocol._pieces)

    def test_lostMidMessage(self) -> None:
        """A connection lost with a request half sent and a reply half received fails both; nothing stays scheduled."""
        attempt = self.connect(idleTimeout=None)
        sending = self.client.request(b"L" * (TURN_BYTES + 5000))
        receiving = self.client.request(b"big please")
        oneTurn(self.clock)
        attempt.protocol.dataReceived(encodeFrame(2, FRAGMENT, b"R" * 1024))
        attempt.lose(ConnectionError("reset"))
        self.failureResultOf(sending, ConnectionDropped)
        self.failureResultOf(receiving, ConnectionDropped)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ServerFragmentTests(SynchronousTestCase):
    """The server joins requests in fragments, and sends large responses in fragments to a client that takes them."""

    def serve(self, hello: bool = True, **options: Any) -> tuple[Any, Any]:
        self.clock = Clock()
        self.held: dict[bytes, Deferred[bytes]] = {}
        self.seen: list[bytes] = []

        def handler(payload: bytes) -> Any:
            self.seen.append(payload)
            if payload.startswith(b"hold"):
                self.held[payload] = Deferred()
                return self.held[payload]
            if payload.startswith(b"big"):
                return b"B" * int(payload[3:])
            return payload

        options.setdefault("fragmentSize", 1024)
        self.factory = SockShareServerFactory(handler, clock=self.clock, **options)
        protocol, transport = connectServer(self.factory)
        if hello:
            protocol.dataReceived(encodeFrame(0, PING, Hello(fragments=True).encode()))
        transport.clear()
        return protocol, transport

    def test_requestJoined(self) -> None:
        """A request in fragments reaches the handler whole; a small one between them is answered meanwhile."""
        protocol, transport = self.serve()
        data = fragmentsOf(1, REQUEST, b"q" * 3000, 1024)
        protocol.dataReceived(data[:1033] + encodeFrame(2, REQUEST, b"small"))
        self.assertEqual(self.seen, [b"small"])
        protocol.dataReceived(data[1033:])
        self.assertEqual(self.seen, [b"small", b"q" * 3000])
        self.clock.advance(0)  # the response is large too: in fragments
        frames = decode(transport.value())
        self.assertEqual(frames[0], (2, RESPONSE, b"small"))
        self.assertEqual(b"".join(p for i, _, p in frames if i == 1), b"q" * 3000)

    def test_timedRequestBudgetFromTheFirstFragment(self) -> None:
        """A TIMED_REQUEST in fragments: its budget starts when its first fragment was read."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(0, PING, Hello(deadlines=True, fragments=True).encode()))
        frame = encodeTimedRequest(3, 1000, b"hold " + b"q" * 2000)
        body = frame[9:]
        protocol.dataReceived(encodeFrame(3, FRAGMENT, body[:1024]))
        self.clock.advance(0.6)
        protocol.dataReceived(encodeFrame(3, TIMED_REQUEST, body[1024:]))
        self.assertEqual(len(self.held), 1)
        self.clock.advance(0.4)  # 1 s after the first fragment
        self.assertIn(b"DeadlineExceeded", transport.value())

    def test_fragmentWithoutHello(self) -> None:
        """A FRAGMENT from a client that sent no HELLO is a violation."""
        protocol, transport = self.serve(hello=False)
        protocol.dataReceived(encodeFrame(1, FRAGMENT, b"x"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["violations"], 1)

    def test_noneMeansNoFragmentsEitherWay(self) -> None:
        """With fragmentSize=None the server does not announce FRAGMENTS, and a FRAGMENT is a violation."""
        protocol, transport = self.serve(hello=False, fragmentSize=None)
        protocol.dataReceived(encodeFrame(0, PING, Hello(fragments=True).encode()))
        (_, _, hello), *_ = decode(transport.value())
        self.assertFalse(parseHello(hello).fragments)  # type: ignore[union-attr]
        protocol.dataReceived(encodeFrame(1, FRAGMENT, b"x"))
        self.assertTrue(transport.disconnecting)

    def test_limits(self) -> None:
        """
        Fragments adding up to more than maxPayload, more messages in
        fragments than maxInFlight, or a FRAGMENT for an id in flight: each
        drops the connection.
        """
        cases = [
            ({"maxPayload": 2000}, fragmentsOf(1, REQUEST, b"x" * 2500, 1024)),
            ({"maxInFlight": 2}, b"".join(encodeFrame(i, FRAGMENT, b"x") for i in range(3))),
            ({}, encodeFrame(1, REQUEST, b"hold") + encodeFrame(1, FRAGMENT, b"x")),
        ]
        for options, data in cases:
            protocol, transport = self.serve(**options)
            protocol.dataReceived(data)
            self.assertTrue(transport.disconnecting, options)
            self.assertEqual(self.seen, [b"hold"] if not options else [], options)

    def test_cancelPartlyReceived(self) -> None:
        """A CANCEL of a request partly received drops it: the handler never sees it, nothing answers it."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, FRAGMENT, b"x" * 1024) + encodeFrame(1, CANCEL, b""))
        protocol.dataReceived(encodeFrame(1, REQUEST, b"again"))
        self.assertEqual(self.seen, [b"again"])
        self.assertEqual([(i, kind, p) for i, kind, p in decode(transport.value())], [(1, RESPONSE, b"again")])
        self.assertEqual(self.factory.stats()["cancelsReceived"], 1)

    def test_largeResponseInFragments(self) -> None:
        """A response above fragmentSize leaves a turn at a time; answers made meanwhile go between its fragments."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"big%d" % (TURN_BYTES + 2000)))
        self.assertEqual(transport.value(), b"")
        oneTurn(self.clock)
        protocol.dataReceived(encodeFrame(2, REQUEST, b"small"))
        oneTurn(self.clock)
        frames = decode(transport.value())
        self.assertEqual(frames[TURN_BYTES // 1024], (2, RESPONSE, b"small"))
        self.assertEqual(b"".join(p for i, _, p in frames if i == 1), b"B" * (TURN_BYTES + 2000))
        self.assertEqual(frames[-1][:2], (1, RESPONSE))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wholeToClientsThatDoNotTakeThem(self) -> None:
        """A client whose HELLO did not announce FRAGMENTS, or none at all, gets responses whole."""
        for hello in [Hello(), None]:
            protocol, transport = self.serve(hello=False)
            if hello is not None:
                protocol.dataReceived(encodeFrame(0, PING, hello.encode()))
                transport.clear()
            protocol.dataReceived(encodeFrame(1, REQUEST, b"big5000"))
            self.assertEqual([(kind, len(p)) for _, kind, p in decode(transport.value())], [(RESPONSE, 5000)])

    def test_cancelMidResponse(self) -> None:
        """A CANCEL while a response is partly sent ends it with an ERROR saying so; nothing more of it is sent."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"big%d" % (3 * TURN_BYTES)))
        oneTurn(self.clock)
        protocol.dataReceived(encodeFrame(1, CANCEL, b""))
        self.clock.advance(0)
        frames = decode(transport.value())
        self.assertEqual({kind for _, kind, _ in frames[:-1]}, {FRAGMENT})
        self.assertEqual(frames[-1][:2], (1, ERROR))
        self.assertTrue(frames[-1][2].startswith(b"CancelledError"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readingStopsBehindTheBacklog(self) -> None:
        """
        One large response never stops reading; responses waiting behind it
        above writeBufferSize do, until they are sent.
        """
        protocol, transport = self.serve(writeBufferSize=2 * TURN_BYTES)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"big%d" % (4 * TURN_BYTES)))
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(encodeFrame(2, REQUEST, b"big%d" % (3 * TURN_BYTES)))
        self.assertEqual(transport.producerState, "paused")
        for _ in range(10):
            self.clock.advance(0)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len([f for f in decode(transport.value()) if f[1] == RESPONSE]), 2)

    def test_idleWithARequestPartlyReceived(self) -> None:
        """A request left partly received for idleTimeout is a frame left incomplete: the connection is aborted."""
        protocol, transport = self.serve(idleTimeout=5.0)
        protocol.dataReceived(encodeFrame(1, FRAGMENT, b"x" * 1024))
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)


class EndToEndTests(SynchronousTestCase):
    """The project's client and server together, in memory, with fragments both ways."""

    def test_largeBothWaysWithSmallBetween(self) -> None:
        """
        Large requests and responses cross in fragments while small ones
        are answered; a cancel mid-message frees everything; nothing is left
        held or scheduled.
        """
        backends = Backends(fragmentSize=1024)
        from twisted_sockshare import SockShareClientFactory

        client = SockShareClientFactory(
            f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, fragmentSize=1024, requestTimeout=None, idleTimeout=1.0
        )
        self.successResultOf(client.request(b"echo warm"))
        large = [client.request(b"echo " + bytes([65 + i]) * (2 * TURN_BYTES)) for i in range(3)]
        small = [client.request(b"echo %d" % i) for i in range(5)]
        self.assertEqual([self.successResultOf(d) for d in small], [b"echo %d" % i for i in range(5)])
        oneTurn(backends.reactor)
        large[1].cancel()
        for _ in range(20):
            backends.reactor.advance(0)
        self.assertEqual(self.successResultOf(large[0]), b"echo " + b"A" * (2 * TURN_BYTES))
        self.failureResultOf(large[1], CancelledError)
        self.assertEqual(self.successResultOf(large[2]), b"echo " + b"C" * (2 * TURN_BYTES))
        (protocol,) = backends.servers[PORTS[0]]._protocols
        self.assertIsNone(protocol._pieces)
        self.assertEqual(client.stats()["pending"], 0)
        self.successResultOf(client.close())
        backends.reactor.advance(10)
        self.assertEqual(backends.reactor.getDelayedCalls(), [])
