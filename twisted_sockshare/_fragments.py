# -*- test-case-name: tests.test_fragments -*-
"""
Large messages in fragments (wire version 3, FRAGMENTS): the sending side
(L{Outbox}), which lets a large message leave a fragment at a time so the
small frames written meanwhile go out between its fragments, and the
receiving side (L{Reassembly}), which keeps the pieces of each message
until its last one comes.

Both are owned by a connection (the client's or the server's), which
decides what is large and what a violation costs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from .wire import FRAGMENT, HEADER_SIZE, MIN_LENGTH, packHeader, unpackHeader

#: The default C{fragmentSize}: HTTP/2's default DATA frame size.
DEFAULT_FRAGMENT_SIZE = 16_384
#: The payload bytes of large messages a connection writes per reactor
#: turn, in fragments (at least one): what Twisted reads from a socket at
#: once, so a large message on the shared connection gets the share of the
#: reactor it would get on a connection of its own.
TURN_BYTES = 65_536


class _Outgoing:
    """
    A message being sent: its frame, and how much of its payload is sent.
    """

    __slots__ = ("requestId", "kind", "frame", "offset")

    def __init__(self, requestId: int, kind: int, frame: bytes) -> None:
        self.requestId = requestId
        self.kind = kind
        self.frame = frame
        # The first byte of the payload not sent yet.
        self.offset = HEADER_SIZE


@implementer(IPushProducer)
class Outbox:
    """
    The large messages a connection is sending, each a fragment at a time.

    A turn writes fragments of the messages in turn, one fragment each
    time, up to L{TURN_BYTES}; the next turn waits for the reactor's next
    iteration, so what the connection writes meanwhile (small frames,
    written at once) waits behind at most one turn's fragments, not a whole
    message.  While the transport's buffer is
    full (L{pause}) no fragment is written: it is the transport's producer.

    @ivar queued: the bytes of payload not written yet.
    """

    queued = 0

    def __init__(
        self,
        clock: IReactorTime,
        write: Callable[[bytes], object],
        fragmentSize: int,
        sent: Callable[[], object] | None = None,
    ) -> None:
        """
        @param clock: schedules the turns.
        @param write: writes a fragment on the connection.
        @param fragmentSize: the payload bytes of a fragment.
        @param sent: called after each turn (the owner may read L{queued}).
        """
        self._clock = clock
        self._write = write
        self._size = fragmentSize
        self._sent = sent
        self._turns: deque[_Outgoing] = deque()
        self._byId: dict[int, _Outgoing] = {}
        #: The ids of the messages being sent (read it, do not change it).
        self.sending = self._byId
        self._call: IDelayedCall | None = None
        self._paused = False

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def backlog(self) -> int:
        """
        The payload bytes not written yet of every message but the oldest:
        what waits behind the message being sent.
        """
        if not self._byId:
            return 0
        oldest = next(iter(self._byId.values()))
        return self.queued - (len(oldest.frame) - oldest.offset)

    @property
    def paused(self) -> bool:
        """Whether it waits for L{resume}."""
        return self._paused

    def __contains__(self, requestId: int) -> bool:
        return requestId in self._byId

    def add(self, frame: bytes) -> None:
        """
        Send C{frame}, a whole frame whose payload is above the fragment
        size, in fragments: every one but the last a FRAGMENT with its id,
        the last one of the frame's own kind.
        """
        _, requestId, kind = unpackHeader(frame, 0)
        message = _Outgoing(requestId, kind, frame)
        self._turns.append(message)
        self._byId[requestId] = message
        self.queued += len(frame) - HEADER_SIZE
        self._schedule()

    def remove(self, requestId: int) -> bool | None:
        """
        Send no more of the message with C{requestId}.

        @return: L{None} if it is not here; else whether some of it was
            written (its receiver holds a part of it).
        """
        message = self._byId.pop(requestId, None)
        if message is None:
            return None
        self._turns.remove(message)
        self.queued -= len(message.frame) - message.offset
        if not self._turns and self._call is not None:
            self._call.cancel()
            self._call = None
        return message.offset > HEADER_SIZE

    def pause(self) -> None:
        """
        Write no fragment until L{resume}: the transport's buffer is full.
        """
        self._paused = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def resume(self) -> None:
        self._paused = False
        self._schedule()

    def stop(self) -> None:
        """
        The connection is gone: forget every message.
        """
        self.pause()
        self._turns.clear()
        self._byId.clear()
        self.queued = 0

    # IPushProducer: the transport says when its buffer is full.
    pauseProducing = pause
    resumeProducing = resume
    stopProducing = stop

    def _schedule(self) -> None:
        if self._call is None and self._turns and not self._paused:
            self._call = self._clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._call = None
        turns = self._turns
        size = self._size
        pieces: list[bytes] = []
        written = 0
        while turns and written < TURN_BYTES:
            message = turns.popleft()
            frame = message.frame
            start = message.offset
            left = len(frame) - start
            if left > size:
                stop = start + size
                pieces.append(packHeader(MIN_LENGTH + size, message.requestId, FRAGMENT))
                message.offset = stop
                turns.append(message)
            else:
                stop = len(frame)
                pieces.append(packHeader(MIN_LENGTH + left, message.requestId, message.kind))
                del self._byId[message.requestId]
            pieces.append(frame[start:stop])
            written += stop - start
        self.queued -= written
        self._schedule()
        self._write(b"".join(pieces))
        if self._sent is not None:
            self._sent()


class Reassembly:
    """
    The messages a connection is receiving in fragments, by request id:
    their pieces, joined once, when the last one comes (no copy of the
    whole message per fragment).
    """

    def __init__(self, limit: int, most: int) -> None:
        """
        @param limit: the largest payload of a message, in bytes.
        @param most: the most messages partly received at once.
        """
        self._limit = limit
        self._most = most
        self._pieces: dict[int, list[bytes]] = {}
        self._sizes: dict[int, int] = {}
        #: When each message's first fragment came (the owner's time).
        self.began: dict[int, float] = {}
        #: Bytes held, in every message.
        self.buffered = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def __contains__(self, requestId: int) -> bool:
        return requestId in self._pieces

    def add(self, requestId: int, piece: bytes, now: float = 0.0) -> str | None:
        """
        Keep C{piece}, a FRAGMENT's payload.

        @return: L{None}, or why this is a protocol violation.
        """
        pieces = self._pieces.get(requestId)
        if pieces is None:
            if len(self._pieces) >= self._most:
                return f"more than {self._most} messages in fragments at once"
            pieces = self._pieces[requestId] = []
            self._sizes[requestId] = 0
            self.began[requestId] = now
        size = self._sizes[requestId] + len(piece)
        if size > self._limit:
            return f"a message in fragments of more than {size} bytes, above maxPayload"
        pieces.append(piece)
        self._sizes[requestId] = size
        self.buffered += len(piece)
        return None

    def join(self, requestId: int, last: bytes) -> bytes:
        """
        The whole payload of the message with C{requestId}, whose last piece
        is C{last}; it is no longer held.
        """
        pieces = self._pieces.pop(requestId)
        self.buffered -= self._sizes.pop(requestId)
        del self.began[requestId]
        pieces.append(last)
        return b"".join(pieces)

    def discard(self, requestId: int) -> bool:
        """
        Forget the pieces of the message with C{requestId}, if any: whether
        there were.
        """
        if self._pieces.pop(requestId, None) is None:
            return False
        self.buffered -= self._sizes.pop(requestId)
        del self.began[requestId]
        return True

    def clear(self) -> None:
        self._pieces.clear()
        self._sizes.clear()
        self.began.clear()
        self.buffered = 0
