# -*- test-case-name: tests.test_connection -*-
"""
One connection of a shared client: it owns its state, the table of requests
outstanding on it, the matching of replies to them, and failing them all.

The connection tells its client only what the client needs: a request was
answered or failed, the connection stopped taking requests, the connection
is gone.  It never reads the client's counters, and the client never reads
its table.
"""

from __future__ import annotations

import socket
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any
from typing import Protocol as _Interface

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._fragments import Outbox, Reassembly
from ._lifecycle import CONNECTION
from ._liveness import _Liveness
from ._nodelay import setNoDelay
from ._sendnow import canSendNow, sendNow
from .codecs import NEXT, Multiplexed
from .errors import ConnectFailed, ConnectionDropped, PayloadTooLarge, ProtocolViolation, _codecRefusal
from .wire import (
    BUDGET_SIZE,
    CANCEL,
    ERROR,
    FRAGMENT,
    GOAWAY,
    HEADER_SIZE,
    HELLO_MAGIC,
    MAX_BUDGET_MS,
    MAX_PING_PAYLOAD,
    MAX_REQUEST_ID,
    MIN_LENGTH,
    PING,
    PONG,
    REFUSED,
    REQUEST,
    RESPONSE,
    TIMED_REQUEST,
    FrameDecoder,
    Hello,
    budgetMilliseconds,
    encodeFrame,
    encodeNote,
    packHeader,
    packTimedHeader,
    parseHello,
    unpackHeader,
)

if TYPE_CHECKING:
    from ._request import _Request
    from .options import ClientOptions

_log = Logger(namespace="twisted_sockshare.connection")

#: The kinds of frame that answer a request.
_REPLIES = frozenset({RESPONSE, ERROR})

#: How requests are written, besides the default frames (C{_encode} L{None})
#: and a codec's own: with a DEADLINE note before each, until the server's
#: first bytes tell its version; or as wire version 3 has them (budgets,
#: the server's maxPayload).
_NOTED = "noted"
_V3 = "v3"
_TIMED = "timed"
#: No announced limit on the requests outstanding on a connection.
_UNLIMITED = 1 << 62
#: How many requests a connection writes before the server's first frame
#: says which version it speaks (and, for version 3, its limit), as HTTP/2
#: assumes 100 concurrent streams until the server's SETTINGS: a burst on a
#: fresh connection waits one round trip beyond it, never more.
INITIAL_WINDOW = 100
#: The most a connection reads at once from a server that sends fragments
#: (Twisted's transports read 64 KiB by default): several turns of the
#: server's fragments (L{twisted_sockshare._fragments.TURN_BYTES}), and the
#: small replies written between them.
READ_SIZE = 262_144


class ConnectionState(Enum):
    """
    The life of one connection, in order; a connection never goes back.
    """

    #: Takes new requests (the client's one usable connection, or about to be).
    LIVE = "live"
    #: Takes no new requests (too old, too many orphans, or the client is
    #: closing); answers the ones it has, then closes by itself.
    RETIRING = "retiring"
    #: Its close has begun (graceful, or aborted); nothing more is written.
    #: Replies still arriving find no request and count as late.
    CLOSING = "closing"
    #: C{connectionLost} has run.
    LOST = "lost"


LIVE = ConnectionState.LIVE
RETIRING = ConnectionState.RETIRING
CLOSING = ConnectionState.CLOSING
LOST = ConnectionState.LOST


class ConnectionOwner(_Interface):
    """
    What a connection tells its client.
    """

    endpointDescription: str
    #: Whether to log each connection's life (debug level).
    noisy: bool

    def requestAnswered(self, request: _Request, kind: int, payload: bytes, now: float) -> None:
        """
        A reply of C{kind} (C{RESPONSE} or C{ERROR}) came for C{request}, in
        a chunk received at C{now} (the client's clock; 0 unless the client
        counts latency, C{latencyHistogram}).
        """

    def requestFailed(self, request: _Request, error: BaseException) -> None:
        """C{request} failed with C{error} and is no longer on the connection."""

    def requestLost(self, request: _Request, error: BaseException, graceful: bool) -> None:
        """
        C{request} was written on a connection the server closed (cleanly
        after sending something, if C{graceful}) without answering it: the
        client fails it with C{error}, or sends it again.
        """

    def requestRefused(self, request: _Request, reason: str) -> None:
        """
        The server refused C{request} (REFUSED): its handler was not called,
        and it may be sent again anywhere.
        """

    def requestUnsent(self, request: _Request, payload: bytes) -> None:
        """
        C{request}, held by the connection within the server's announced
        C{maxInFlight}, was never written; the connection stops taking
        requests: send it elsewhere.
        """

    def connectionFull(self, connection: SockShareClientProtocol, why: str) -> None:
        """
        C{connection} takes no new request (C{why}: C{"requests"}, it has
        written C{maxRequestsPerConnection}; C{"ids"}, every request id of
        the codec is held): it is to be retired.
        """

    def lateReply(self) -> None:
        """A reply came for a request no longer waited for."""

    def connectionUnusable(self, connection: SockShareClientProtocol) -> None:
        """C{connection} takes no new requests from now on."""

    def goawayReceived(self, connection: SockShareClientProtocol, reason: str) -> None:
        """C{connection} received GOAWAY; it retires right after."""

    def connectionGone(self, connection: SockShareClientProtocol, tlsFailed: bool) -> None:
        """
        C{connection} was lost (C{tlsFailed}: its TLS handshake failed); its
        requests are failed right after.
        """


