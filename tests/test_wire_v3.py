"""
Wire format v3, rule by rule, with fake transports and clocks: the HELLO
and its negotiation with version 2 peers, budgets and the server's
deadlines (L{RequestContext}), limits the server announces, and REFUSED.
"""

from __future__ import annotations

from random import Random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    PayloadTooLarge,
    RemoteError,
    RequestContext,
    RequestTimeout,
    SockShareBalancer,
    SockShareClientFactory,
    SockShareServerFactory,
)
from twisted_sockshare.connection import INITIAL_WINDOW
from twisted_sockshare.errors import RequestRefused
from twisted_sockshare.wire import (
    BUDGET_SIZE,
    CLIENT_RECEIVES,
    ERROR,
    HELLO_MAGIC,
    NOTE_MAGIC,
    PING,
    PONG,
    REFUSED,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    TIMED_REQUEST,
    FrameDecoder,
    Hello,
    budgetMilliseconds,
    encodeFrame,
    encodeNote,
    encodeTimedRequest,
    parseHello,
)

from .contract import PORTS, Backends
from .helpers import ClientTestCase, connectServer


def serverFrames(transport: Any) -> list[tuple[int, int, bytes]]:
    return FrameDecoder(2**31, CLIENT_RECEIVES).feed(transport.value())


def clientHello(**features: Any) -> bytes:
    return encodeFrame(0, PING, Hello(**features).encode())


class HelloTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """What a HELLO announces is read back as it was."""
        for hello in [
            Hello(),
            Hello(deadlines=True, refusals=True, maxInFlight=10, maxPayload=1 << 20),
            Hello(version=7, maxPayload=0),
        ]:
            self.assertEqual(parseHello(hello.encode()), hello)

    def test_fitsAPing(self) -> None:
        """Every feature announced still fits the 64 bytes of a PING."""
        big = Hello(deadlines=True, refusals=True, maxInFlight=2**32 - 1, maxPayload=2**32 - 1).encode()
        self.assertLessEqual(len(big), 64)
        self.assertTrue(big.startswith(HELLO_MAGIC))

    def test_unknownFeaturesSkipped(self) -> None:
        """A later version's features are skipped, the known ones still read."""
        payload = Hello(deadlines=True).encode() + bytes([200, 3]) + b"abc" + bytes([2, 0])
        self.assertEqual(parseHello(payload), Hello(deadlines=True, refusals=True))

    def test_malformed(self) -> None:
        """A HELLO cut short, or with a limit of the wrong size or 0, is described, not read."""
        for payload in [
            HELLO_MAGIC,
            HELLO_MAGIC + b"\x03\x03",
            HELLO_MAGIC + b"\x03\x03\x04\x00\x00",
            HELLO_MAGIC + b"\x03\x03\x02\x00\x01",
            HELLO_MAGIC + b"\x03\x03\x04\x00\x00\x00\x00",
        ]:
            self.assertIsInstance(parseHello(payload), str, payload)

    def test_budgetRoundsUp(self) -> None:
        """A budget is whole milliseconds rounded up: never 0 unless spent, capped at 2**32-1."""
        self.assertEqual(budgetMilliseconds(0.0), 0)
        self.assertEqual(budgetMilliseconds(-1.0), 0)
        self.assertEqual(budgetMilliseconds(0.0000001), 1)
        self.assertEqual(budgetMilliseconds(0.5), 501)
        self.assertEqual(budgetMilliseconds(10.0**9), 2**32 - 1)

    def test_timedRequestAllowance(self) -> None:
        """
        A server's decoder takes a TIMED_REQUEST up to maxPayload plus its
        budget, and refuses a REQUEST above maxPayload from its header.
        """
        decoder = FrameDecoder(10, SERVER_RECEIVES, BUDGET_SIZE)
        frames = decoder.feed(encodeTimedRequest(1, 5, b"x" * 10))
        self.assertEqual(frames, [(1, TIMED_REQUEST, b"\x00\x00\x00\x05" + b"x" * 10)])
        decoder.feed(encodeFrame(2, REQUEST, b"x" * 11)[:9])
        self.assertIn("above maxPayload=10", decoder.violation or "")
        decoder = FrameDecoder(10, SERVER_RECEIVES, BUDGET_SIZE)
        decoder.feed(encodeTimedRequest(1, 5, b"x" * 11)[:9])
        self.assertIn("above maxPayload=10", decoder.violation or "")


