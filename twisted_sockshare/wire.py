"""
The wire format: how requests and responses become bytes, and back.

Every frame is::

    length:uint32 | requestId:uint32 | kind:uint8 | payload

big-endian, where C{length} counts the bytes after itself (C{5 + len(payload)}).
See C{docs/protocol.rst} for the full specification.
"""

from __future__ import annotations

import struct
from typing import Final

#: Frame kind sent by the client: a request for the server.
REQUEST: Final = 1
#: Frame kind sent by the server: the successful answer to a request.
RESPONSE: Final = 2
#: Frame kind sent by the server: the request failed; the payload is a UTF-8 message.
ERROR: Final = 3
#: Frame kind sent by the client: stop working on the request with this id
#: (empty payload); the server still answers it, once.
CANCEL: Final = 4
#: Frame kind sent by the server: send no new request on this connection
#: (request id 0, payload a UTF-8 reason); the ones sent are answered.
GOAWAY: Final = 5
#: Frame kind sent by either side: answer at once with a PONG carrying the
#: same request id (an opaque token) and payload (at most L{MAX_PING_PAYLOAD}).
PING: Final = 6
#: Frame kind sent by either side: the answer to a PING.
PONG: Final = 7

#: The largest payload of a PING (or PONG), in bytes.
MAX_PING_PAYLOAD: Final = 64

#: Kinds a client may receive, and kinds a server may receive.
CLIENT_RECEIVES: Final = frozenset({RESPONSE, ERROR, GOAWAY, PING, PONG})
SERVER_RECEIVES: Final = frozenset({REQUEST, CANCEL, PING, PONG})

_HEADER: Final = struct.Struct(">IIB")
#: Bytes of a frame before its payload.
HEADER_SIZE: Final = _HEADER.size
#: Smallest legal value of the C{length} field (an empty payload).
MIN_LENGTH: Final = HEADER_SIZE - 4
#: Largest request id; ids wrap around to 0 after it.
MAX_REQUEST_ID: Final = 0xFFFFFFFF

_LENGTH: Final = struct.Struct(">I")
_pack = _HEADER.pack
_unpackFrom = _HEADER.unpack_from

#: C{packHeader(length, requestId, kind)}: a frame's header; the payload
#: follows it (L{encodeFrame} does both).
packHeader: Final = _pack
#: C{unpackHeader(data, offset)}: C{(length, requestId, kind)}, the header
#: of the frame at C{offset} in C{data} (its payload follows it).
unpackHeader: Final = _unpackFrom


def encodeFrame(requestId: int, kind: int, payload: bytes) -> bytes:
    """
    Encode one frame.

    @param requestId: the request id, 0 to L{MAX_REQUEST_ID}.
    @param kind: one of the frame kinds (L{REQUEST} to L{PONG}).
    @param payload: the frame's payload.
    @return: the frame's bytes.
    """
    return _pack(MIN_LENGTH + len(payload), requestId, kind) + payload


class FrameDecoder:
    """
    Incremental decoder of a stream of frames.

    Complete frames are sliced straight out of the received chunk (one copy
    per payload).  An incomplete frame's bytes are kept as a list of chunks
    and joined once, when the header says they are all in, so neither many
    small frames nor one large frame arriving in many chunks cause quadratic
    copying.  A frame's length is checked as soon as its 4 bytes are in (its
    kind once the 9 header bytes are), so an impossible or oversized length
    is refused before anything more of that frame is buffered.

    @ivar violation: why the stream is invalid, once it is; L{None} while it
        is valid.  Once set, L{feed} decodes nothing more.
    @ivar idle: whether the decoder holds no byte and the stream is valid:
        the next byte starts a frame, so a reader may decode whole frames
        itself and give the decoder only the rest.
    """

    violation: str | None = None
    idle = True

    def __init__(self, maxPayload: int, kinds: frozenset[int]) -> None:
        """
        @param maxPayload: the largest payload accepted, in bytes.
        @param kinds: the frame kinds this side may receive.
        """
        self._maxLength = maxPayload + MIN_LENGTH
        self._maxPayload = maxPayload
        self._kinds = kinds
        # The start of an incomplete frame, in chunks; _buffered bytes in
        # all; nothing is decoded until _needed bytes are in.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 0

    @property
    def buffered(self) -> int:
        """
        How many received bytes wait for the rest of their frame.
        """
        return self._buffered

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """
        Decode what C{data} completes.

        @param data: the next bytes of the stream.
        @return: the complete frames, in order, as C{(requestId, kind,
            payload)}.  If the stream turns out to be invalid, the frames
            before the fault are returned and L{violation} is set.
        """
        chunks = self._chunks
        if chunks:
            if self.violation is not None:
                return []
            chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return []
            data = b"".join(chunks)
            chunks.clear()
        frames: list[tuple[int, int, bytes]] = []
        offset = 0
        end = len(data)
        maxLength = self._maxLength
        kinds = self._kinds
        while end - offset >= HEADER_SIZE:
            length, requestId, kind = _unpackFrom(data, offset)
            if length > maxLength or length < MIN_LENGTH or kind not in kinds:
                return self._violated(frames, self._describe(length, kind))
            stop = offset + 4 + length
            if stop > end:
                # The rest of this frame is still to come.
                self._keep(data[offset:], 4 + length)
                return frames
            frames.append((requestId, kind, data[offset + HEADER_SIZE : stop]))
            offset = stop
        if offset == end:
            self._buffered = 0
            self.idle = True
            return frames
        # A header cut short: check its length field as soon as it is in.
        if end - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > maxLength or length < MIN_LENGTH:
                return self._violated(frames, self._describe(length, REQUEST))
            self._keep(data[offset:], HEADER_SIZE)
        else:
            self._keep(data[offset:], 4)
        return frames

    def _keep(self, rest: bytes, needed: int) -> None:
        """
        Buffer C{rest}, the start of a frame: nothing is decoded until
        C{needed} bytes of it are in.
        """
        self._chunks.append(rest)
        self._buffered = len(rest)
        self._needed = needed
        self.idle = False

    def _violated(self, frames: list[tuple[int, int, bytes]], violation: str) -> list[tuple[int, int, bytes]]:
        """
        The stream is invalid: decode nothing more (L{feed} finds a chunk
        buffered, and the violation).
        """
        self.violation = violation
        self.idle = False
        self._chunks[:] = [b""]
        self._buffered = 0
        return frames

    def _describe(self, length: int, kind: int) -> str:
        if length < MIN_LENGTH:
            return f"frame length {length} is below the minimum of {MIN_LENGTH}"
        if length > self._maxLength:
            return f"frame announces a payload of {length - MIN_LENGTH} bytes, above maxPayload={self._maxPayload}"
        return f"unexpected frame kind {kind} (expected one of {sorted(self._kinds)})"


__all__ = [
    "REQUEST",
    "RESPONSE",
    "ERROR",
    "CANCEL",
    "GOAWAY",
    "PING",
    "PONG",
    "MAX_PING_PAYLOAD",
    "CLIENT_RECEIVES",
    "SERVER_RECEIVES",
    "HEADER_SIZE",
    "MIN_LENGTH",
    "MAX_REQUEST_ID",
    "encodeFrame",
    "packHeader",
    "unpackHeader",
    "FrameDecoder",
]