class _Peer:
    """
    What the server of a connection announced (wire version 3), and what
    follows for the requests sent to it.

    @ivar hello: its HELLO, once read.
    @ivar limit: the most requests outstanding at once (L{INITIAL_WINDOW}
        until its first frame).
    @ivar limited: whether there is such a limit (the connection's C{send}
        is then L{SockShareClientProtocol._sendWithin}).
    @ivar budgets: whether requests carry their budget (until the first
        frame: in notes).
    @ivar maxPayload: the largest request payload it takes.
    @ivar requestTimeout: the client's.
    @ivar fullBudget: a whole C{requestTimeout}, as sent (0: none).
    @ivar fragments: the request payloads above this size are sent in
        fragments (it takes them, FRAGMENTS); L{_UNLIMITED}: none is.
    @ivar inline: the largest payload the inline path of C{send} writes:
        at most C{maxPayload}, and C{fragments}.
    @ivar outbox: the large requests being sent, once there was one.
    """

    __slots__ = (
        "hello", "limit", "limited", "budgets", "maxPayload", "requestTimeout", "fullBudget", "fragments", "inline",
        "outbox",
    )  # fmt: skip

    def __init__(self, requestTimeout: float | None) -> None:
        self.hello: Hello | None = None
        self.limit = _UNLIMITED
        self.limited = False
        self.budgets = True
        self.maxPayload = _UNLIMITED
        self.requestTimeout = requestTimeout
        self.fullBudget = 0 if requestTimeout is None else budgetMilliseconds(requestTimeout)
        self.fragments = _UNLIMITED
        self.inline = _UNLIMITED
        self.outbox: Outbox | None = None