class ServerV3Tests(SynchronousTestCase):
    def serve(self, **options: Any) -> tuple[Any, Any]:
        self.clock = Clock()
        self.held: dict[bytes, Deferred[bytes]] = {}
        self.contexts: list[RequestContext] = []

        def handler(payload: bytes) -> Any:
            self.contexts.append(RequestContext.current())
            if payload.startswith(b"hold"):
                d: Deferred[bytes] = Deferred(lambda _: self.cancelled.append(payload))
                self.held[payload] = d
                return d
            return payload

        self.cancelled: list[bytes] = []
        self.factory = SockShareServerFactory(handler, clock=self.clock, **options)
        return connectServer(self.factory)

    def test_silentToVersion2(self) -> None:
        """A client that sends no HELLO gets no frame it does not know: no HELLO, no REFUSED."""
        protocol, transport = self.serve(whenFull="refuse", maxInFlight=1)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"hold 1") + encodeFrame(2, REQUEST, b"b"))
        self.held[b"hold 1"].callback(b"one")
        self.assertEqual(serverFrames(transport), [(1, RESPONSE, b"one"), (2, RESPONSE, b"b")])
        self.assertIsNone(protocol.hello)

    def test_helloAnswered(self) -> None:
        """A client's HELLO is answered with the server's, first, and no PONG."""
        protocol, transport = self.serve(maxInFlight=7, maxPayload=1000)
        protocol.dataReceived(clientHello(deadlines=True, refusals=True) + encodeFrame(1, REQUEST, b"a"))
        (first, second) = serverFrames(transport)
        self.assertEqual(first[:2], (0, PING))
        self.assertEqual(
            parseHello(first[2]), Hello(deadlines=True, refusals=True, maxInFlight=7, maxPayload=1000, fragments=True)
        )
        self.assertEqual(second, (1, RESPONSE, b"a"))
        self.assertEqual(protocol.hello, Hello(deadlines=True, refusals=True))

    def test_budgetsOnlyAfterAHello(self) -> None:
        """
        A TIMED_REQUEST from a client whose HELLO did not announce budgets is
        a violation; a PING that looks like a note from such a client is
        only a PING.
        """
        protocol, transport = self.serve()
        protocol.dataReceived(encodeNote(1, 5))
        self.assertEqual([f[:2] for f in serverFrames(transport)], [(1, PONG)])
        protocol.dataReceived(encodeTimedRequest(1, 5, b"a"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.contexts, [])

    def test_malformedHello(self) -> None:
        """A HELLO that cannot be read is a protocol violation."""
        protocol, transport = self.serve()
        protocol.dataReceived(encodeFrame(0, PING, HELLO_MAGIC))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.stats()["violations"], 1)

    def test_spentOnArrival(self) -> None:
        """A budget of 0 is answered with an ERROR naming the deadline; the handler is not called."""
        protocol, transport = self.serve()
        protocol.dataReceived(clientHello(deadlines=True))
        transport.clear()
        protocol.dataReceived(encodeTimedRequest(1, 0, b"a"))
        ((requestId, kind, message),) = serverFrames(transport)
        self.assertEqual((requestId, kind), (1, ERROR))
        self.assertTrue(message.startswith(b"DeadlineExceeded:"), message)
        self.assertEqual(self.contexts, [])
        stats = self.factory.stats()
        self.assertEqual((stats["deadlineExceeded"], stats["deadlineExceededOnArrival"]), (1, 1))
        self.assertEqual(stats["requests"], stats["responses"] + stats["errors"] + stats["inFlight"])

    def test_handlerCancelledAtTheDeadline(self) -> None:
        """
        A handler still running when its caller's budget runs out is
        cancelled, and its request answered with an ERROR, at the deadline.
        """
        protocol, transport = self.serve()
        protocol.dataReceived(clientHello(deadlines=True))
        transport.clear()
        protocol.dataReceived(encodeTimedRequest(1, 500, b"hold 1") + encodeTimedRequest(2, 2000, b"hold 2"))
        self.clock.advance(0.499)
        self.assertEqual(serverFrames(transport), [])
        self.clock.advance(0.001)
        ((requestId, kind, message),) = serverFrames(transport)
        self.assertEqual((requestId, kind), (1, ERROR))
        self.assertIn(b"while the handler ran", message)
        self.assertEqual(self.cancelled, [b"hold 1"])
        self.assertNoResult(self.held[b"hold 2"])
        self.held[b"hold 2"].callback(b"two")
        self.assertEqual(serverFrames(transport)[1], (2, RESPONSE, b"two"))
        stats = self.factory.stats()
        self.assertEqual((stats["deadlineExceeded"], stats["deadlineExceededOnArrival"]), (1, 0))
        self.assertIsNone(protocol._budgetCall)

    def test_earlierDeadlineMovesTheTimer(self) -> None:
        """A later request with a shorter budget is cancelled at its own deadline, not the first's."""
        protocol, transport = self.serve()
        protocol.dataReceived(clientHello(deadlines=True))
        transport.clear()
        protocol.dataReceived(encodeTimedRequest(1, 5000, b"hold 1"))
        protocol.dataReceived(encodeTimedRequest(2, 100, b"hold 2"))
        self.clock.advance(0.1)
        self.assertEqual([f[:2] for f in serverFrames(transport)], [(2, ERROR)])

    def test_context(self) -> None:
        """
        The handler reads its caller's deadline, on the server's clock; a
        request without a budget, or code outside a handler, reads none.
        """
        protocol, _ = self.serve()
        self.clock.advance(100)
        protocol.dataReceived(clientHello(deadlines=True))
        protocol.dataReceived(encodeTimedRequest(1, 250, b"a") + encodeFrame(2, REQUEST, b"b"))
        timed, plain = self.contexts
        self.assertEqual(timed.deadline, 100.25)
        self.assertEqual(timed.remaining(), 0.25)
        self.clock.advance(1)
        self.assertEqual(timed.remaining(), 0.0)
        self.assertIsNone(plain.deadline)
        self.assertIsNone(plain.remaining())
        self.assertIsNone(RequestContext.current().deadline)

    def test_contextInCoroutine(self) -> None:
        """An async handler reads its request's deadline after it awaited, too."""
        clock = Clock()
        seen: list[float | None] = []
        gate: Deferred[None] = Deferred()

        async def handler(payload: bytes) -> bytes:
            await gate
            seen.append(RequestContext.current().deadline)
            return payload

        factory = SockShareServerFactory(handler, clock=clock)
        protocol, _ = connectServer(factory)
        protocol.dataReceived(clientHello(deadlines=True) + encodeTimedRequest(1, 2000, b"a"))
        gate.callback(None)
        self.assertEqual(seen, [2.0])

    def test_noteGivesTheNextRequestItsBudget(self) -> None:
        """A DEADLINE note (sent before the server's version is known) gives its request a budget."""
        protocol, transport = self.serve()
        protocol.dataReceived(clientHello(deadlines=True))
        transport.clear()
        protocol.dataReceived(encodeNote(4, 300) + encodeFrame(4, REQUEST, b"a") + encodeFrame(5, REQUEST, b"b"))
        self.assertEqual([c.deadline for c in self.contexts], [0.3, None])
        self.assertEqual([f[:2] for f in serverFrames(transport)], [(4, RESPONSE), (5, RESPONSE)])

    def test_expiresInTheBacklog(self) -> None:
        """
        A request read while the server is at maxInFlight waits in the
        backlog; if its budget runs out there, its handler is never called.
        """
        protocol, transport = self.serve(maxInFlight=1)
        protocol.dataReceived(clientHello(deadlines=True))
        transport.clear()
        protocol.dataReceived(encodeTimedRequest(1, 5000, b"hold 1") + encodeTimedRequest(2, 100, b"b"))
        self.clock.advance(0.2)
        self.held[b"hold 1"].callback(b"one")
        self.assertEqual([p for p in self.held], [b"hold 1"])
        self.assertEqual(len(self.contexts), 1)
        self.assertEqual([f[:2] for f in serverFrames(transport)], [(1, RESPONSE), (2, ERROR)])
        self.assertEqual(self.factory.stats()["deadlineExceededOnArrival"], 1)

    def test_refuseWhenFull(self) -> None:
        """
        With whenFull="refuse", a request beyond maxInFlight from a client
        that takes REFUSED is refused, its handler not called, and reading
        goes on.
        """
        protocol, transport = self.serve(whenFull="refuse", maxInFlight=1)
        protocol.dataReceived(clientHello(refusals=True))
        transport.clear()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"hold 1") + encodeFrame(2, REQUEST, b"hold 2"))
        self.assertEqual(serverFrames(transport), [(2, REFUSED, b"maxInFlight=1 requests are being handled")])
        self.assertEqual(list(self.held), [b"hold 1"])
        self.assertEqual(self.factory.stats()["pausedConnections"], 0)
        self.held[b"hold 1"].callback(b"one")
        protocol.dataReceived(encodeFrame(3, REQUEST, b"c"))
        self.assertEqual([f[:2] for f in serverFrames(transport)[1:]], [(1, RESPONSE), (3, RESPONSE)])
        stats = self.factory.stats()
        self.assertEqual((stats["refused"], stats["requests"]), (1, 2))

    def test_refuseWhileDraining(self) -> None:
        """After a drain's GOAWAY, a version 3 client's requests are refused; a version 2 client's handled."""
        v3, v3transport = self.serve()
        v2, v2transport = connectServer(self.factory)
        v3.dataReceived(clientHello(refusals=True))
        self.factory.drain()
        v3transport.clear()
        v2transport.clear()
        v3.dataReceived(encodeFrame(1, REQUEST, b"a"))
        v2.dataReceived(encodeFrame(1, REQUEST, b"a"))
        self.assertEqual([f[:2] for f in serverFrames(v3transport)], [(1, REFUSED)])
        self.assertEqual([f[:2] for f in serverFrames(v2transport)], [(1, RESPONSE)])

    def test_responseAboveTheClientsLimit(self) -> None:
        """A response above the maxPayload the client announced becomes an ERROR naming it."""
        protocol, transport = self.serve()
        protocol.dataReceived(clientHello(maxPayload=3))
        transport.clear()
        protocol.dataReceived(encodeFrame(1, REQUEST, b"abcd"))
        ((_, kind, message),) = serverFrames(transport)
        self.assertEqual(kind, ERROR)
        self.assertIn(b"the client's maxPayload=3", message)

    def test_badWhenFull(self) -> None:
        """whenFull is "pause" or "refuse"."""
        with self.assertRaises(ValueError):
            SockShareServerFactory(bytes.upper, whenFull="drop")


