"""
Random bytes and random frame sequences fed to both protocols: nothing
escapes C{dataReceived}; valid frames are processed, anything else closes the
connection with a protocol violation.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ProtocolViolation, SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.wire import (
    BUDGET_SIZE,
    CLIENT_RECEIVES,
    ERROR,
    FRAGMENT,
    HEADER_SIZE,
    PING,
    PONG,
    REFUSED,
    REQUEST,
    RESPONSE,
    FrameDecoder,
    Hello,
    encodeFrame,
    encodeNote,
    encodeTimedRequest,
)

from .helpers import FakeEndpoint, StrictTransport

anyFrame = st.tuples(st.integers(0, 11), st.integers(0, 10), st.binary(max_size=80)).map(lambda f: encodeFrame(*f))
#: Wire version 3's frames: HELLOs (whole, or cut anywhere), DEADLINE notes
#: and TIMED_REQUEST frames with any budget.
hellos = st.builds(
    Hello,
    deadlines=st.booleans(),
    refusals=st.booleans(),
    maxInFlight=st.one_of(st.none(), st.integers(1, 2**32 - 1)),
    maxPayload=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    fragments=st.booleans(),
).map(lambda hello: hello.encode())
helloFrames = st.tuples(hellos, st.integers(0, 40)).map(lambda h: encodeFrame(0, PING, h[0][: h[1]]))
v3Frames = st.one_of(
    helloFrames,
    st.tuples(st.integers(0, 8), st.integers(0, 2**32 - 1)).map(lambda n: encodeNote(*n)),
    st.tuples(st.integers(0, 8), st.integers(0, 3000), st.binary(max_size=40)).map(lambda t: encodeTimedRequest(*t)),
    # Pieces of messages in fragments, for ids 0-3 (so they meet their last
    # piece, a REQUEST or reply of the same id, or each other).
    st.tuples(st.integers(0, 3), st.binary(max_size=20)).map(lambda t: encodeFrame(t[0], FRAGMENT, t[1])),
)
mutatedStreams = st.lists(st.one_of(anyFrame, v3Frames, st.binary(max_size=12)), max_size=12).map(b"".join)
chunks = st.lists(st.integers(1, 30), min_size=1, max_size=5)


def feed(protocol: object, data: bytes, sizes: list[int], maxPayload: int = 32, allowance: int = 0) -> None:
    """
    Feed C{data} in chunks of C{sizes}; after each, the bytes the protocol
    buffers stay within one frame of C{maxPayload} (plus C{allowance}, the
    budget a TIMED_REQUEST carries above it).
    """
    i = n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        protocol.dataReceived(data[i : i + size])  # type: ignore[attr-defined]
        buffered = protocol._decoder.buffered  # type: ignore[attr-defined]
        assert buffered < HEADER_SIZE + maxPayload + allowance, buffered
        # Messages partly received, in fragments: each within its limit.
        pieces = protocol._pieces  # type: ignore[attr-defined]
        if pieces is not None:
            assert pieces.buffered <= len(pieces) * (maxPayload + allowance), (pieces.buffered, len(pieces))
        i += size
        n += 1


class ClientFuzzTests(SynchronousTestCase):
    """
    The client protocol survives any input.
    """

    @given(st.one_of(st.binary(max_size=300), mutatedStreams), chunks)
    def test_anyInput(self, data: bytes, sizes: list[int]) -> None:
        """Every request fires once: answered, remote error, refused, or ProtocolViolation."""
        client = SockShareClientFactory(FakeEndpoint(), Clock(), maxPayload=32, requestTimeout=None)
        results: list[object] = []
        for _ in range(8):
            client.request(b"q").addBoth(results.append)
        endpoint = client._endpoint
        protocol, transport = endpoint.last.succeed()  # type: ignore[attr-defined]
        feed(protocol, data, sizes)
        self.assertEqual(len(results) + client.pending, 8)
        if transport.aborted:
            # Every request on the connection fired, but those the server
            # refused (REFUSED), sent again on a new connection, still wait.
            retried = client.stats()["refusedRetried"]
            self.assertFalse(client.connected)
            self.assertLessEqual(client.pending, retried)
            if not retried:
                self.assertTrue(any(getattr(r, "type", None) is ProtocolViolation for r in results))
        for r in results:
            if hasattr(r, "trap"):
                r.trap(Exception)  # type: ignore[union-attr]


class ServerFuzzTests(SynchronousTestCase):
    """
    The server protocol survives any input.
    """

    @given(st.one_of(st.binary(max_size=300), mutatedStreams), chunks)
    # A TIMED_REQUEST of the largest payload, cut before its last byte (found
    # by atheris: the decoder then holds maxPayload + BUDGET_SIZE bytes).
    @example(
        encodeFrame(0, PING, Hello(3, deadlines=True).encode()) + encodeTimedRequest(1, 500, b"x" * 32), [23, 44, 1]
    )
    def test_anyInput(self, data: bytes, sizes: list[int]) -> None:
        """Valid requests are answered; anything else aborts the connection."""
        held: list[Deferred[bytes]] = []

        def handler(payload: bytes) -> bytes | Deferred[bytes]:
            if payload[:1] == b"d":
                d: Deferred[bytes] = Deferred()
                held.append(d)
                return d
            if payload[:1] == b"e":
                raise ValueError("asked for it")
            return payload

        clock = Clock()
        factory = SockShareServerFactory(handler, maxPayload=32, clock=clock, whenFull="refuse", maxInFlight=2)
        protocol = factory.buildProtocol(None)
        transport = StrictTransport()
        protocol.makeConnection(transport)
        feed(protocol, data, sizes, allowance=BUDGET_SIZE)
        clock.advance(1)  # some budgets run out
        replies = FrameDecoder(64, CLIENT_RECEIVES).feed(transport.value())
        self.assertTrue(all(kind in (RESPONSE, ERROR, PONG, PING, REFUSED) for _, kind, _ in replies))
        if protocol.hello is None:
            # A client that sent no HELLO gets no frame of version 3.
            self.assertTrue(all(kind in (RESPONSE, ERROR, PONG) for _, kind, _ in replies))
        stats = factory.stats()
        waiting = [d for d in held if not d.called]  # not cancelled at a deadline
        self.assertEqual(stats["responses"] + stats["errors"] + len(waiting), stats["requests"])
        self.assertEqual(transport.aborted, stats["violations"] == 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(protocol._inFlight, {})
        self.assertIsNone(protocol._pieces)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.flushLoggedErrors(ValueError)

    def test_hugeAnnouncedFrame(self) -> None:
        """A 4 GiB announced frame is refused from its header: nothing is allocated for it."""
        factory = SockShareServerFactory(lambda p: p)
        protocol = factory.buildProtocol(None)
        transport = StrictTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\xff\xff\xff\xff\x00\x00\x00\x01" + bytes([REQUEST]) + b"x" * 100)
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol._decoder.buffered, 0)
