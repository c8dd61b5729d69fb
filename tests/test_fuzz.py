"""
Random bytes and random frame sequences fed to both protocols: nothing
escapes C{dataReceived}; valid frames are processed, anything else closes the
connection with a protocol violation.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ProtocolViolation, SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.wire import (
    CLIENT_RECEIVES,
    ERROR,
    HEADER_SIZE,
    PONG,
    REQUEST,
    RESPONSE,
    FrameDecoder,
    encodeFrame,
)

from .helpers import FakeEndpoint, StrictTransport

anyFrame = st.tuples(st.integers(0, 8), st.integers(0, 8), st.binary(max_size=80)).map(lambda f: encodeFrame(*f))
mutatedStreams = st.lists(st.one_of(anyFrame, st.binary(max_size=12)), max_size=12).map(b"".join)
chunks = st.lists(st.integers(1, 30), min_size=1, max_size=5)


def feed(protocol: object, data: bytes, sizes: list[int], maxPayload: int = 32) -> None:
    """
    Feed C{data} in chunks of C{sizes}; after each, the bytes the protocol
    buffers stay within one frame of C{maxPayload}.
    """
    i = n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        protocol.dataReceived(data[i : i + size])  # type: ignore[attr-defined]
        assert protocol._decoder.buffered < HEADER_SIZE + maxPayload, protocol._decoder.buffered  # type: ignore[attr-defined]
        i += size
        n += 1


class ClientFuzzTests(SynchronousTestCase):
    """
    The client protocol survives any input.
    """

    @given(st.one_of(st.binary(max_size=300), mutatedStreams), chunks)
    def test_anyInput(self, data: bytes, sizes: list[int]) -> None:
        """Every request fires once: answered, remote error, or ProtocolViolation."""
        client = SockShareClientFactory(FakeEndpoint(), Clock(), maxPayload=32, requestTimeout=None)
        results: list[object] = []
        for _ in range(8):
            client.request(b"q").addBoth(results.append)
        endpoint = client._endpoint
        protocol, transport = endpoint.last.succeed()  # type: ignore[attr-defined]
        feed(protocol, data, sizes)
        if transport.aborted:
            self.assertFalse(client.connected)
            self.assertEqual(client.pending, 0)
            self.assertEqual(len(results), 8)
            self.assertTrue(any(getattr(r, "type", None) is ProtocolViolation for r in results))
        else:
            self.assertEqual(len(results) + client.pending, 8)
        for r in results:
            if hasattr(r, "trap"):
                r.trap(Exception)  # type: ignore[union-attr]


class ServerFuzzTests(SynchronousTestCase):
    """
    The server protocol survives any input.
    """

    @given(st.one_of(st.binary(max_size=300), mutatedStreams), chunks)
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

        factory = SockShareServerFactory(handler, maxPayload=32)
        protocol = factory.buildProtocol(None)
        transport = StrictTransport()
        protocol.makeConnection(transport)
        feed(protocol, data, sizes)
        replies = FrameDecoder(32, CLIENT_RECEIVES).feed(transport.value())
        self.assertTrue(all(kind in (RESPONSE, ERROR, PONG) for _, kind, _ in replies))
        stats = factory.stats()
        self.assertEqual(stats["responses"] + stats["errors"] + len(held), stats["requests"])
        self.assertEqual(transport.aborted, stats["violations"] == 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(protocol._inFlight, {})
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