class ClientV3Tests(ClientTestCase):
    def greet(self, **features: Any) -> Any:
        attempt = self.endpoint.last
        attempt.protocol.dataReceived(encodeFrame(0, PING, Hello(**features).encode()))
        return attempt

    def test_helloFirst(self) -> None:
        """The client's first frame is its HELLO: it sends budgets, takes REFUSED, and its maxPayload."""
        self.makeClient(maxPayload=5000)
        self.client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        ((token, payload), *_) = attempt.sentFrames(PING, announcements=True)
        self.assertEqual(parseHello(payload), Hello(deadlines=True, refusals=True, maxPayload=5000, fragments=True))

    def test_notesUntilTheServerSpeaks(self) -> None:
        """
        Before the server's first frame, a request's budget goes in a note;
        a version 3 server's HELLO turns notes into TIMED_REQUEST frames.
        """
        client = self.makeClient(requestTimeout=2)
        client.request(b"a")
        self.clock.advance(0.3)  # connecting takes 0.3 s of a's budget
        attempt = self.endpoint.last
        attempt.succeed()
        notes = [(i, p) for i, p in attempt.sentFrames(PING, announcements=True) if p.startswith(NOTE_MAGIC)]
        self.assertEqual(notes, [(0, NOTE_MAGIC + (1701).to_bytes(4, "big"))])
        self.greet(deadlines=True, refusals=True)
        self.clock.advance(0.5)
        client.request(b"b")
        client.request(b"c", timeout=0.25)
        self.assertEqual(
            attempt.sentFrames(TIMED_REQUEST),
            [(1, (2001).to_bytes(4, "big") + b"b"), (2, (251).to_bytes(4, "big") + b"c")],
        )
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"a"])

    def test_version2Server(self) -> None:
        """A server whose first frame is not a HELLO speaks version 2: plain REQUEST frames, no notes."""
        client = self.makeClient(requestTimeout=2)
        client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        attempt.speakV2()
        client.request(b"b", timeout=1)
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"a", b"b"])
        self.assertEqual(len(attempt.sentFrames(PING, announcements=True)), 2)  # the HELLO and a's note
        self.assertEqual(attempt.sentFrames(TIMED_REQUEST), [])

    def test_initialWindow(self) -> None:
        """Before the server's first frame, INITIAL_WINDOW requests are written, the rest held."""
        client = self.makeClient(requestTimeout=None)
        results = [client.request(b"%d" % i) for i in range(INITIAL_WINDOW + 50)]
        attempt = self.endpoint.last
        attempt.succeed()
        self.assertEqual(len(attempt.sentRequests()), INITIAL_WINDOW)
        attempt.speakV2()
        self.assertEqual(len(attempt.sentRequests()), INITIAL_WINDOW + 50)
        for requestId, payload in attempt.sentRequests():
            attempt.respond(requestId, payload)
        self.assertEqual([self.successResultOf(d) for d in results], [b"%d" % i for i in range(INITIAL_WINDOW + 50)])

    def test_announcedLimit(self) -> None:
        """
        A server announcing maxInFlight=10 never has more than 10 of the
        client's requests outstanding; the others wait in order, and a
        cancelled one waiting sends nothing.
        """
        client = self.makeClient(requestTimeout=None)
        first = client.request(b"first")
        attempt = self.endpoint.last
        attempt.succeed()
        self.greet(maxInFlight=10)
        attempt.respond(0, b"first")
        self.successResultOf(first)
        results = [client.request(b"%d" % i) for i in range(1000)]
        self.assertEqual(len(attempt.sentRequests()), 1 + 10)
        self.assertEqual(client.pending, 1000)
        results[500].cancel()
        self.failureResultOf(results[500], CancelledError)
        self.assertEqual(attempt.sentFrames(4), [])  # no CANCEL
        answered = 1
        while answered < len(attempt.sentRequests()):
            batch = attempt.sentRequests()[answered:]
            self.assertLessEqual(len(batch), 10)
            for requestId, payload in batch:
                attempt.respond(requestId, payload)
            answered += len(batch)
        self.assertEqual(len(attempt.sentRequests()), 1 + 999)
        self.assertEqual(client.pending, 0)
        self.assertEqual(self.successResultOf(results[999]), b"999")

    def test_heldRequestsTimeOutWithoutTheWire(self) -> None:
        """A request held within the server's limit whose timeout runs out fails; it is never written."""
        client = self.makeClient(requestTimeout=1)
        first = client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        self.greet(maxInFlight=1, deadlines=True)
        held = client.request(b"b")
        self.clock.advance(1)
        self.failureResultOf(first, RequestTimeout)
        self.failureResultOf(held, RequestTimeout)
        self.assertEqual(attempt.sentFrames(TIMED_REQUEST), [])
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"a"])

    def test_heldRequestsMoveOnGoaway(self) -> None:
        """Requests held on a connection that receives GOAWAY were never written: they go to the next one."""
        client = self.makeClient(requestTimeout=None)
        client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        self.greet(maxInFlight=1)
        held = client.request(b"b")
        attempt.protocol.dataReceived(encodeFrame(0, 5, b"bye"))
        second = self.endpoint.last
        self.assertIsNot(second, attempt)
        second.succeed()
        self.assertEqual([p for _, p in second.sentRequests()], [b"b"])
        second.respond(0, b"B")
        self.assertEqual(self.successResultOf(held), b"B")

    def test_serverPayloadLimit(self) -> None:
        """A payload above the server's announced maxPayload fails alone, before it is written."""
        client = self.makeClient(requestTimeout=None)
        client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        self.greet(maxPayload=4, deadlines=True, refusals=True)
        failure = self.failureResultOf(client.request(b"x" * 5), PayloadTooLarge)
        self.assertIn("maxPayload=4", str(failure.value))
        self.assertEqual(len(attempt.sentRequests()), 1)
        self.assertTrue(client.connected)
        self.assertInvariant()

    def test_refusedRetriedOnce(self) -> None:
        """A refused request is sent again once (not idempotent); refused again, it fails with RequestRefused."""
        client = self.makeClient(requestTimeout=None)
        d = client.request(b"a")
        attempt = self.endpoint.last
        attempt.succeed()
        self.greet(refusals=True)
        attempt.protocol.dataReceived(encodeFrame(0, REFUSED, b"busy"))
        self.assertEqual([p for _, p in attempt.sentRequests()], [b"a", b"a"])
        self.assertNoResult(d)
        attempt.protocol.dataReceived(encodeFrame(1, REFUSED, b"busy"))
        failure = self.failureResultOf(d, RequestRefused)
        self.assertIn("busy", str(failure.value))
        s = client.stats()
        self.assertEqual((s["refusedRetried"], s["failures"]), (1, 1))
        self.assertInvariant()


