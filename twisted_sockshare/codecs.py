# -*- test-case-name: tests.test_codecs -*-
"""
Codecs: how requests become bytes and how replies are found in the bytes
that come back, kept apart from how the connection is shared.

A codec has three parts (L{Codec}): C{ordered}, whether replies come in
request order with no id on the wire (FIFO correlation); C{encodeRequest},
the bytes of one request; and C{decoder}, a new incremental decoder
(L{Decoder}) for each connection.  Three are shipped:

    - L{Multiplexed}: this project's framed format (ids, replies in any
      order) - the default;
    - L{Delimited}: one reply per line (C{b"\\r\\n"} by default), in order;
    - L{LengthPrefixed}: a big-endian length before each message, in order.

See C{docs/codecs.rst} for writing your own.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from .errors import InvalidRequest
from .wire import CLIENT_RECEIVES, ERROR, MIN_LENGTH, REQUEST, RESPONSE, FrameDecoder, packHeader

#: The request id an ordered decoder gives each reply: the reply belongs to
#: the oldest request outstanding.
NEXT: Final = -1


class Decoder(Protocol):
    """
    Finds replies in a connection's incoming bytes.

    @ivar violation: why the stream cannot be decoded, once it cannot
        (the connection is then dropped and its requests fail with
        C{ProtocolViolation}); L{None} while it is fine.
    @ivar buffered: bytes held while a reply is incomplete.
    """

    violation: str | None

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """
        Decode what C{data} completes.

        @return: the complete replies, in order, as C{(requestId, kind,
            payload)}: C{requestId} is L{NEXT} for an ordered codec, C{kind}
            is C{wire.RESPONSE} or C{wire.ERROR} (the request fails with
            C{RemoteError}, its message the payload).
        """


class Codec(Protocol):
    """
    How one protocol's requests and replies are written and read.

    @ivar ordered: replies come back in request order and carry no id: the
        n-th reply answers the n-th request still outstanding.
    """

    ordered: bool

    def encodeRequest(self, requestId: int, payload: bytes) -> bytes:
        """
        The bytes that send C{payload} as request C{requestId} (an ordered
        codec ignores the id).

        @raise InvalidRequest: if C{payload} cannot be sent with this codec.
        """

    def decoder(self, maxPayload: int) -> Decoder:
        """
        A new decoder for one connection, refusing replies above
        C{maxPayload} bytes.
        """


class Multiplexed:
    """
    This project's framed format (C{docs/protocol.rst}): every frame carries
    its request id, so replies may come in any order.
    """

    ordered = False

    def encodeRequest(self, requestId: int, payload: bytes) -> bytes:
        return packHeader(MIN_LENGTH + len(payload), requestId, REQUEST) + payload

    def decoder(self, maxPayload: int) -> FrameDecoder:
        return FrameDecoder(maxPayload, CLIENT_RECEIVES)


class _LineDecoder:
    def __init__(self, delimiter: bytes, maxLength: int, errorPrefix: bytes | None) -> None:
        self._delimiter = delimiter
        self._maxLength = maxLength
        self._errorPrefix = errorPrefix
        self._buffer = b""
        self.violation: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        if self.violation is not None:
            return []
        lines = (self._buffer + data).split(self._delimiter)
        self._buffer = lines.pop()
        replies = []
        for line in lines:
            if len(line) > self._maxLength:
                break
            error = self._errorPrefix is not None and line.startswith(self._errorPrefix)
            replies.append((NEXT, ERROR if error else RESPONSE, line))
        else:
            if len(self._buffer) <= self._maxLength:
                return replies
        self.violation = f"a reply line is longer than the maximum of {self._maxLength} bytes"
        self._buffer = b""
        return replies


class Delimited:
    """
    One request per line, one reply per line, replies in request order
    (many text protocols).  A payload must not contain the delimiter.
    """

    ordered = True

    def __init__(
        self, delimiter: bytes = b"\r\n", maxLineLength: int | None = None, errorPrefix: bytes | None = None
    ) -> None:
        """
        @param delimiter: what ends each request and reply.
        @param maxLineLength: the longest reply line accepted, without its
            delimiter; L{None}: the client's C{maxPayload}.
        @param errorPrefix: a reply line starting with this is an error
            reply (the request fails with C{RemoteError}), e.g. C{b"-"}
            for Redis.
        """
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        self.delimiter = delimiter
        self.maxLineLength = maxLineLength
        self.errorPrefix = errorPrefix

    def encodeRequest(self, requestId: int, payload: bytes) -> bytes:
        if self.delimiter in payload:
            raise InvalidRequest(f"the payload contains the delimiter {self.delimiter!r}")
        return payload + self.delimiter

    def decoder(self, maxPayload: int) -> _LineDecoder:
        limit = maxPayload if self.maxLineLength is None else min(self.maxLineLength, maxPayload)
        return _LineDecoder(self.delimiter, limit, self.errorPrefix)


class _PrefixDecoder:
    def __init__(self, prefix: struct.Struct, maxLength: int) -> None:
        self._prefix = prefix
        self._maxLength = maxLength
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 0
        self.violation: str | None = None

    @property
    def buffered(self) -> int:
        return self._buffered

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        if self.violation is not None:
            return []
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return []
            data = b"".join(self._chunks)
            self._chunks.clear()
        size = self._prefix.size
        replies: list[tuple[int, int, bytes]] = []
        offset, end, needed = 0, len(data), size
        while end - offset >= size:
            (length,) = self._prefix.unpack_from(data, offset)
            if length > self._maxLength:
                self.violation = f"a reply announces {length} bytes, above maxPayload={self._maxLength}"
                self._buffered = 0
                return replies
            stop = offset + size + length
            if stop > end:
                needed = size + length
                break
            replies.append((NEXT, RESPONSE, data[offset + size : stop]))
            offset = stop
        if offset < end:
            self._chunks.append(data[offset:])
            self._buffered, self._needed = end - offset, needed
        else:
            self._buffered = 0
        return replies


class LengthPrefixed:
    """
    Each request and reply is a big-endian unsigned length, then that many
    bytes; replies in request order.
    """

    ordered = True
    _formats: Final = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}

    def __init__(self, width: int = 4) -> None:
        """
        @param width: bytes of the length: 1, 2, 4 or 8.
        """
        if width not in self._formats:
            raise ValueError(f"width must be one of 1, 2, 4 or 8, not {width!r}")
        self._prefix = struct.Struct(self._formats[width])
        self.width = width

    def encodeRequest(self, requestId: int, payload: bytes) -> bytes:
        if len(payload) >= 1 << (8 * self.width):
            raise InvalidRequest(f"a payload of {len(payload)} bytes does not fit a {self.width}-byte length")
        return self._prefix.pack(len(payload)) + payload

    def decoder(self, maxPayload: int) -> _PrefixDecoder:
        return _PrefixDecoder(self._prefix, maxPayload)


__all__ = ["Codec", "Decoder", "Multiplexed", "Delimited", "LengthPrefixed", "InvalidRequest", "NEXT"]
