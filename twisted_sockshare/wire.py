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
#: Frame kind sent by the client, to a server whose HELLO announced
#: L{DEADLINES}: a request carrying its caller's remaining budget (the
#: payload is the budget, L{packBudget}, then the request's bytes).
TIMED_REQUEST: Final = 8
#: Frame kind sent by the server, to a client whose HELLO announced
#: L{REFUSALS}: the request with this id was not handed to the handler and
#: may be sent again anywhere (the payload is a UTF-8 reason).
REFUSED: Final = 9
#: Frame kind sent by either side, to a peer whose HELLO announced
#: L{FRAGMENTS}: a piece of the message with this request id other than its
#: last; the last piece is the message's own frame (REQUEST, TIMED_REQUEST,
#: RESPONSE or ERROR), and the message's payload is every piece's, in order.
FRAGMENT: Final = 10

#: The largest payload of a PING (or PONG), in bytes.
MAX_PING_PAYLOAD: Final = 64

#: Kinds a client may receive, and kinds a server may receive.
CLIENT_RECEIVES: Final = frozenset({RESPONSE, ERROR, GOAWAY, PING, PONG, REFUSED, FRAGMENT})
SERVER_RECEIVES: Final = frozenset({REQUEST, CANCEL, PING, PONG, TIMED_REQUEST, FRAGMENT})

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


# -- Version 3: announcements (HELLO) and budgets ---------------------------------

#: The version of the wire format this code speaks.
WIRE_VERSION: Final = 3
#: How a PING's payload starts when it is a HELLO (then the version, then the
#: features) or a DEADLINE note (then a budget).
HELLO_MAGIC: Final = b"\x00sockshare\x00"
NOTE_MAGIC: Final = b"\x00deadline\x00"
#: Features a HELLO may announce: C{(id, value)}, an unknown id is skipped.
#: DEADLINES: the client sends budgets; the server takes TIMED_REQUEST.
DEADLINES: Final = 1
#: REFUSALS: the client takes REFUSED; the server may send it.
REFUSALS: Final = 2
#: MAX_IN_FLIGHT (server): how many requests of one connection it handles
#: at once (uint32).
MAX_IN_FLIGHT: Final = 3
#: MAX_PAYLOAD (either side): the largest payload it accepts (uint32).
MAX_PAYLOAD: Final = 4
#: FRAGMENTS (either side): it takes messages in FRAGMENT frames.
FRAGMENTS: Final = 5
#: The largest budget, in milliseconds (about 49 days).
MAX_BUDGET_MS: Final = 0xFFFFFFFF

_FEATURE: Final = struct.Struct(">BB")
_UINT32: Final = struct.Struct(">I")
_TIMED: Final = struct.Struct(">IIBI")
#: Bytes a budget takes before a TIMED_REQUEST's request bytes.
BUDGET_SIZE: Final = _UINT32.size