class EndToEndTests(SynchronousTestCase):
    """The project's client and server together, in memory."""

    def test_deadlineReachesTheServer(self) -> None:
        """
        A 2 s handler called with a 0.5 s budget: the client sees
        RequestTimeout at 0.5 s, and the server has cancelled the handler
        within 0.1 s of that - on the connection's first request too.
        """
        backends = Backends()
        client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, requestTimeout=30)
        d = client.request(b"hold slow", timeout=0.5)
        contexts = backends.handler.seen
        self.assertEqual(contexts, [b"hold slow"])
        server = backends.servers[PORTS[0]]
        backends.reactor.advance(0.5)
        self.failureResultOf(d, RequestTimeout)
        backends.reactor.advance(0.002)
        self.assertEqual(backends.handler.cancelled, [b"hold slow"])
        stats = server.stats()
        self.assertEqual(stats["deadlineExceeded"] + stats["cancelsReceived"], 1)

    def test_serverAloneCancelsAtTheDeadline(self) -> None:
        """With no CANCEL from the client (reset on timeout off, the CANCEL lost), the deadline alone stops it."""
        backends = Backends()
        client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, requestTimeout=None)
        warm = client.request(b"echo")
        self.successResultOf(warm)
        connection = client._state.connection
        assert connection is not None
        connection._controls = False  # no CANCEL will be written
        d = client.request(b"hold slow", timeout=0.5)
        backends.reactor.advance(0.5)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(backends.handler.cancelled, [])
        backends.reactor.advance(0.002)
        self.assertEqual(backends.handler.cancelled, [b"hold slow"])
        self.assertEqual(backends.servers[PORTS[0]].stats()["deadlineExceeded"], 1)

    def test_announcedLimitEndToEnd(self) -> None:
        """A server of maxInFlight=10 and 1,000 callers: its handlers never hold more than 10 at once."""
        backends = Backends(maxInFlight=10)
        client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, requestTimeout=None)
        self.successResultOf(client.request(b"echo warm"))
        results = [client.request(b"hold %d" % i) for i in range(1000)]
        server = backends.servers[PORTS[0]]
        while backends.handler.held:
            self.assertLessEqual(len(backends.handler.held), 10)
            for payload in list(backends.handler.held):
                backends.handler.answer(payload)
        self.assertEqual([self.successResultOf(d) for d in results], [b"hold %d" % i for i in range(1000)])
        self.assertEqual(server.stats()["peakInFlight"], 10)

    def test_balancerSendsRefusedElsewhere(self) -> None:
        """A request refused by one endpoint is sent to the other, not failed; the refusal is no outlier."""
        backends = Backends()
        endpoints = [f"tcp:127.0.0.1:{port}" for port in PORTS[:2]]
        balancer = SockShareBalancer(endpoints, backends.reactor, random=Random(7).random)
        for i in range(4):  # a connection to each endpoint
            self.successResultOf(balancer.request(b"echo %d" % i))
        server = backends.servers[PORTS[0]]
        for protocol in server._protocols:
            protocol._handle = protocol._refuseDraining  # it refuses whatever comes
        results = [balancer.request(b"echo again %d" % i) for i in range(20)]
        self.assertEqual([self.successResultOf(d) for d in results], [b"echo again %d" % i for i in range(20)])
        stats = balancer.stats()
        self.assertEqual(stats["refusedRetried"], server.stats()["refused"])
        self.assertGreater(stats["refusedRetried"], 0)
        self.assertEqual((stats["failures"], stats["ejections"]), (0, 0))

    def test_remoteDeadlineError(self) -> None:
        """A request whose budget is spent when the server reads it fails with the server's message."""
        backends = Backends()
        client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", backends.reactor, requestTimeout=None)
        self.successResultOf(client.request(b"echo"))
        connection = client._state.connection
        assert connection is not None
        connection.now = 100.0  # as if the request had waited past its timeout before being written
        failure = self.failureResultOf(client.request(b"echo late", timeout=1))
        self.assertIsInstance(failure.value, (RemoteError, RequestTimeout))
        if isinstance(failure.value, RemoteError):
            self.assertIn("DeadlineExceeded", str(failure.value))
        self.assertNotIn(b"echo late", backends.handler.seen)
