"""
Codecs: the decoders alone, the shared client with FIFO codecs (with fakes),
and loopback servers speaking line and length-prefixed protocols.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.basic import Int32StringReceiver, LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_sockshare import (
    ConnectionDropped,
    InvalidRequest,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    SockShareClientFactory,
)
from twisted_sockshare.codecs import NEXT, Delimited, LengthPrefixed, Multiplexed
from twisted_sockshare.wire import ERROR, REQUEST, RESPONSE, encodeFrame

from .helpers import FakeEndpoint


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, i, n = [], 0, 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        pieces.append(data[i : i + size])
        i, n = i + size, n + 1
    return pieces


class DecoderTests(SynchronousTestCase):
    @given(
        st.lists(st.binary(max_size=30).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r"))),
        st.lists(st.integers(1, 20), min_size=1),
    )
    def test_linesInAnyChunks(self, lines: list[bytes], sizes: list[int]) -> None:
        """Lines come out whole and in order, however the bytes are cut."""
        decoder = Delimited().decoder(100)
        out = []
        for piece in chunked(b"".join(line + b"\r\n" for line in lines), sizes):
            out.extend(decoder.feed(piece))
        self.assertEqual(out, [(NEXT, RESPONSE, line) for line in lines])
        self.assertEqual(decoder.buffered, 0)

    @given(st.lists(st.binary(max_size=300)), st.lists(st.integers(1, 50), min_size=1), st.sampled_from([2, 4, 8]))
    def test_prefixedInAnyChunks(self, messages: list[bytes], sizes: list[int], width: int) -> None:
        """Length-prefixed messages come out whole and in order, however the bytes are cut."""
        codec = LengthPrefixed(width)
        decoder = codec.decoder(1000)
        out = []
        for piece in chunked(b"".join(codec.encodeRequest(0, m) for m in messages), sizes):
            out.extend(decoder.feed(piece))
        self.assertEqual(out, [(NEXT, RESPONSE, m) for m in messages])

    def test_lineTooLong(self) -> None:
        """A reply line longer than the limit is a violation, complete or not."""
        decoder = Delimited(maxLineLength=5).decoder(100)
        self.assertEqual(decoder.feed(b"12345\r\n123456"), [(NEXT, RESPONSE, b"12345")])
        self.assertIn("longer than the maximum of 5", decoder.violation or "")
        decoder = Delimited(b"\n").decoder(4)
        self.assertEqual(decoder.feed(b"abcdef\nok\n"), [])
        self.assertIsNotNone(decoder.violation)

    def test_errorPrefix(self) -> None:
        """Lines starting with the error prefix are error replies."""
        decoder = Delimited(errorPrefix=b"-").decoder(100)
        self.assertEqual(decoder.feed(b"+OK\r\n-ERR no\r\n"), [(NEXT, RESPONSE, b"+OK"), (NEXT, ERROR, b"-ERR no")])

    def test_prefixTooLarge(self) -> None:
        decoder = LengthPrefixed(2).decoder(10)
        self.assertEqual(decoder.feed(struct.pack(">H", 11)), [])
        self.assertIn("above maxPayload=10", decoder.violation or "")

    def test_encode(self) -> None:
        self.assertEqual(Delimited(b"\n").encodeRequest(7, b"GET x"), b"GET x\n")
        self.assertRaises(InvalidRequest, Delimited().encodeRequest, 0, b"a\r\nb")
        self.assertEqual(LengthPrefixed(2).encodeRequest(0, b"abc"), b"\x00\x03abc")
        self.assertRaises(InvalidRequest, LengthPrefixed(1).encodeRequest, 0, b"x" * 256)
        self.assertRaises(ValueError, LengthPrefixed, 3)
        self.assertRaises(ValueError, Delimited, b"")
        self.assertEqual(Multiplexed().encodeRequest(5, b"p"), encodeFrame(5, REQUEST, b"p"))


class FifoClientTests(SynchronousTestCase):
    """
    The shared client with an ordered codec: the n-th reply answers the n-th
    request still in line.
    """

    def makeClient(self, **options: object) -> SockShareClientFactory:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        options.setdefault("codec", Delimited())
        self.client = SockShareClientFactory(self.endpoint, self.clock, **options)  # type: ignore[arg-type]
        return self.client

    def connect(self) -> tuple:
        protocol, transport = self.endpoint.last.succeed()
        return protocol, transport

    def test_pipelinedInOrder(self) -> None:
        """Many requests are written at once, one per line; replies are matched by order."""
        client = self.makeClient(idleTimeout=0)
        ds = [client.request(b"GET %d" % i) for i in range(5)]
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"".join(b"GET %d\r\n" % i for i in range(5)))
        protocol.dataReceived(b"r0\r\nr1\r\nr")
        self.assertEqual([self.successResultOf(d) for d in ds[:2]], [b"r0", b"r1"])
        protocol.dataReceived(b"2\r\nr3\r\nr4\r\n")
        self.assertEqual([self.successResultOf(d) for d in ds[2:]], [b"r2", b"r3", b"r4"])
        self.assertTrue(transport.disconnecting)

    def test_cancelledKeepsItsSlot(self) -> None:
        """A cancelled request's reply is consumed and discarded, not handed to the next caller."""
        client = self.makeClient()
        first, second = client.request(b"a"), client.request(b"b")
        protocol, transport = self.connect()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol.dataReceived(b"reply to a\r\n")
        self.assertNoResult(second)
        protocol.dataReceived(b"reply to b\r\n")
        self.assertEqual(self.successResultOf(second), b"reply to b")
        self.assertEqual(client.stats()["lateResponses"], 1)

    def test_timeoutResets(self) -> None:
        """A timeout resets the connection: the stream may no longer be aligned."""
        client = self.makeClient(requestTimeout=5)
        first = client.request(b"a")
        protocol, transport = self.connect()
        self.clock.advance(3)
        second = client.request(b"b")
        self.clock.advance(2)
        self.failureResultOf(first, RequestTimeout)
        self.failureResultOf(second, ConnectionDropped)
        self.assertTrue(transport.aborted)
        self.assertRaises(
            ValueError, SockShareClientFactory, FakeEndpoint(), Clock(), codec=Delimited(), resetOnTimeout=False
        )

    def test_unparseableReply(self) -> None:
        """An unparseable reply, or a reply with nothing outstanding, is a ProtocolViolation."""
        client = self.makeClient(codec=Delimited(maxLineLength=10))
        d = client.request(b"a")
        protocol, transport = self.connect()
        protocol.dataReceived(b"x" * 11)
        self.failureResultOf(d, ProtocolViolation)
        self.assertTrue(transport.aborted)
        d = client.request(b"b")
        protocol, transport = self.connect()
        protocol.dataReceived(b"one\r\ntwo\r\n")
        self.assertEqual(self.successResultOf(d), b"one")
        self.assertTrue(transport.aborted or transport.disconnecting)

    def test_extraReplyIsViolation(self) -> None:
        client = self.makeClient(idleTimeout=None)
        d = client.request(b"a")
        protocol, transport = self.connect()
        protocol.dataReceived(b"one\r\ntwo\r\n")
        self.assertEqual(self.successResultOf(d), b"one")
        self.assertTrue(transport.aborted)

    def test_invalidPayload(self) -> None:
        """A payload the codec cannot encode fails at once with InvalidRequest; nothing is sent."""
        client = self.makeClient()
        f = self.failureResultOf(client.request(b"two\r\nlines"), InvalidRequest)
        self.assertIn("delimiter", str(f.value))
        self.assertEqual(self.endpoint.attempts, [])
        self.assertEqual(client.stats()["rejected"], 1)

    def test_errorReplies(self) -> None:
        client = self.makeClient(codec=Delimited(errorPrefix=b"-"))
        d = client.request(b"BAD")
        protocol, _ = self.connect()
        protocol.dataReceived(b"-ERR unknown command\r\n")
        self.assertIn("-ERR unknown command", str(self.failureResultOf(d, RemoteError).value))


class _Lines(LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())


class _Prefixed(Int32StringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self.sendString(string[::-1])


class LoopbackTests(TestCase):
    """
    Servers that know nothing of this project, written with Twisted's own
    line and length-prefixed receivers.
    """

    async def serve(self, protocol: type) -> str:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(protocol))
        self.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    async def test_lines(self) -> None:
        client = SockShareClientFactory(await self.serve(_Lines), reactor, codec=Delimited())
        replies = await gatherResults([client.request(b"line %d" % i) for i in range(200)])
        self.assertEqual(replies, [b"LINE %d" % i for i in range(200)])
        self.assertEqual(client.stats()["connectionsOpened"], 1)
        await client.close()

    async def test_lengthPrefixed(self) -> None:
        client = SockShareClientFactory(await self.serve(_Prefixed), reactor, codec=LengthPrefixed(4))
        payloads = [b"message %d " % i * (i % 7 + 1) for i in range(200)]
        replies = await gatherResults([client.request(p) for p in payloads])
        self.assertEqual(replies, [p[::-1] for p in payloads])
        self.assertEqual(client.stats()["connectionsOpened"], 1)
        await client.close()
