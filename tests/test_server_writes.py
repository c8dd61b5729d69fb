"""
How the server writes: what one received chunk produces leaves in one
C{transport.write}, in the order of the requests; large frames are written
on their own; a transport that fills up stops the chunk's handling; answers
that come later are written at once.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.server import BATCH_LIMIT
from twisted_sockshare.wire import (
    CANCEL,
    CLIENT_RECEIVES,
    ERROR,
    PING,
    PONG,
    REQUEST,
    RESPONSE,
    FrameDecoder,
    Hello,
    encodeFrame,
)


class WritesTransport(StringTransport):
    """
    A transport that records each write, and pauses its streaming producer
    as Twisted's do once more than C{bufferSize} bytes were written since
    the test last emptied it.
    """

    bufferSize = 65_536

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()


def serve(handler: Any, **options: Any) -> tuple[SockShareServerFactory, Any, WritesTransport]:
    factory = SockShareServerFactory(handler, clock=Clock(), **options)
    protocol = factory.buildProtocol(None)
    transport = WritesTransport()
    protocol.makeConnection(transport)
    return factory, protocol, transport


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    return FrameDecoder(2**31, CLIENT_RECEIVES).feed(data)


def _answer(payload: bytes) -> bytes:
    if payload == b"fail":
        raise ValueError("no")
    return payload.upper()


class BatchTests(SynchronousTestCase):
    def test_oneWritePerChunk(self) -> None:
        """
        A chunk of 100 requests whose handler answers at once is answered
        with one write, each request once, in their order.
        """
        factory, protocol, transport = serve(_answer)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"r%d" % i) for i in range(100)))
        self.assertEqual(len(transport.writes), 1)
        self.assertEqual(frames(transport.value()), [(i, RESPONSE, b"R%d" % i) for i in range(100)])
        self.assertEqual((factory.stats()["requests"], factory.stats()["responses"]), (100, 100))

    def test_everyKindInOrder(self) -> None:
        """
        PONGs, ERRORs and RESPONSEs of one chunk leave in one write, in the
        order of the frames that asked for them.
        """
        factory, protocol, transport = serve(_answer)
        chunk = [
            encodeFrame(1, REQUEST, b"a"),
            encodeFrame(2, PING, b"p"),
            encodeFrame(3, REQUEST, b"fail"),
            encodeFrame(4, REQUEST, b"b"),
        ]
        protocol.dataReceived(b"".join(chunk))
        self.flushLoggedErrors(ValueError)
        self.assertEqual(len(transport.writes), 1)
        self.assertEqual(
            frames(transport.value()),
            [(1, RESPONSE, b"A"), (2, PONG, b"p"), (3, ERROR, b"ValueError: no"), (4, RESPONSE, b"B")],
        )

    def test_helloFirst(self) -> None:
        """
        A wire version 3 client's HELLO and requests in one chunk: the
        server's HELLO, then the answers (with the budgets read), in one write.
        """
        factory, protocol, transport = serve(_answer)
        hello = encodeFrame(0, PING, Hello(deadlines=False, refusals=True).encode())
        protocol.dataReceived(hello + encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b"b"))
        self.assertEqual(len(transport.writes), 1)
        self.assertEqual(
            frames(transport.value()), [frames(factory.helloFrame)[0], (1, RESPONSE, b"A"), (2, RESPONSE, b"B")]
        )

    def test_largeFramesAlone(self) -> None:
        """
        A response of C{BATCH_LIMIT} bytes or more is not copied into the
        chunk's write: what came before it is written first, then it, then
        what came after.
        """
        big = b"x" * BATCH_LIMIT
        factory, protocol, transport = serve(lambda payload: big if payload == b"big" else payload)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, p) for i, p in enumerate([b"a", b"b", b"big", b"c"])))
        self.assertEqual(len(transport.writes), 3)
        self.assertEqual(transport.writes[1], encodeFrame(2, RESPONSE, big))
        answered = [(0, RESPONSE, b"a"), (1, RESPONSE, b"b"), (2, RESPONSE, big), (3, RESPONSE, b"c")]
        self.assertEqual(frames(transport.value()), answered)

    def test_fullTransportStopsTheChunk(self) -> None:
        """
        A transport that fills up while a chunk is handled pauses the
        connection after that write: the requests after it wait, unhandled,
        until the transport resumes it.
        """
        handled: list[bytes] = []

        def handler(payload: bytes) -> bytes:
            handled.append(payload)
            return payload * 40_000

        factory, protocol, transport = serve(handler, writeBufferSize=65_536)
        protocol.dataReceived(b"".join(encodeFrame(i, REQUEST, b"%d" % i) for i in range(5)))
        self.assertEqual(handled, [b"0", b"1"])
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(factory.stats()["pausedConnections"], 1)
        transport.clear()
        protocol.resumeProducing()
        self.assertEqual(handled, [b"0", b"1", b"2", b"3"])
        transport.clear()
        protocol.resumeProducing()
        self.assertEqual(handled, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(transport.producerState, "producing")

    def test_laterAnswersAtOnce(self) -> None:
        """
        An answer that comes after its chunk was handled is written when it
        comes, not held for the next chunk.
        """
        held: list[Deferred[bytes]] = []

        def later(payload: bytes) -> Deferred[bytes]:
            held.append(Deferred())
            return held[-1]

        factory, protocol, transport = serve(later)
        protocol.dataReceived(encodeFrame(1, REQUEST, b"a") + encodeFrame(2, REQUEST, b"b"))
        self.assertEqual(transport.writes, [])
        held[1].callback(b"B")
        self.assertEqual(frames(transport.value()), [(2, RESPONSE, b"B")])
        held[0].callback(b"A")
        self.assertEqual(len(transport.writes), 2)

    def test_nothingAfterAViolation(self) -> None:
        """
        A chunk whose second frame repeats an id in flight: the connection
        is aborted, and nothing of the chunk is written.
        """
        held: list[Deferred[bytes]] = []

        def handler(payload: bytes) -> Any:
            if payload == b"later":
                held.append(Deferred())
                return held[-1]
            return payload

        factory, protocol, transport = serve(handler)
        protocol.dataReceived(
            encodeFrame(1, REQUEST, b"later") + encodeFrame(2, REQUEST, b"now") + encodeFrame(1, REQUEST, b"again")
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.writes, [])
        self.assertEqual(factory.stats()["violations"], 1)


class WriteBufferSizeTests(SynchronousTestCase):
    def test_givenToTheTransport(self) -> None:
        """
        The transport's C{bufferSize} is the factory's C{writeBufferSize}
        (256 KiB by default).
        """
        self.assertEqual(serve(_answer)[2].bufferSize, 262_144)
        self.assertEqual(serve(_answer, writeBufferSize=1_000)[2].bufferSize, 1_000)

    def test_transportWithout(self) -> None:
        """
        A transport that has no C{bufferSize} gets none.
        """
        factory = SockShareServerFactory(_answer, clock=Clock())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertFalse(hasattr(transport, "bufferSize"))

    def test_checked(self) -> None:
        """
        C{writeBufferSize} must be a positive int.
        """
        self.assertRaises(ValueError, SockShareServerFactory, _answer, writeBufferSize=0)
        self.assertRaises(TypeError, SockShareServerFactory, _answer, writeBufferSize=1.5)


def _mixed(payload: bytes) -> Any:
    if payload[:1] == b"d":
        return Deferred()
    if payload[:1] == b"e":
        raise ValueError("asked for it")
    if payload[:1] == b"s":
        return succeed(payload)
    return payload


#: A client's stream: requests whose handler answers at once, fails, answers
#: later or through a fired Deferred; PINGs and CANCELs; each its own id.
_kinds = st.sampled_from([REQUEST, REQUEST, REQUEST, PING, CANCEL])
_frames = st.lists(
    st.tuples(_kinds, st.sampled_from([b"a", b"e", b"d", b"s", b""])),
    max_size=30,
).map(lambda frames: b"".join(encodeFrame(i, kind, payload) for i, (kind, payload) in enumerate(frames)))


class CutTests(SynchronousTestCase):
    @settings(derandomize=True, max_examples=300)
    @given(_frames, st.lists(st.integers(1, 40), min_size=1, max_size=6), st.sampled_from([1, 2, 1_000]))
    def test_answersDoNotDependOnTheCuts(self, stream: bytes, sizes: list[int], maxInFlight: int) -> None:
        """
        However the stream is cut into chunks, the server writes the same
        frames in the same order, and its counters end the same.
        """
        whole = serve(_mixed, maxInFlight=maxInFlight)
        whole[1].dataReceived(stream)
        cut = serve(_mixed, maxInFlight=maxInFlight)
        i = n = 0
        while i < len(stream):
            size = sizes[n % len(sizes)]
            cut[1].dataReceived(stream[i : i + size])
            i, n = i + size, n + 1
        self.assertEqual(frames(cut[2].value()), frames(whole[2].value()))
        self.assertEqual(cut[0].stats(), whole[0].stats())
        self.flushLoggedErrors(ValueError)
