"""
Tests of the wire format's encoder and incremental decoder.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare.wire import (
    CLIENT_RECEIVES,
    ERROR,
    HEADER_SIZE,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    FrameDecoder,
    encodeFrame,
)

frames = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([RESPONSE, ERROR]), st.binary(max_size=300)),
    max_size=20,
)


class EncodeTests(SynchronousTestCase):
    """
    L{encodeFrame} writes the pinned layout.
    """

    def test_layout(self) -> None:
        """length (5 + payload), id, kind, payload; big-endian."""
        self.assertEqual(
            encodeFrame(0x01020304, REQUEST, b"abc"),
            b"\x00\x00\x00\x08\x01\x02\x03\x04\x01abc",
        )

    def test_empty(self) -> None:
        """An empty payload gives length 5."""
        self.assertEqual(encodeFrame(7, ERROR, b""), struct.pack(">IIB", 5, 7, 3))


class DecoderTests(SynchronousTestCase):
    """
    L{FrameDecoder} decodes any chunking of a valid stream and stops at the
    first fault.
    """

    def test_oneByteAtATime(self) -> None:
        """Frames split at every byte decode the same."""
        stream = encodeFrame(1, RESPONSE, b"hello") + encodeFrame(2, ERROR, b"") + encodeFrame(3, RESPONSE, b"x")
        decoder = FrameDecoder(100, CLIENT_RECEIVES)
        out = []
        for i in range(len(stream)):
            out.extend(decoder.feed(stream[i : i + 1]))
        self.assertEqual(out, [(1, RESPONSE, b"hello"), (2, ERROR, b""), (3, RESPONSE, b"x")])
        self.assertEqual(decoder.buffered, 0)

    def test_idleOnlyOnAFrameBoundary(self) -> None:
        """idle: True before a stream and after each whole frame; False inside a frame and after a fault."""
        stream = encodeFrame(1, RESPONSE, b"hello")
        decoder = FrameDecoder(100, CLIENT_RECEIVES)
        self.assertTrue(decoder.idle)
        seen = []
        for i in range(len(stream)):
            decoder.feed(stream[i : i + 1])
            seen.append(decoder.idle)
        self.assertEqual(seen, [False] * (len(stream) - 1) + [True])
        decoder.feed(encodeFrame(2, RESPONSE, b"x" * 101))
        self.assertIsNotNone(decoder.violation)
        self.assertFalse(decoder.idle)

    def test_oversizedRefusedFromHeader(self) -> None:
        """A frame announcing more than maxPayload is refused before its payload is buffered."""
        decoder = FrameDecoder(10, SERVER_RECEIVES)
        header = struct.pack(">IIB", 5 + 2**31, 1, REQUEST)
        self.assertEqual(decoder.feed(header), [])
        self.assertIn("maxPayload=10", decoder.violation or "")
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decoder.feed(b"more"), [])

    def test_maxPayloadExactlyAccepted(self) -> None:
        """A payload of exactly maxPayload bytes is fine."""
        decoder = FrameDecoder(10, SERVER_RECEIVES)
        self.assertEqual(decoder.feed(encodeFrame(1, REQUEST, b"x" * 10)), [(1, REQUEST, b"x" * 10)])
        self.assertIsNone(decoder.violation)

    def test_shortLength(self) -> None:
        """A length below 5 is a violation."""
        decoder = FrameDecoder(10, SERVER_RECEIVES)
        decoder.feed(struct.pack(">IIB", 4, 1, REQUEST))
        self.assertIn("below the minimum", decoder.violation or "")

    def test_unknownKind(self) -> None:
        """A kind this side does not receive is a violation."""
        decoder = FrameDecoder(10, SERVER_RECEIVES)
        out = decoder.feed(encodeFrame(1, REQUEST, b"ok") + encodeFrame(2, RESPONSE, b"no"))
        self.assertEqual(out, [(1, REQUEST, b"ok")])
        self.assertIn("kind 2", decoder.violation or "")

    def test_largeFrameInChunks(self) -> None:
        """A large frame in many chunks is assembled once."""
        payload = bytes(range(256)) * 1024
        stream = encodeFrame(9, RESPONSE, payload) + encodeFrame(10, RESPONSE, b"tail")
        decoder = FrameDecoder(len(payload), CLIENT_RECEIVES)
        out = []
        for i in range(0, len(stream), 4096):
            out.extend(decoder.feed(stream[i : i + 4096]))
        self.assertEqual(out, [(9, RESPONSE, payload), (10, RESPONSE, b"tail")])

    @given(frames, st.lists(st.integers(1, 50), min_size=1))
    def test_anyChunking(self, frameList: list[tuple[int, int, bytes]], sizes: list[int]) -> None:
        """Any split of a valid stream decodes to the frames that were encoded."""
        stream = b"".join(encodeFrame(*f) for f in frameList)
        decoder = FrameDecoder(300, CLIENT_RECEIVES)
        out = []
        i = 0
        n = 0
        while i < len(stream):
            size = sizes[n % len(sizes)]
            out.extend(decoder.feed(stream[i : i + size]))
            i += size
            n += 1
        self.assertEqual(out, frameList)
        self.assertIsNone(decoder.violation)
        self.assertEqual(decoder.buffered, 0)

    @given(st.binary(max_size=2000), st.integers(0, 100))
    def test_randomBytes(self, data: bytes, maxPayload: int) -> None:
        """Random bytes never raise; the buffer never exceeds one maximal frame."""
        decoder = FrameDecoder(maxPayload, CLIENT_RECEIVES)
        for i in range(0, len(data), 7):
            for _requestId, kind, payload in decoder.feed(data[i : i + 7]):
                self.assertIn(kind, CLIENT_RECEIVES)
                self.assertLessEqual(len(payload), maxPayload)
            self.assertLess(decoder.buffered, HEADER_SIZE + maxPayload)