class Hello:
    """
    What one side of a connection announces in its HELLO.

    @ivar version: the highest wire version it speaks.
    @ivar deadlines: it sends (client) or honours (server) budgets.
    @ivar refusals: it takes (client) or may send (server) REFUSED.
    @ivar maxInFlight: how many requests of a connection the server handles
        at once, if announced.
    @ivar maxPayload: the largest payload the sender accepts, if announced.
    @ivar fragments: it takes messages in fragments (L{FRAGMENT}).
    """

    __slots__ = ("version", "deadlines", "refusals", "maxInFlight", "maxPayload", "fragments")

    def __init__(
        self,
        version: int = WIRE_VERSION,
        deadlines: bool = False,
        refusals: bool = False,
        maxInFlight: int | None = None,
        maxPayload: int | None = None,
        fragments: bool = False,
    ) -> None:
        self.version = version
        self.deadlines = deadlines
        self.refusals = refusals
        self.maxInFlight = maxInFlight
        self.maxPayload = maxPayload
        self.fragments = fragments

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Hello({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hello):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def encode(self) -> bytes:
        """
        The payload of the PING that announces this.
        """
        parts = [HELLO_MAGIC, bytes([self.version])]
        if self.deadlines:
            parts.append(_FEATURE.pack(DEADLINES, 0))
        if self.refusals:
            parts.append(_FEATURE.pack(REFUSALS, 0))
        if self.maxInFlight is not None:
            parts.append(_FEATURE.pack(MAX_IN_FLIGHT, 4) + _UINT32.pack(self.maxInFlight))
        if self.maxPayload is not None:
            parts.append(_FEATURE.pack(MAX_PAYLOAD, 4) + _UINT32.pack(self.maxPayload))
        if self.fragments:
            parts.append(_FEATURE.pack(FRAGMENTS, 0))
        return b"".join(parts)


def parseHello(payload: bytes) -> Hello | str:
    """
    Read a HELLO's payload (one that starts with L{HELLO_MAGIC}).

    @return: the announcement, or why it is malformed (a protocol
        violation).
    """
    offset = len(HELLO_MAGIC)
    if len(payload) <= offset:
        return "a HELLO without a version"
    hello = Hello(version=payload[offset], deadlines=False, refusals=False)
    offset += 1
    end = len(payload)
    while offset < end:
        if end - offset < _FEATURE.size:
            return "a HELLO feature cut short"
        feature, size = _FEATURE.unpack_from(payload, offset)
        offset += _FEATURE.size
        if end - offset < size:
            return f"a HELLO feature {feature} announces {size} bytes, {end - offset} are left"
        value = payload[offset : offset + size]
        offset += size
        if feature == DEADLINES:
            hello.deadlines = True
        elif feature == REFUSALS:
            hello.refusals = True
        elif feature == FRAGMENTS:
            hello.fragments = True
        elif feature in (MAX_IN_FLIGHT, MAX_PAYLOAD):
            if size != 4:
                return f"a HELLO feature {feature} of {size} bytes, not 4"
            (number,) = _UINT32.unpack(value)
            if feature == MAX_IN_FLIGHT:
                if number == 0:
                    return "a HELLO announcing maxInFlight=0"
                hello.maxInFlight = number
            else:
                hello.maxPayload = number
        # Any other feature is a later version's: skipped.
    return hello


def budgetMilliseconds(seconds: float) -> int:
    """
    A remaining budget as sent: whole milliseconds, rounded up (a budget
    that is not spent is never sent as 0; a whole number of milliseconds
    gains one), at most L{MAX_BUDGET_MS}; 0 if it is spent.
    """
    if seconds <= 0:
        return 0
    milliseconds = int(seconds * 1000) + 1
    return milliseconds if milliseconds < MAX_BUDGET_MS else MAX_BUDGET_MS


#: C{packTimedHeader(length, requestId, TIMED_REQUEST, budget)}: a
#: TIMED_REQUEST's header and budget; the request's bytes follow.
packTimedHeader: Final = _TIMED.pack


def encodeTimedRequest(requestId: int, budget: int, payload: bytes) -> bytes:
    """
    A TIMED_REQUEST frame: C{payload} with C{budget} milliseconds left.
    """
    return _TIMED.pack(MIN_LENGTH + BUDGET_SIZE + len(payload), requestId, TIMED_REQUEST, budget) + payload


def encodeNote(requestId: int, budget: int) -> bytes:
    """
    A DEADLINE note: the PING that carries the budget of the REQUEST with
    the same id sent right after it, before the server's HELLO is known.
    """
    return encodeFrame(requestId, PING, NOTE_MAGIC + _UINT32.pack(budget))


def parseBudget(data: bytes, offset: int) -> int:
    """
    The budget, in milliseconds, at C{offset} of C{data}.
    """
    return _UINT32.unpack_from(data, offset)[0]


def encodeFrame(requestId: int, kind: int, payload: bytes) -> bytes:
    """
    Encode one frame.

    @param requestId: the request id, 0 to L{MAX_REQUEST_ID}.
    @param kind: one of the frame kinds (L{REQUEST} to L{REFUSED}).
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

    def __init__(self, maxPayload: int, kinds: frozenset[int], allowance: int = 0) -> None:
        """
        @param maxPayload: the largest payload accepted, in bytes.
        @param kinds: the frame kinds this side may receive.
        @param allowance: bytes a frame may carry beyond C{maxPayload} (a
            TIMED_REQUEST's budget); the reader checks each kind's own limit.
        """
        self._maxLength = maxPayload + MIN_LENGTH
        self._allowance = allowance
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
                allowed = maxLength + self._allowance
                if not (kind == TIMED_REQUEST and kind in kinds and MIN_LENGTH <= length <= allowed):
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
            if length > maxLength + self._allowance or length < MIN_LENGTH:
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
        if length > self._maxLength + (self._allowance if kind == TIMED_REQUEST else 0):
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
    "TIMED_REQUEST",
    "REFUSED",
    "FRAGMENT",
    "WIRE_VERSION",
    "HELLO_MAGIC",
    "NOTE_MAGIC",
    "DEADLINES",
    "REFUSALS",
    "MAX_IN_FLIGHT",
    "MAX_PAYLOAD",
    "FRAGMENTS",
    "MAX_BUDGET_MS",
    "BUDGET_SIZE",
    "Hello",
    "parseHello",
    "budgetMilliseconds",
    "encodeTimedRequest",
    "packTimedHeader",
    "encodeNote",
    "parseBudget",
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