class SockShareClientProtocol(Protocol):
    """
    One connection of a L{twisted_sockshare.SockShareClientFactory}: writes
    request frames and matches reply frames to the requests outstanding on it.

    @ivar state: where the connection is in its life (L{ConnectionState}).
    @ivar openedAt: when it was made, on the client's clock.
    @ivar orphans: ids held by requests that timed out or were cancelled
        here, until their reply comes.
    """

    state = LIVE
    openedAt = 0.0
    orphans = 0
    #: How many chunks came from the server: a request remembers the count
    #: when written, so its timeout can tell whether anything came since.
    _chunks = 0
    _abortCall: IDelayedCall | None = None
    #: Whether what the replies' callbacks write is sent at once (L{sendNow}).
    _sendsNow = False

    def __init__(self, owner: ConnectionOwner, options: ClientOptions, clock: IReactorTime) -> None:
        """
        @param owner: the client this connection reports to.
        @param options: the client's options.
        @param clock: the client's clock, for the close timeout.
        """
        codec = options.codec
        assert codec is not None
        self._owner = owner
        self._options = options
        self._clock = clock
        #: The latest time the client gave (before it sends requests that
        #: may have waited): how much of a request's budget is left.
        self.now = 0.0
        self._decoder = codec.decoder(options.maxPayload)
        self._ordered = codec.ordered
        # None: the default frames, encoded inline; an ordered codec's
        # requests arrive encoded already.
        self._encode: Any = None if type(codec) is Multiplexed else _asEncoded if codec.ordered else codec.encodeRequest
        # Control frames (CANCEL, PING, PONG) exist in this project's frames
        # only.
        self._controls = type(codec) is Multiplexed
        # This project's decoder, whose frames dataReceived decodes itself
        # when they are the common case (whole replies).
        self._frames = self._decoder if isinstance(self._decoder, FrameDecoder) and not codec.ordered else None
        self._maxLength = options.maxPayload + MIN_LENGTH
        self._liveness = _Liveness(
            self, clock, options.pingInterval, options.pingTimeout, self._write, self._presumedDead
        )
        self._timed = options.latencyHistogram
        # Requests by id, in the order written.  With an ordered codec a
        # forgotten request keeps its slot (None) until its reply comes.
        self._table: dict[int, _Request | None] = {}
        self._nextId = 0
        # The largest request id: the codec's (maxRequestId), where ids are
        # on the wire.
        self._maxId: int = MAX_REQUEST_ID if codec.ordered else getattr(codec, "maxRequestId", MAX_REQUEST_ID)
        # Writes left before the connection may be full: of the requests
        # allowed (maxRequestsPerConnection), or of the ids free.  The
        # request path counts this one number down; _checkFull, at zero,
        # tells which it is.  None: it can never be full (no cap, and ids
        # of 32 bits: more than any table holds), and nothing is counted.
        self._requestsLeft = options.maxRequestsPerConnection
        freeIds = self._maxId + 1
        self._writesLeft: int | None = None
        self._writesCounted = 0
        if self._requestsLeft is not None or self._maxId < MAX_REQUEST_ID:
            self._writesLeft = self._writesCounted = min(self._requestsLeft or freeIds, freeIds)
        # Wire version 3 (this project's frames only): what the server
        # announced (in an object of its own: a protocol with more than 30
        # attributes reads every one of them slower); the requests held here,
        # in order, beyond the number it handles at once.
        self._peer = _Peer(options.requestTimeout)
        self._held: deque[tuple[_Request, bytes]] = deque()
        if self._controls:
            # Until the server's first frame says which version it speaks,
            # a request's budget goes in a note before it, and at most
            # INITIAL_WINDOW requests are written.
            self._encode = _NOTED
            self._setLimit(INITIAL_WINDOW)
        # While replies are being delivered, the requests their callbacks
        # send are collected here and written at once.
        self._batch: list[bytes] | None = None
        # The replies partly received, in fragments (None: none is).
        self._pieces: Reassembly | None = None

    def __repr__(self) -> str:
        return f"<SockShareClientProtocol {self.state.value} outstanding={len(self._table)}>"

    @property
    def received(self) -> bool:
        """
        Whether any byte came from the server.
        """
        return self._chunks > 0

    @property
    def chunksReceived(self) -> int:
        """
        How many chunks of bytes came from the server.
        """
        return self._chunks

    @property
    def hello(self) -> Hello | None:
        """
        What the server announced in its HELLO (wire version 3), or L{None}:
        not yet, or it speaks version 2.
        """
        return self._peer.hello

    @property
    def outstanding(self) -> int:
        """
        How many requests wait for a reply on this connection (with an
        ordered codec, forgotten ones whose reply is still due included).
        """
        return len(self._table)

    def connectionMade(self) -> None:
        self.openedAt = self.now = self._clock.seconds()
        if self._controls:
            # Wire version 3: announce what this client does, first.  A
            # version 2 server echoes it in a PONG; a version 3 one reads it.
            hello = _clientHello(self._options.maxPayload, self._options.fragmentSize is not None)
            self.transport.write(encodeFrame(0, PING, hello))  # type: ignore[union-attr]
        self._sendsNow = canSendNow(self.transport)
        setNoDelay(self.transport)
        if self._options.keepAlive is not None:
            _enableKeepAlive(self.transport, self._options.keepAlive)
        if self._controls:
            self._liveness.start()

    # -- Requests: the hot path ----------------------------------------------

    def send(self, request: _Request, payload: bytes) -> None:
        """
        Write C{request} with an id not outstanding here.  Only a L{LIVE}
        connection is given requests.  If the codec cannot encode it, the
        request fails alone (L{InvalidRequest}) and is not written.
        """
        table = self._table
        encode = self._encode
        if encode is _TIMED and len(table) >= self._peer.limit:
            self._sendWithin(request, payload)  # it waits here
            return
        requestId = self._nextId
        maxId = self._maxId
        while requestId in table:
            requestId = requestId + 1 if requestId < maxId else 0
        self._nextId = requestId + 1 if requestId < maxId else 0
        if encode is None:
            frame = packHeader(MIN_LENGTH + len(payload), requestId, REQUEST) + payload
        elif encode is _TIMED and len(payload) <= self._peer.inline:
            # A server of wire version 3: the request carries its budget.
            # Made just now (after the last time the client said what time it
            # is) with the client's requestTimeout, all of it is left.
            budget = self._peer.fullBudget
            if request.extra is None and request.sentAt >= self.now and budget:
                frame = packTimedHeader(MIN_LENGTH + BUDGET_SIZE + len(payload), requestId, TIMED_REQUEST, budget)
                frame += payload
            else:
                frame = self._versioned(request, requestId, payload)
        elif encode is _TIMED or encode is _V3 or encode is _NOTED:
            frame = self._versioned(request, requestId, payload)
            if not frame:
                return
            if len(payload) > self._peer.fragments:
                self._sendLarge(request, requestId, payload, frame)
                return
        else:
            try:
                frame = encode(requestId, payload)
            except Exception as error:
                # The codec refused it: it fails alone, and never was here.
                self._owner.requestFailed(request, _codecRefusal(error))
                return
        request.requestId = requestId
        request.connection = self
        request.mark = self._chunks
        if encode is not None and self._controls:
            # Kept to send it again if a server of version 3 refuses it.
            request.payload = payload
        table[requestId] = request
        batch = self._batch
        if batch is not None:
            batch.append(frame)
        else:
            self.transport.write(frame)  # type: ignore[union-attr]
        countdown = self._writesLeft
        if countdown is not None:
            countdown -= 1
            self._writesLeft = countdown
            if countdown == 0:
                self._checkFull()

    def _sendLarge(self, request: _Request, requestId: int, payload: bytes, frame: bytes) -> None:
        """
        L{send}, for a request above the server's fragment size: its
        C{frame} leaves a fragment at a time (L{Outbox}), and the requests
        written meanwhile go out between its fragments.
        """
        request.requestId = requestId
        request.connection = self
        request.mark = self._chunks
        request.payload = payload
        self._table[requestId] = request
        peer = self._peer
        if peer.outbox is None:
            size = self._options.fragmentSize
            assert size is not None
            peer.outbox = Outbox(self._clock, self._writeFragment, size)
            # The transport says when its buffer is full: no fragment then.
            self.transport.registerProducer(peer.outbox, True)  # type: ignore[union-attr]
        peer.outbox.add(frame)
        if self._writesLeft is not None:
            self._writesLeft -= 1
            if self._writesLeft == 0:
                self._checkFull()

    def _writeFragment(self, fragment: bytes) -> None:
        if self._sendsNow:
            sendNow(self.transport, fragment)
        else:
            self.transport.write(fragment)  # type: ignore[union-attr]

    def _sendWithin(self, request: _Request, payload: bytes) -> None:
        """
        L{send}, within a limit on the requests outstanding (the server's
        C{maxInFlight}, or L{INITIAL_WINDOW} until its first frame): beyond
        it the request waits here, in order.  While there is a limit, it is
        this connection's C{send}; otherwise the request path pays nothing.
        """
        if len(self._table) >= self._peer.limit:
            # The attributes in the order send() sets them (_shareInstanceKeys).
            request.requestId = -1
            request.connection = self
            request.mark = self._chunks
            self._held.append((request, payload))
            return
        SockShareClientProtocol.send(self, request, payload)

    def _setLimit(self, limit: int | None, inline: bool = False) -> None:
        """
        Keep at most C{limit} requests outstanding (L{None}: any number):
        through L{_sendWithin}, unless the C{_TIMED} path of L{send} checks
        it itself (C{inline}).
        """
        peer = self._peer
        if inline:
            peer.limit = _UNLIMITED if limit is None else limit
            limit = None
        # Not through __dict__: reading it costs every later attribute read
        # of this connection (CPython stores attributes without a dict until
        # then).
        if limit is None:
            if not inline:
                peer.limit = _UNLIMITED
            if peer.limited:
                del self.send
        else:
            peer.limit = limit
            if not peer.limited:
                self.send = self._sendWithin  # type: ignore[method-assign]
        peer.limited = limit is not None

    def _versioned(self, request: _Request, requestId: int, payload: bytes) -> bytes:
        """
        C{request}'s frame with its budget, if it has a timeout: a
        TIMED_REQUEST to a server that takes them, or a DEADLINE note then a
        REQUEST while the server's version is unknown.  It keeps the payload,
        to send it again if the server refuses it.  A payload above the
        server's announced C{maxPayload} fails alone (L{PayloadTooLarge}):
        then C{b""}.
        """
        peer = self._peer
        if len(payload) > peer.maxPayload:
            error = PayloadTooLarge(
                f"payload of {len(payload)} bytes exceeds the server's maxPayload={peer.maxPayload} "
                "(announced in its HELLO)"
            )
            self._owner.requestFailed(request, error)
            return b""
        extra = request.extra
        timeout = peer.requestTimeout if extra is None or extra.timeout is None else extra.timeout
        if timeout is None or not peer.budgets:
            return packHeader(MIN_LENGTH + len(payload), requestId, REQUEST) + payload
        # What is left at self.now, the latest time the client gave, which
        # may be a little earlier than now: a budget may be overstated, never
        # understated (the client still times the request out itself).
        left = request.sentAt + timeout - max(self.now, request.sentAt)
        # Whole milliseconds, rounded up (as wire.budgetMilliseconds).
        budget = int(left * 1000) + 1 if left > 0 else 0
        if budget > MAX_BUDGET_MS:
            budget = MAX_BUDGET_MS
        if self._encode is _NOTED:
            return encodeNote(requestId, budget) + packHeader(MIN_LENGTH + len(payload), requestId, REQUEST) + payload
        return packTimedHeader(MIN_LENGTH + BUDGET_SIZE + len(payload), requestId, TIMED_REQUEST, budget) + payload

    def _release(self) -> None:
        """
        Write the requests held here while the server has room for them.
        """
        held = self._held
        table = self._table
        self.now = self._clock.seconds()
        while held and len(table) < self._peer.limit and self.state is LIVE:
            request, payload = held.popleft()
            if not request.called:  # a timeout or cancel left it here
                self.send(request, payload)

    def _handOver(self) -> None:
        """
        The connection takes no new request: the held ones, never written,
        go elsewhere.
        """
        held, self._held = self._held, deque()
        resend = self._owner.requestUnsent
        for request, payload in held:
            if not request.called:
                request.connection = None
                resend(request, payload)

    def _greeted(self, payload: bytes) -> None:
        """
        The server's HELLO: it speaks wire version 3 (or later).
        """
        hello = parseHello(payload)
        if isinstance(hello, str):
            self._violated(hello)
            return
        peer = self._peer
        peer.hello = hello
        peer.budgets = hello.deadlines
        if hello.maxPayload is not None:
            peer.maxPayload = hello.maxPayload
        if hello.fragments and self._options.fragmentSize is not None:
            peer.fragments = self._options.fragmentSize
        if hello.fragments and getattr(self.transport, "bufferSize", READ_SIZE) < READ_SIZE:
            # What a Twisted transport reads at once: a server's turn of
            # fragments and the replies written with it, in one read.
            self.transport.bufferSize = READ_SIZE  # type: ignore[union-attr]
        peer.inline = min(peer.maxPayload, peer.fragments)
        # A server that takes neither budgets nor REFUSED nor fragments,
        # with no smaller limit on payloads, gets the default frames; one
        # that takes budgets and REFUSED (this project's), the inline path of
        # send(), which keeps within its limit itself.
        plain = (
            not (hello.deadlines or hello.refusals)
            and peer.maxPayload >= self._options.maxPayload
            and peer.fragments == _UNLIMITED
        )
        self._encode = encode = None if plain else _TIMED if hello.deadlines and hello.refusals else _V3
        self._setLimit(hello.maxInFlight, inline=encode is _TIMED)

    def _checkFull(self) -> None:
        """
        The countdown of writes reached zero: retire the connection if it
        wrote its C{maxRequestsPerConnection}, or if every id is held (a
        request whose id is still held takes one more); else count down to
        the next moment it could be.
        """
        if self._requestsLeft is not None:
            self._requestsLeft -= self._writesCounted
        freeIds = self._maxId + 1 - len(self._table)
        if self._requestsLeft == 0:
            self._owner.connectionFull(self, "requests")
        elif freeIds <= 0:
            self._owner.connectionFull(self, "ids")
        else:
            self._writesLeft = self._writesCounted = min(self._requestsLeft or freeIds, freeIds)

    def dataReceived(self, data: bytes) -> None:
        self._chunks += 1
        if self._liveness.waiting is not None:  # any byte answers a PING
            self._liveness.heard()
        # One reading serves every reply in the chunk, if latency is counted.
        now = self._clock.seconds() if self._timed else 0.0
        # What the replies' callbacks write is collected, and written in one
        # go after the chunk: at once, on a socket of the reactor's own.
        batch: list[bytes] = []
        self._batch = batch
        try:
            decoder = self._frames
            if decoder is not None and decoder.idle and self._encode is not _NOTED:
                # The common case, decoded here: whole replies to requests
                # outstanding here, and fragments of others.  Anything else,
                # from the first frame that is not one, goes to the decoder.
                table = self._table
                settle = self._owner.requestAnswered
                maxLength = self._maxLength
                pieces = self._pieces
                # The requests still being sent, in fragments: a reply to
                # one (a server that did not wait for its end) goes to
                # _deliver, which stops sending it.
                outbox = self._peer.outbox
                sending = outbox.sending if outbox is not None else None
                offset = 0
                end = len(data)
                while end - offset >= HEADER_SIZE:
                    length, requestId, kind = unpackHeader(data, offset)
                    stop = offset + 4 + length
                    if stop > end or length > maxLength or length < MIN_LENGTH or kind not in _REPLIES:
                        if kind != FRAGMENT or stop > end or length > maxLength or length < MIN_LENGTH:
                            break
                        self._fragment(requestId, data[offset + HEADER_SIZE : stop])
                        if not self.usable:
                            return
                        pieces = self._pieces
                        offset = stop
                        continue
                    if (pieces is not None and requestId in pieces) or (sending and requestId in sending):
                        break  # the last piece of a reply in fragments, or a request being sent
                    request = table.pop(requestId, None)
                    if request is None:
                        break
                    settle(request, kind, data[offset + HEADER_SIZE : stop], now)
                    offset = stop
                if offset == end:
                    return
                data = data[offset:]
            frames = self._decoder.feed(data)
            if frames:
                self._deliver(frames, now)
        finally:
            if self._held:
                self._release()
            self._batch = None
            # If the connection was reset meanwhile, the requests in the
            # batch were failed with it: their frames are not written.
            if batch and (self.state is LIVE or self.state is RETIRING):
                if self._sendsNow:
                    sendNow(self.transport, b"".join(batch))
                else:
                    self.transport.write(b"".join(batch))  # type: ignore[union-attr]
            if self.state is RETIRING:
                self._closeIfQuiet()
        violation = self._decoder.violation
        if violation is not None and (self.state is LIVE or self.state is RETIRING):
            self._violated(violation)

    def _deliver(self, frames: list[tuple[int, int, bytes]], now: float) -> None:
        """
        Hand each of C{frames} to its request, or act on it.
        """
        owner = self._owner
        table = self._table
        for requestId, kind, payload in frames:
            if self._encode is _NOTED and not (kind == PING and payload.startswith(HELLO_MAGIC)):
                # The server's first frame is not a HELLO: it speaks version 2.
                self._encode = None
                self._setLimit(None)
            if kind > ERROR:
                self._control(requestId, kind, payload)
                if self.state is CLOSING:
                    return
                continue
            if requestId == NEXT:
                if not table:
                    if self.state is LIVE or self.state is RETIRING:
                        self._violated("a reply came with no request outstanding")
                        return
                    owner.lateReply()
                    continue
                requestId = next(iter(table))
            else:
                if self._pieces is not None and requestId in self._pieces:
                    payload = self._joined(requestId, kind, payload)
                    if not self.usable:
                        return
                outbox = self._peer.outbox
                if outbox is not None and requestId in outbox and requestId in table:
                    self._answeredEarly(requestId)
            request = table.pop(requestId, None)
            if request is None:
                if self.orphans:
                    self.orphans -= 1
                owner.lateReply()
                continue
            owner.requestAnswered(request, kind, payload, now)

    def _joined(self, requestId: int, kind: int, last: bytes) -> bytes:
        """
        The whole payload of a reply whose earlier pieces came in
        fragments: all of them, for a RESPONSE; only its own for an ERROR
        (a server that stops sending a response ends it with one).
        """
        pieces = self._pieces
        assert pieces is not None
        if kind == ERROR:
            pieces.discard(requestId)
            whole = last
        else:
            whole = pieces.join(requestId, last)
            if len(whole) > self._options.maxPayload:
                self._violated(
                    f"a reply of {len(whole)} bytes in fragments, above maxPayload={self._options.maxPayload}"
                )
        if not len(pieces):
            self._pieces = None
        return whole

    def _answeredEarly(self, requestId: int) -> None:
        """
        The server answered a request this connection is still sending (it
        did not wait for the end): no more of it is sent, and if some was, a
        CANCEL drops that part before the id can be used again.
        """
        outbox = self._peer.outbox
        assert outbox is not None
        if outbox.remove(requestId):
            self._write(encodeFrame(requestId, CANCEL, b""))

    def _dropPieces(self, requestId: int) -> None:
        """
        Forget the pieces of the reply to C{requestId}, if some came: it is
        no longer waited for, or was answered otherwise.
        """
        pieces = self._pieces
        assert pieces is not None
        if pieces.discard(requestId) and not len(pieces):
            self._pieces = None

    def _fragment(self, requestId: int, piece: bytes) -> None:
        """
        A FRAGMENT: a piece of the reply to C{requestId}, kept until its
        last piece comes, if the reply is still waited for.
        """
        if self._options.fragmentSize is None:
            self._violated("a FRAGMENT, though this client's HELLO did not announce FRAGMENTS")
            return
        if self._table.get(requestId) is None:
            return  # late, or not a request: its last piece says which
        pieces = self._pieces
        if pieces is None:
            pieces = self._pieces = Reassembly(self._options.maxPayload, _UNLIMITED)
        violation = pieces.add(requestId, piece)
        if violation is not None:
            self._violated(violation)

    def _control(self, requestId: int, kind: int, payload: bytes) -> None:
        """
        A FRAGMENT, REFUSED, GOAWAY, PING or PONG from the server.
        """
        if kind == FRAGMENT:
            self._fragment(requestId, payload)
        elif kind == REFUSED:
            if self._pieces is not None:
                self._dropPieces(requestId)
            outbox = self._peer.outbox
            if outbox is not None and requestId in outbox and requestId in self._table:
                self._answeredEarly(requestId)
            request = self._table.pop(requestId, None)
            if request is None:
                if self.orphans:
                    self.orphans -= 1
                self._owner.lateReply()
            else:
                self._owner.requestRefused(request, payload.decode("utf-8", "replace"))
        elif kind == GOAWAY:
            self._owner.goawayReceived(self, payload.decode("utf-8", "replace"))
            self.retire()
        elif kind == PING:
            if len(payload) > MAX_PING_PAYLOAD:
                self._violated(f"a PING carries {len(payload)} bytes, above {MAX_PING_PAYLOAD}")
            elif payload.startswith(HELLO_MAGIC):
                self._greeted(payload)
            elif self.usable:
                self._write(encodeFrame(requestId, PONG, payload))
        # A PONG needs nothing more: any byte received answered the PING (a
        # server of version 2 echoes the HELLO in one).

    def _write(self, frame: bytes) -> None:
        if self._batch is not None:
            self._batch.append(frame)
        else:
            self.transport.write(frame)  # type: ignore[union-attr]

    def forget(self, request: _Request, cancel: bool = True) -> int:
        """
        Stop waiting for C{request}'s reply (it timed out, was cancelled, or
        the client gave up on it).  Where the frames have ids and C{cancel},
        the id stays held until the server's reply, which then counts as
        late (this project's codec sends CANCEL); with an ordered codec the
        request keeps its place in line, so its reply is not taken for the
        next request's.  In both of these cases it counts among L{orphans}
        until then; otherwise its id is free at once.

        @return: 1 if a CANCEL was sent, else 0.
        """
        table = self._table
        requestId = request.requestId
        if requestId not in table:
            return 0  # held here (never written), or answered
        if self._pieces is not None:
            self._dropPieces(requestId)
        outbox = self._peer.outbox
        if outbox is not None and requestId in outbox:
            return self._unsend(requestId)
        if self._ordered or cancel:
            table[requestId] = None
            self.orphans += 1
        else:
            del table[requestId]
        sent = 0
        if cancel and self._controls and self.usable:
            self._write(encodeFrame(requestId, CANCEL, b""))
            sent = 1
        if self.state is RETIRING:
            self._closeIfQuiet()
        return sent

    def _unsend(self, requestId: int) -> int:
        """
        L{forget} a request whose frame is not all written: the rest of it
        never is.  The server never answers it, so its id is free at once;
        if some of it was written, a CANCEL tells the server to drop that
        part (whatever C{cancel} said: a later request with this id would
        otherwise be taken for the rest of it).
        """
        outbox = self._peer.outbox
        assert outbox is not None
        started = outbox.remove(requestId)
        del self._table[requestId]
        sent = 0
        if started and self.usable:
            self._write(encodeFrame(requestId, CANCEL, b""))
            sent = 1
        if self.state is RETIRING:
            self._closeIfQuiet()
        return sent

    def silentSince(self, request: _Request) -> bool:
        """
        Whether nothing at all came from the server since C{request} was
        written here.
        """
        return self._chunks == request.mark

    @property
    def usable(self) -> bool:
        """Whether requests may still be written here (C{LIVE} or C{RETIRING})."""
        return self.state is LIVE or self.state is RETIRING

    def probe(self) -> None:
        """
        Send a PING, unless one is waiting already: if no byte at all comes
        within C{pingTimeout}, the connection is presumed dead or stuck (a
        backend that stopped reading) and is reset.
        """
        if self._controls:
            self._liveness.probe()

    def _presumedDead(self, timeout: float) -> None:
        where = self._owner.endpointDescription
        _log.warn(
            "No byte from {endpoint} within pingTimeout={timeout} seconds of a PING; resetting the connection",
            endpoint=where,
            timeout=timeout,
        )
        self.abort(
            ConnectionDropped(
                f"no byte from {where} within pingTimeout={timeout} seconds of a PING: "
                "the connection was presumed dead or stuck, and reset"
            )
        )

    # -- The connection's life -------------------------------------------------
    #
    # Each input is looked up in the declared table _lifecycle.CONNECTION,
    # which names the action (the method "_" + its name) and the state that
    # follows; an input a state does not declare raises.

    def _on(self, input: str, *args: Any) -> None:
        getattr(self, "_" + CONNECTION.step(self.state.value, input).action)(*args)

    def _moveTo(self, input: str, state: ConnectionState) -> None:
        CONNECTION.check(self.state.value, input, state.value)
        self.state = state

    def _ignore(self, *args: object) -> None:
        pass

    def retire(self) -> None:
        """
        Take no new requests; close once the requests here are answered
        (at once if none is).
        """
        self._on("retire")

    def _stopTaking(self) -> None:
        self._moveTo("retire", RETIRING)
        self._owner.connectionUnusable(self)
        if self._held:
            self._handOver()
        self._closeIfQuiet()

    def close(self) -> None:
        """
        Close gracefully: the peer reads what is left and the close
        completes, or it is aborted after the client's C{closeTimeout}.
        """
        self._on("close")

    def _closeGracefully(self) -> None:
        self._closing("close")
        self.transport.loseConnection()  # type: ignore[union-attr]
        if self.state is not LOST:
            self._abortCall = self._clock.callLater(self._options.closeTimeout, self._abortClosing)

    def abort(self, error: BaseException | None = None) -> None:
        """
        Abort the connection now and fail every request on it with C{error}.
        """
        self._on("abort", error)

    def _abortNow(self, error: BaseException | None) -> None:
        self._closing("abort")
        self.transport.abortConnection()  # type: ignore[union-attr]
        if error is not None:
            self._failAll(error)

    def _abortTransport(self, error: BaseException | None) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not isinstance(reason, Failure):
            reason = Failure(reason)
        self._on("lost", reason)

    def _lose(self, reason: Failure) -> None:
        before = self.state
        self._moveTo("lost", LOST)
        self._liveness.stop()
        self._pieces = None
        if self._peer.outbox is not None:
            self._peer.outbox.stop()
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        owner = self._owner
        tlsFailed = before is LIVE and not self.received and _isTLSError(reason)
        # The server closed the connection cleanly after sending something:
        # it meant to (a cap on requests per connection, a restart).
        graceful = self.received and reason.check(ConnectionDone) is not None
        # The client forgets this connection first, so that requests made by
        # the errbacks below go to a new one.
        owner.connectionGone(self, tlsFailed)
        if self._held:
            self._handOver()
        requests = [request for request in self._table.values() if request is not None]
        self._table.clear()
        where = owner.endpointDescription
        why = reason.getErrorMessage()
        if not requests:
            if owner.noisy:
                _log.debug("Connection to {endpoint} closed: {why}", endpoint=where, why=why)
            return
        _log.warn(
            "Connection to {endpoint} lost with {count} requests outstanding: {why}",
            endpoint=where,
            count=len(requests),
            why=why,
        )
        error = _lossError(where, why, retiring=before is RETIRING, tlsFailed=tlsFailed)
        for request in requests:
            if not request.called:
                if tlsFailed:
                    owner.requestFailed(request, error)
                else:
                    owner.requestLost(request, error, graceful)

    # -- Helpers -----------------------------------------------------------------

    def _closing(self, input: str) -> None:
        self._moveTo(input, CLOSING)
        # Nothing more is written, nor waited for.
        self._pieces = None
        if self._peer.outbox is not None:
            self._peer.outbox.stop()
        # A PING already waiting keeps waiting: no byte in time aborts a
        # graceful close sooner than closeTimeout would.
        self._liveness.stopRegular()
        self._owner.connectionUnusable(self)
        if self._held:
            self._handOver()

    def _closeIfQuiet(self) -> None:
        if not any(self._table.values()):
            self._table.clear()
            self.close()

    def _abortClosing(self) -> None:
        """
        A graceful close took longer than C{closeTimeout}: the peer neither
        acknowledged it nor read what was left to send.  Abort.
        """
        self._abortCall = None
        _log.warn(
            "Connection to {endpoint} took more than closeTimeout={timeout} seconds to close; aborting it",
            endpoint=self._owner.endpointDescription,
            timeout=self._options.closeTimeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _violated(self, violation: str) -> None:
        where = self._owner.endpointDescription
        _log.warn(
            "Protocol violation from {endpoint}: {violation}; dropping the connection",
            endpoint=where,
            violation=violation,
        )
        self.abort(ProtocolViolation(f"{where} broke the wire protocol: {violation}"))

    def _failAll(self, error: BaseException) -> None:
        requests = [request for request in self._table.values() if request is not None]
        self._table.clear()
        fail = self._owner.requestFailed
        for request in requests:
            if not request.called:
                fail(request, error)


def _lossError(where: str, why: str, retiring: bool, tlsFailed: bool) -> Exception:
    """
    What the requests outstanding on a lost connection fail with.
    """
    if tlsFailed:
        # The TLS handshake (or the server's check of our certificate, which
        # TLS 1.3 reports after it) failed.
        return ConnectFailed(f"TLS with {where} failed (wrong, untrusted or expired certificate?): {why}")
    retired = " (the connection was being retired)" if retiring else ""
    return ConnectionDropped(f"connection to {where} lost while the request was outstanding{retired}: {why}")


def _clientHello(maxPayload: int, fragments: bool, cache: dict[tuple[int, bool], bytes] = {}) -> bytes:  # noqa: B006
    """
    The payload of a client's HELLO: it sends budgets, takes REFUSED (and
    fragments, if C{fragments}), and accepts replies up to C{maxPayload}
    bytes.
    """
    hello = cache.get((maxPayload, fragments))
    if hello is None:
        announced = Hello(deadlines=True, refusals=True, maxPayload=maxPayload, fragments=fragments)
        hello = cache[maxPayload, fragments] = announced.encode()
    return hello


def _asEncoded(requestId: int, frame: bytes) -> bytes:
    """
    The send-time encoder of ordered codecs: the client encoded the request.
    """
    return frame


def _enableKeepAlive(transport: object, idle: float) -> None:
    """
    Turn on TCP keepalive probes after C{idle} seconds of silence, every
    C{idle / 3} seconds, 3 of them: a peer that vanished without a FIN is
    found in about C{2 * idle} seconds.  Transports that are not TCP are left
    alone.
    """
    setKeepAlive = getattr(transport, "setTcpKeepAlive", None)
    if setKeepAlive is None:
        return
    setKeepAlive(True)
    handle = getattr(transport, "getHandle", lambda: None)()
    setsockopt = getattr(handle, "setsockopt", None)
    if setsockopt is None:
        return
    for option, value in [("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle / 3), ("TCP_KEEPCNT", 3)]:
        if hasattr(socket, option):
            try:
                setsockopt(socket.IPPROTO_TCP, getattr(socket, option), max(1, int(value)))
            except OSError:
                _log.debug("Could not set {option}", option=option)


def _isTLSError(reason: Failure) -> bool:
    """
    Whether C{reason} is an error of the TLS layer (pyOpenSSL's).
    """
    try:
        from OpenSSL.SSL import Error
    except ImportError:  # no pyOpenSSL: no TLS either
        return False
    return reason.check(Error) is not None


__all__ = ["SockShareClientProtocol", "ConnectionState"]
