# -*- test-case-name: tests.test_server -*-
"""
The server side: answer request frames with a handler, concurrently, with
bounded memory and work per client.

Each request is handed to the handler as soon as its frame is complete;
responses are written as the handler's results come in, so they may leave in
another order than the requests came.  A handler's exception becomes an ERROR
frame for that request only.

What one client can make the server hold is bounded by default:

    - C{maxInFlight} requests in its handlers per connection: at the mark
      the server stops reading from that connection, and TCP flow control
      holds the client back; nothing is dropped, nothing fails;
    - the responses it does not read: the connection is the transport's
      producer, so while the transport's write buffer is full the server
      stops reading requests from it too;
    - C{maxConnections} connections for the whole server; one more is
      closed at once;
    - C{frameTimeout} seconds for a frame to arrive once it started, and a
      length field below 5 is refused as soon as its 4 bytes are in.

With a client that speaks wire version 3 (C{docs/protocol.rst}), the server
announces C{maxInFlight} and C{maxPayload} in its HELLO, so the client queues
on its own side instead of in TCP buffers; it honours the caller's budget (a
request whose budget is spent is answered with an ERROR without calling the
handler, and a handler still running at the deadline is cancelled; the
handler reads it with L{RequestContext.current}); and it may refuse a
request with REFUSED, which guarantees the handler was not called (while
draining, or at C{maxInFlight} with C{whenFull="refuse"}).
"""

from __future__ import annotations

import resource
from collections import deque
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Union

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._fragments import Outbox, Reassembly
from ._nodelay import setNoDelay
from ._reactor import maybeGlobalReactor
from ._servertimers import _ServerTimers
from .context import RequestContext, _current
from .errors import DeadlineExceeded
from .options import MIN_FRAGMENT_SIZE, _count, _seconds
from .stats import ServerCounters
from .wire import (
    BUDGET_SIZE,
    CANCEL,
    ERROR,
    FRAGMENT,
    HEADER_SIZE,
    HELLO_MAGIC,
    MAX_PING_PAYLOAD,
    MIN_LENGTH,
    NOTE_MAGIC,
    PING,
    PONG,
    REFUSED,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    TIMED_REQUEST,
    FrameDecoder,
    Hello,
    _pack,
    _unpackFrom,
    encodeFrame,
    parseBudget,
    parseHello,
)

#: What a handler may return: the response's bytes, or a Deferred or
#: awaitable (e.g. a coroutine) that gives them.
HandlerResult = Union[bytes, Deferred[bytes], Awaitable[bytes]]
#: A request handler: takes the request's payload.
Handler = Callable[[bytes], HandlerResult]

_log = Logger(namespace="twisted_sockshare.server")

#: Frames at least this long are written on their own, not copied into the
#: write of the chunk they answer.
BATCH_LIMIT = 16_384
# The largest payload answered on the plain path, in the batch.
INLINE_LIMIT = BATCH_LIMIT - 1 - MIN_LENGTH - 4
# No response is sent in fragments (the client does not take them).
_WHOLE = 1 << 62


def describeError(error: BaseException) -> str:
    """
    The message an ERROR frame carries for C{error}: its class name and text,
    such as C{"ValueError: bad key"}, without a traceback.
    """
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def defaultMaxConnections() -> int:
    """
    The default C{maxConnections}: the process's soft limit of open files,
    less a tenth of it (at least 32) kept for listening sockets, log files
    and the application's own connections.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - max(32, soft // 10))


@implementer(IPushProducer)
class SockShareServerProtocol(Protocol, _ServerTimers):
    """
    One client connection of a L{SockShareServerFactory}.

    It is its transport's producer: the transport pauses it while its write
    buffer is full (the client is not reading the responses), and it then
    stops reading requests, as it does while C{maxInFlight} handlers run.
    """

    def __init__(self, factory: SockShareServerFactory) -> None:
        self._factory = factory
        self._counters = factory.counters
        self._handler = factory.handler
        self._clock = factory.clock
        self._decoder = FrameDecoder(factory.maxPayload, SERVER_RECEIVES, BUDGET_SIZE)
        self._maxPayload = factory.maxPayload
        # The largest response sent: the client's maxPayload, if its HELLO
        # says it is below ours.
        self._maxResponse = factory.maxPayload
        self._inFlight: dict[int, Deferred[bytes]] = {}
        # Wire version 3: what the client's HELLO said (None: no HELLO, a
        # version 2 client); whether it sends budgets (then each chunk's
        # reading time, _readAt, is when its budgets start); the request id
        # a DEADLINE note gave a budget to (-1: none), and that budget.
        self._hello: Hello | None = None
        self._stamps = False
        self._readAt = 0.0
        self._noted = -1
        self._notedBudget = 0
        # The callers' deadlines of the requests in their handlers, by id,
        # and the one timer for the earliest.
        self._budgets: dict[int, float] = {}
        self._budgetCall: IDelayedCall | None = None
        # Frames decoded while reading was paused, handled once it resumes:
        # at most one received chunk's worth.
        self._backlog: deque[tuple[int, int, bytes]] = deque()
        # Why reading is paused: too many handlers running, the client not
        # reading its responses; and whether the transport was told.
        self._busy = False
        self._blocked = False
        self._paused = False
        self._lost = False
        # Whether _drain is running: a handler's result that is already there
        # (succeed(), an async def that never waits) makes room while the
        # backlog is being drained, and the running loop takes the next
        # frame instead of a nested one (no recursion, whatever the handler).
        self._draining = False
        # While it runs: the frames written, sent at its end in one write.
        self._replies: list[bytes] | None = None
        # The largest response answered inline by _drain (0: none is, the
        # request takes _handle).
        self._inline = min(self._maxResponse, INLINE_LIMIT)
        # Responses above this size are sent in fragments (the client takes
        # them), by the outbox; the requests partly received, in fragments.
        self._fragments = _WHOLE
        self._outbox: Outbox | None = None
        self._pieces: Reassembly | None = None
        self._lastActive = 0.0
        self._idleCall: IDelayedCall | None = None
        # When the frame now incomplete began (None: none is), and its timer.
        self._partialSince: float | None = None
        self._frameCall: IDelayedCall | None = None
        # Handler deadlines by request id, in the order they started.
        self._deadlines: dict[int, float] = {}
        self._handlerCall: IDelayedCall | None = None
        # GOAWAY: sent after maxConnectionAge or on a graceful stop; then the
        # connection is aborted if the client has not closed it within
        # drainTimeout.
        self._goneAway = False
        self._ageCall: IDelayedCall | None = None
        self._drainCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        factory = self._factory
        factory.protocolConnected(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if factory.maxConnectionAge is not None:
            self._ageCall = self._clock.callLater(factory.maxConnectionAge, self.goAway, "maxConnectionAge reached")
        if factory.idleTimeout is not None:
            self._lastActive = self._clock.seconds()
            self._idleCall = self._clock.callLater(factory.idleTimeout, self._checkIdle)
        setNoDelay(self.transport)
        if hasattr(self.transport, "bufferSize"):
            # A transport of Twisted's (abstract.FileDescriptor) pauses its
            # producer once this many bytes wait to be sent: in the same
            # reactor turn they were written, before trying to send them.
            self.transport.bufferSize = factory.writeBufferSize  # type: ignore[union-attr]

    # -- Reading requests ------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._idleCall is not None:
            self._lastActive = self._clock.seconds()
        if self._stamps:
            self._readAt = self._clock.seconds()
        decoder = self._decoder
        if decoder.idle and self._inline and not (self._backlog or self._busy or self._blocked or self._lost):
            data = self._answerWhole(data)
            if not data:
                self._partialSince = None
                return
        frames = decoder.feed(data)
        if frames:
            self._backlog.extend(frames)
            self._drain()
        if self._replies is not None:
            self._flush()
        if decoder.idle:
            self._partialSince = None
        elif decoder.violation is not None:
            if not self._lost:
                self._violated(decoder.violation)
        elif self._partialSince is None:
            self._partialSince = self._clock.seconds()
            if self._frameCall is None and self._factory.frameTimeout is not None:
                self._frameCall = self._clock.callLater(self._factory.frameTimeout, self._checkFrame)

    def _answerWhole(self, data: bytes) -> bytes:
        """
        The plain path of a chunk that starts with a frame: answer its whole
        REQUEST frames, in order, as long as their handler returns bytes, in
        one write if that is the whole chunk (else the rest's replies join
        them, and L{dataReceived} writes them all).  The first frame that is anything else (another kind,
        incomplete, out of bounds, a handler that answers later) stops it:
        what is left, from that frame on, is returned for L{FrameDecoder},
        which checks everything the wire format says.

        @return: the bytes of C{data} not handled.
        """
        counters = self._counters
        handler = self._handler
        inFlight = self._inFlight
        limit = self._inline
        maxLength = self._maxPayload + MIN_LENGTH
        pieces = self._pieces
        self._draining = True
        self._replies = replies = []
        # Counted at the end, as requests and responses at once: a handler
        # that reads stats() meanwhile finds them adding up.
        answered = 0
        offset = 0
        end = len(data)
        try:
            while end - offset >= HEADER_SIZE:
                length, requestId, kind = _unpackFrom(data, offset)
                stop = offset + 4 + length
                if kind != REQUEST or stop > end or not MIN_LENGTH <= length <= maxLength or requestId in inFlight:
                    if kind != FRAGMENT or stop > end or not MIN_LENGTH <= length <= maxLength:
                        break
                    self._fragment(requestId, data[offset + HEADER_SIZE : stop])
                    if self._lost:
                        break
                    pieces = self._pieces
                    offset = stop
                    continue
                if pieces is not None and requestId in pieces:
                    break  # the last piece of a request in fragments
                payload = data[offset + HEADER_SIZE : stop]
                offset = stop
                try:
                    result = handler(payload)
                except Exception as error:
                    counters.requests += 1
                    self._sendError(requestId, error, Failure(error))
                    continue
                if type(result) is bytes and len(result) <= limit:
                    answered += 1
                    replies.append(_pack(MIN_LENGTH + len(result), requestId, RESPONSE) + result)
                else:
                    counters.requests += 1
                    self._handled(requestId, result)
                    if self._busy or self._blocked or self._lost or not self._inline:
                        break
        finally:
            counters.requests += answered
            counters.responses += answered
            self._draining = False
            if offset == end:
                self._replies = None
                if replies and not self._lost:
                    self.transport.write(b"".join(replies))  # type: ignore[union-attr]
        if (self._busy or self._blocked) != self._paused:
            # A handler answering later reached maxInFlight.
            self._updateReading()
        return data[offset:] if offset else data

    def _drain(self) -> None:
        """
        Hand the frames of the backlog to the handler while reading is not
        paused; write what they produced at once, in one C{transport.write};
        then make the transport's reading match.
        """
        if self._draining:
            return
        self._draining = True
        # Within dataReceived, the chunk's replies so far; else our own.
        own = self._replies is None
        if own:
            self._replies = []
        replies = self._replies
        assert replies is not None
        backlog = self._backlog
        inFlight = self._inFlight
        counters = self._counters
        handler = self._handler
        limit = self._inline
        try:
            while backlog and not (self._busy or self._blocked or self._lost):
                requestId, kind, payload = backlog.popleft()
                if kind != REQUEST or self._pieces is not None:
                    self._control(requestId, kind, payload)
                    limit = self._inline
                elif requestId in inFlight:
                    self._violated(f"request id {requestId} is already in flight on this connection")
                    return
                elif limit:
                    counters.requests += 1
                    try:
                        result = handler(payload)
                    except Exception as error:
                        self._sendError(requestId, error, Failure(error))
                        continue
                    if type(result) is bytes and len(result) <= limit:
                        counters.responses += 1
                        replies.append(_pack(MIN_LENGTH + len(result), requestId, RESPONSE) + result)
                    else:
                        self._handled(requestId, result)
                elif requestId == self._noted:
                    self._noted = -1
                    self._handleTimed(requestId, payload, self._notedBudget)
                else:
                    self._handle(requestId, payload)
        finally:
            self._draining = False
            if own:
                self._flush()
        if (self._busy or self._blocked) != self._paused:
            self._updateReading()

    def _reroute(self) -> None:
        """
        Whether requests take the plain path, answered inline in L{_drain}
        when their handler returns bytes: not when their budgets are to be
        read or refusal decided on.
        """
        if self._stamps or "_handle" in self.__dict__:
            self._inline = 0
        else:
            self._inline = min(self._maxResponse, INLINE_LIMIT, self._fragments)

    def _flush(self) -> None:
        """
        Write the replies collected since L{dataReceived} or L{_drain}
        began, in one write; stop collecting.
        """
        replies, self._replies = self._replies, None
        if replies and not self._lost:
            self.transport.write(b"".join(replies))  # type: ignore[union-attr]

    def _write(self, frame: bytes) -> None:
        """
        Send C{frame}: with the others of the chunk being handled, if one
        is, in their order; else at once.
        """
        replies = self._replies
        if replies is None:
            self.transport.write(frame)  # type: ignore[union-attr]
        elif len(frame) < BATCH_LIMIT:
            replies.append(frame)
        else:
            # Not copied into a batch: what came before goes first.
            if replies:
                self.transport.write(b"".join(replies))  # type: ignore[union-attr]
                replies.clear()
            self.transport.write(frame)  # type: ignore[union-attr]

    def _control(self, requestId: int, kind: int, payload: bytes) -> None:
        """
        A TIMED_REQUEST, CANCEL, PING, PONG or FRAGMENT from the client; a
        REQUEST, while requests are partly received.
        """
        readAt = self._readAt
        if (kind == REQUEST or kind == TIMED_REQUEST) and self._pieces is not None and requestId in self._pieces:
            readAt = self._pieces.began[requestId]
            payload = self._joined(requestId, payload)
        if kind == REQUEST:
            if len(payload) > self._maxPayload:
                self._violated(f"a request of {len(payload)} bytes, above maxPayload={self._maxPayload}")
            elif requestId in self._inFlight:
                self._violated(f"request id {requestId} is already in flight on this connection")
            elif requestId == self._noted:
                self._noted = -1
                self._handleTimed(requestId, payload, self._notedBudget)
            else:
                self._handle(requestId, payload)
        elif kind == FRAGMENT:
            self._fragment(requestId, payload)
        elif kind == TIMED_REQUEST:
            size = len(payload) - BUDGET_SIZE
            if not self._stamps:
                self._violated("a TIMED_REQUEST from a client whose HELLO did not announce budgets")
            elif size < 0:
                self._violated(f"a TIMED_REQUEST of {len(payload)} bytes, shorter than its budget")
            elif size > self._maxPayload:
                self._violated(f"a request of {size} bytes, above maxPayload={self._maxPayload}")
            elif requestId in self._inFlight:
                self._violated(f"request id {requestId} is already in flight on this connection")
            else:
                self._handleTimed(requestId, payload[BUDGET_SIZE:], parseBudget(payload, 0), readAt)
        elif kind == CANCEL:
            # The handler's Deferred fails with CancelledError (the request
            # is answered with an ERROR saying so), unless its canceller gives
            # it a result.  A CANCEL that crossed the answer finds nothing.
            # A request partly received is dropped, never answered; a
            # response partly sent is ended with that ERROR.
            deferred = self._inFlight.get(requestId)
            if deferred is not None:
                self._counters.cancelsReceived += 1
                deferred.cancel()
            elif self._pieces is not None and self._pieces.discard(requestId):
                self._counters.cancelsReceived += 1
                if not len(self._pieces):
                    self._pieces = None
            elif self._outbox is not None and self._outbox.remove(requestId) is not None:
                self._counters.cancelsReceived += 1
                error = CancelledError("the request was cancelled while its response was being sent")
                self._write(encodeFrame(requestId, ERROR, describeError(error).encode("utf-8")))
        elif kind == PING:
            if len(payload) > MAX_PING_PAYLOAD:
                self._violated(f"a PING carries {len(payload)} bytes, above {MAX_PING_PAYLOAD}")
            elif payload.startswith(HELLO_MAGIC):
                self._greeted(payload)
            elif self._stamps and payload.startswith(NOTE_MAGIC):
                if len(payload) != len(NOTE_MAGIC) + BUDGET_SIZE:
                    self._violated(f"a DEADLINE note of {len(payload)} bytes")
                else:
                    self._noted = requestId
                    self._notedBudget = parseBudget(payload, len(NOTE_MAGIC))
            else:
                self._write(encodeFrame(requestId, PONG, payload))

    def _fragment(self, requestId: int, piece: bytes) -> None:
        """
        A FRAGMENT: a piece of a request, kept until its last piece comes.
        Requests partly received count against C{maxInFlight}, as many as
        the client may have outstanding.
        """
        if self._hello is None or self._factory.fragmentSize is None:
            self._violated("a FRAGMENT, though this server's HELLO (if any) did not announce FRAGMENTS")
            return
        if requestId in self._inFlight:
            self._violated(f"request id {requestId} is already in flight on this connection")
            return
        pieces = self._pieces
        if pieces is None:
            pieces = self._pieces = Reassembly(self._maxPayload + BUDGET_SIZE, self._factory.maxInFlight)
        violation = pieces.add(requestId, piece, self._readAt)
        if violation is not None:
            self._violated(violation)

    def _joined(self, requestId: int, last: bytes) -> bytes:
        """
        The whole payload of a request whose earlier pieces came in
        fragments.
        """
        pieces = self._pieces
        assert pieces is not None
        whole = pieces.join(requestId, last)
        if not len(pieces):
            self._pieces = None
        return whole

    def _greeted(self, payload: bytes) -> None:
        """
        The client's HELLO: it speaks wire version 3 (or later).
        """
        hello = parseHello(payload)
        if isinstance(hello, str):
            self._violated(hello)
            return
        self._hello = hello
        # Ours in answer, before any answer to its requests (it came before
        # them): a client that sent none never sees one.
        self._write(self._factory.helloFrame)
        if hello.deadlines:
            self._stamps = True
            self._readAt = self._clock.seconds()
        if hello.maxPayload is not None and hello.maxPayload < self._maxResponse:
            self._maxResponse = hello.maxPayload
        if hello.fragments and self._factory.fragmentSize is not None:
            self._fragments = self._factory.fragmentSize
        if hello.refusals:
            factory = self._factory
            if factory.drainReason is not None and self._goneAway:
                self._handle = self._refuseDraining  # type: ignore[method-assign]
            elif factory.whenFull == "refuse":
                self._handle = self._admit  # type: ignore[method-assign]
        self._reroute()

    @property
    def hello(self) -> Hello | None:
        """
        What the client announced in its HELLO (wire version 3), or
        L{None}: it sent none (version 2), or not yet.
        """
        return self._hello

    def _updateReading(self) -> None:
        paused = self._busy or self._blocked
        if paused == self._paused or self._lost:
            return
        self._paused = paused
        if paused:
            self._counters.pausedConnections += 1
            self._counters.pauses += 1
            self.transport.pauseProducing()  # type: ignore[union-attr]
        else:
            self._counters.pausedConnections -= 1
            if self._partialSince is not None:
                # The client could not finish its frame while we did not read.
                self._partialSince = self._clock.seconds()
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # IPushProducer: the transport tells us about its write buffer.

    # Responses waiting in the outbox behind the one being sent count as
    # waiting in the transport's buffer: above writeBufferSize of them,
    # reading stops too.  One large response alone never stops it: the
    # answers to the requests read meanwhile go out between its fragments.

    def pauseProducing(self) -> None:
        self._blocked = True
        if self._outbox is not None:
            self._outbox.pause()
        self._updateReading()

    def resumeProducing(self) -> None:
        outbox = self._outbox
        if outbox is not None:
            outbox.resume()
            if outbox.backlog > self._factory.writeBufferSize:
                return
        self._blocked = False
        self._drain()

    def stopProducing(self) -> None:
        self._lost = True

    def _sendLarge(self, frame: bytes) -> None:
        """
        Send C{frame}, a response above the client's fragment size, a
        fragment at a time (L{Outbox}): the answers written meanwhile go out
        between its fragments.
        """
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = Outbox(self._clock, self._writeFragment, self._fragments, self._fragmentSent)
            if self._blocked:
                outbox.pause()
        outbox.add(frame)
        if outbox.backlog > self._factory.writeBufferSize and not self._blocked:
            self._blocked = True
            self._updateReading()

    def _writeFragment(self, fragment: bytes) -> None:
        if not self._lost:
            self.transport.write(fragment)  # type: ignore[union-attr]

    def _fragmentSent(self) -> None:
        """
        A fragment left: read again once what waits is below writeBufferSize.
        """
        outbox = self._outbox
        assert outbox is not None
        if self._blocked and not outbox.paused and outbox.backlog <= self._factory.writeBufferSize:
            self._blocked = False
            self._drain()

    # -- Handling --------------------------------------------------------------

    def _handleTimed(self, requestId: int, payload: bytes, budget: int, readAt: float | None = None) -> None:
        """
        A request with C{budget} milliseconds left when its chunk was read
        (the chunk of its first fragment: C{readAt}): answered with an ERROR
        if they are spent, else handled, with its deadline in
        L{RequestContext} and watched while the handler runs.
        """
        deadline = (self._readAt if readAt is None else readAt) + budget / 1000
        if budget == 0 or deadline <= self._clock.seconds():
            self._counters.requests += 1
            self._counters.deadlineOnArrival += 1
            error = DeadlineExceeded("the caller's deadline passed before the handler was called")
            self._sendError(requestId, error, None)
            return
        token = _current.set(RequestContext(deadline, self._clock))
        try:
            self._handle(requestId, payload)
        finally:
            _current.reset(token)
        if requestId in self._inFlight:
            self._watchBudget(requestId, deadline)

    def _admit(self, requestId: int, payload: bytes) -> None:
        """
        C{whenFull="refuse"}, with a client that takes REFUSED: handle the
        request, or refuse it at C{maxInFlight}.
        """
        if len(self._inFlight) >= self._factory.maxInFlight:
            self._refuse(requestId, f"maxInFlight={self._factory.maxInFlight} requests are being handled")
        else:
            SockShareServerProtocol._handle(self, requestId, payload)

    def _refuseDraining(self, requestId: int, payload: bytes) -> None:
        """
        Draining, with a client that takes REFUSED: refuse what comes after
        the GOAWAY, so that it is sent to another server.
        """
        self._refuse(requestId, "the server is draining")

    def _refuse(self, requestId: int, why: str) -> None:
        self._counters.refused += 1
        self._write(encodeFrame(requestId, REFUSED, why.encode("utf-8")))

    def _handle(self, requestId: int, payload: bytes) -> None:
        self._counters.requests += 1
        try:
            result = self._handler(payload)
        except Exception as error:
            self._sendError(requestId, error, Failure(error))
            return
        self._handled(requestId, result)

    def _handled(self, requestId: int, result: object) -> None:
        """
        The handler was called for C{requestId} and gave C{result}: answer
        it, or wait for the Deferred or awaitable it is.
        """
        if type(result) is bytes:
            self._sendResponse(requestId, result)
            return
        if isinstance(result, Deferred):
            deferred = result
        elif isawaitable(result):
            deferred = ensureDeferred(result)  # type: ignore[arg-type]
        else:
            self._sendResponse(requestId, result)
            return
        factory = self._factory
        inFlight = self._inFlight
        inFlight[requestId] = deferred
        count = len(inFlight)
        if count > self._counters.peakInFlight:
            self._counters.peakInFlight = count
        if count >= factory.maxInFlight and self._handle != self._admit:
            self._busy = True
        if factory.handlerTimeout is not None:
            self._deadlines[requestId] = self._clock.seconds() + factory.handlerTimeout
            if self._handlerCall is None:
                self._handlerCall = self._clock.callLater(factory.handlerTimeout, self._checkHandlers)
        deferred.addCallbacks(self._cbHandled, self._ebHandled, callbackArgs=(requestId,), errbackArgs=(requestId,))

    @property
    def inFlight(self) -> int:
        """How many requests of this connection are in their handlers."""
        return len(self._inFlight)

    def _settled(self, requestId: int) -> bool:
        """
        C{requestId}'s handler ended: forget it.  Whether it was still
        waited for (not timed out, connection not lost).
        """
        if self._inFlight.pop(requestId, None) is None:
            return False
        deadlines = self._deadlines
        if deadlines:
            deadlines.pop(requestId, None)
            if not deadlines and self._handlerCall is not None:
                self._handlerCall.cancel()
                self._handlerCall = None
        budgets = self._budgets
        if budgets:
            budgets.pop(requestId, None)
            if not budgets and self._budgetCall is not None:
                self._budgetCall.cancel()
                self._budgetCall = None
        if self._lost:
            self._counters.unanswered += 1
            return False
        return True

    def _makeRoom(self) -> None:
        """
        A handler ended: below C{maxInFlight} again, read again.
        """
        if self._busy and len(self._inFlight) < self._factory.maxInFlight:
            self._busy = False
            self._drain()

    def _cbHandled(self, result: bytes, requestId: int) -> None:
        if self._settled(requestId):
            self._sendResponse(requestId, result)
            self._makeRoom()

    def _ebHandled(self, reason: Failure, requestId: int) -> None:
        if self._settled(requestId):
            assert reason.value is not None
            # A cancel the client asked for is no handler failure to log.
            self._sendError(requestId, reason.value, None if reason.check(CancelledError) else reason)
            self._makeRoom()

    def _sendResponse(self, requestId: int, result: object) -> None:
        factory = self._factory
        if not isinstance(result, (bytes, bytearray)):
            self._sendError(requestId, TypeError(f"handler returned {type(result).__name__}, not bytes"), None)
        elif len(result) > self._maxResponse:
            if self._maxResponse < factory.maxPayload:
                text = f"the client's maxPayload={self._maxResponse}"
            else:
                text = f"the server's maxPayload={factory.maxPayload}"
            self._sendError(requestId, ValueError(f"response of {len(result)} bytes exceeds {text}"), None)
        else:
            self._counters.responses += 1
            if len(result) > self._fragments:
                self._sendLarge(encodeFrame(requestId, RESPONSE, bytes(result)))
            else:
                self._write(encodeFrame(requestId, RESPONSE, bytes(result)))

    def _sendError(self, requestId: int, error: BaseException, reason: Failure | None) -> None:
        self._counters.errors += 1
        if reason is not None:
            if self._factory.logHandlerFailures:
                _log.failure("Handler failed for request {requestId}", reason, requestId=requestId)
        elif not isinstance(error, CancelledError):
            _log.warn("Request {requestId} failed: {error}", requestId=requestId, error=error)
        message = describeError(error).encode("utf-8")[: self._factory.maxPayload]
        self._write(encodeFrame(requestId, ERROR, message))

    def _violated(self, violation: str) -> None:
        self._counters.violations += 1
        _log.warn(
            "Protocol violation from {peer}: {violation}; dropping the connection",
            peer=self.transport.getPeer() if self.transport is not None else None,
            violation=violation,
        )
        self._lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        calls = (self._idleCall, self._frameCall, self._handlerCall, self._ageCall, self._drainCall, self._budgetCall)
        for call in calls:
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._frameCall = self._handlerCall = self._ageCall = self._drainCall = None
        self._budgetCall = None
        self._budgets.clear()
        self._pieces = None
        if self._outbox is not None:
            self._outbox.stop()
        if self._paused:
            self._paused = False
            self._counters.pausedConnections -= 1
        self._backlog.clear()
        self._deadlines.clear()
        inFlight, self._inFlight = self._inFlight, {}
        self._counters.unanswered += len(inFlight)
        self._factory.protocolLost(self)
        for deferred in inFlight.values():
            # _ebHandled consumes the CancelledError: nobody is left to answer.
            deferred.cancel()


class SockShareServerFactory(Factory):
    """
    Serves the wire protocol: each request's payload is passed to C{handler}
    and its result written back as the response.
    """

    noisy = False
    protocol = SockShareServerProtocol
    #: Whether a handler's exception is logged with its traceback (it is
    #: answered with an ERROR frame either way).  The stub client of
    #: L{twisted_sockshare.testing} turns it off: there the exception is the
    #: test's, and reaches it as a L{RemoteError}.
    logHandlerFailures = True

    def __init__(
        self,
        handler: Handler,
        *,
        maxPayload: int = 1_048_576,
        idleTimeout: float | None = None,
        clock: IReactorTime | None = None,
        maxInFlight: int = 1_000,
        maxConnections: int | None = None,
        handlerTimeout: float | None = None,
        frameTimeout: float | None = 30.0,
        maxConnectionAge: float | None = None,
        drainTimeout: float | None = 30.0,
        whenFull: str = "pause",
        writeBufferSize: int = 262_144,
        fragmentSize: int | None = 16_384,
    ) -> None:
        """
        @param handler: called with each request's payload; returns the
            response's bytes, a Deferred firing with them, or a coroutine
            returning them.  An exception (raised or failed with) becomes an
            ERROR frame saying C{"ClassName: text"}; the connection stays up.
        @param maxPayload: the largest request payload accepted, in bytes (a
            larger one is a protocol violation and drops that connection), and
            the largest response sent (a larger one is turned into an ERROR).
        @param idleTimeout: close a connection whose client sent nothing for
            this many seconds, unless it waits for answers with no frame
            half-sent; a frame left incomplete that long aborts the
            connection.  L{None} (the default): never, since clients close
            their own idle connections after their linger.
        @param clock: schedules the timeouts; the global reactor if L{None}.
        @param maxInFlight: the most requests of one connection in its
            handlers at once; at the mark the server stops reading from that
            connection until one finishes.
        @param maxConnections: the most client connections at once; one more
            is closed as soon as it is accepted.  L{None}: from the process's
            open-file limit (L{defaultMaxConnections}).
        @param handlerTimeout: a handler still running after this many seconds
            is cancelled and its request answered with an ERROR saying so
            (C{"TimeoutError: ..."}).  L{None}: no limit.
        @param frameTimeout: a frame must arrive whole within this many
            seconds of its first byte, or the connection is aborted (a
            slow-loris client).  L{None}: no limit.
        @param maxConnectionAge: send GOAWAY on a connection this many seconds
            after it was made, so clients move to fresh connections (to
            spread over new backends, or renew TLS).  L{None}: never.
        @param drainTimeout: after GOAWAY (for C{maxConnectionAge}, or
            L{drain} on a graceful stop) the server keeps answering; a
            connection its client has not closed this many seconds later is
            aborted.  L{None}: wait for the client.  While draining, a
            client that speaks wire version 3 has the requests it sends
            after the GOAWAY refused (REFUSED), to send them elsewhere.
        @param whenFull: what a connection at C{maxInFlight} does with the
            next request: C{"pause"} (the default) stops reading from it
            until a handler finishes; C{"refuse"} answers it with REFUSED
            (the handler is not called; the client may send it elsewhere),
            for clients that speak wire version 3 (others are paused).
            Version 3 clients are told C{maxInFlight} and keep within it.
        @param writeBufferSize: the bytes of responses waiting to be sent on
            a connection above which the server stops reading its requests
            until they are sent (the client is not reading them): the
            C{bufferSize} of Twisted's TCP and UNIX transports, which is
            also the most they read at once.  Above their default of 64 KiB
            so that a chunk's large responses, written together, do not stop
            reading before the transport has tried to send them.  Responses
            waiting to be sent in fragments count too.
        @param fragmentSize: a response payload above this many bytes is sent
            in fragments of this size to a client that takes them (wire
            version 3, FRAGMENTS), so the answers written meanwhile go out
            between them instead of behind the whole response; at least
            1,024.  L{None}: no fragments on its connections, either way (it
            does not announce FRAGMENTS).
        @raise TypeError: if an option has the wrong type.
        @raise ValueError: if an option is out of range.
        """
        _count("maxPayload", maxPayload, minimum=0, maximum=0xFFFFFFFF - MIN_LENGTH)
        _seconds("idleTimeout", idleTimeout, orNone=True)
        _count("maxInFlight", maxInFlight, minimum=1)
        _count("writeBufferSize", writeBufferSize, minimum=1)
        _count("fragmentSize", fragmentSize, minimum=MIN_FRAGMENT_SIZE, orNone=True)
        _count("maxConnections", maxConnections, minimum=1, orNone=True)
        _seconds("handlerTimeout", handlerTimeout, orNone=True)
        _seconds("frameTimeout", frameTimeout, orNone=True)
        _seconds("maxConnectionAge", maxConnectionAge, orNone=True)
        _seconds("drainTimeout", drainTimeout, orNone=True)
        if whenFull not in ("pause", "refuse"):
            raise ValueError(f'whenFull must be "pause" or "refuse", not {whenFull!r}')
        self.handler = handler
        self.whenFull = whenFull
        self.maxPayload = maxPayload
        self.idleTimeout = idleTimeout
        self.clock: IReactorTime = maybeGlobalReactor(clock)
        self.maxInFlight = maxInFlight
        self.maxConnections = defaultMaxConnections() if maxConnections is None else maxConnections
        self.handlerTimeout = handlerTimeout
        self.frameTimeout = frameTimeout
        self.maxConnectionAge = maxConnectionAge
        self.drainTimeout = drainTimeout
        self.writeBufferSize = writeBufferSize
        self.fragmentSize = fragmentSize
        self._protocols: set[SockShareServerProtocol] = set()
        #: While draining: why (None: not draining).
        self.drainReason: str | None = None
        # While draining: the Deferreds drain() returned.
        self._drainWaiters: list[Deferred[int]] = []
        self._connections = 0
        #: What its connections count (L{stats} reads them).
        self.counters = ServerCounters()
        hello = Hello(
            deadlines=True,
            refusals=True,
            maxInFlight=maxInFlight,
            maxPayload=maxPayload,
            fragments=fragmentSize is not None,
        )
        #: The HELLO frame it answers a client's HELLO with.
        self.helloFrame = encodeFrame(0, PING, hello.encode())

    def buildProtocol(self, addr: IAddress | None) -> SockShareServerProtocol | None:
        if self.drainReason is not None:
            return None
        if self._connections >= self.maxConnections:
            self.counters.refusedConnections += 1
            _log.warn(
                "Refusing a connection from {peer}: maxConnections={limit} are open",
                peer=addr,
                limit=self.maxConnections,
            )
            return None
        self._connections += 1
        return SockShareServerProtocol(self)

    def protocolConnected(self, protocol: SockShareServerProtocol) -> None:
        """
        One of its connections is made (told by the connection).
        """
        self.counters.connectionsOpened += 1
        self._protocols.add(protocol)
        if self.drainReason is not None:
            protocol.goAway(self.drainReason)

    def protocolLost(self, protocol: SockShareServerProtocol) -> None:
        """
        One of its connections is lost (told by the connection).
        """
        self._connections -= 1
        self._protocols.discard(protocol)
        if not self._protocols and self._drainWaiters:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(self.counters.drainAborted)

    def drain(self, reason: str = "the server is shutting down") -> Deferred[int]:
        """
        Stop gracefully: refuse new connections, send GOAWAY on every
        connection, keep answering what is in flight (and what crossed the
        GOAWAY), and wait for the clients to close their connections (each
        is aborted C{drainTimeout} seconds after its GOAWAY).  Stopping the
        listening port first is the caller's part (the C{twistd} plugin does
        it); stopping the last port of the factory starts a drain too.

        @return: a Deferred that fires once no connection is left, with the
            number of connections aborted by C{drainTimeout} (0: every
            client closed its connection after its answers).
        """
        if self.drainReason is None:
            self.drainReason = reason
            for protocol in list(self._protocols):
                protocol.goAway(reason)
        waiter: Deferred[int] = Deferred()
        if self._protocols:
            self._drainWaiters.append(waiter)
        else:
            waiter.callback(self.counters.drainAborted)
        return waiter

    def stopFactory(self) -> None:
        """
        The factory's last listening port stopped: drain the connections.
        """
        if self._protocols:
            self.drain()

    def stats(self) -> dict[str, int]:
        """
        Counters since the factory was made.

        @return: a new dict with C{connections} (open now),
            C{connectionsOpened}, C{requests}, C{responses}, C{errors} (ERROR
            frames sent), C{violations} (connections dropped for breaking
            the protocol), C{idleClosed} (closed by C{idleTimeout}),
            C{refusedConnections} (closed at once for C{maxConnections}),
            C{pausedConnections} (not being read now: C{maxInFlight} reached
            or the client not reading), C{pauses} (times a connection was
            paused), C{handlerTimeouts}, C{frameTimeouts} and
            C{peakInFlight} (the most requests of one connection in its
            handlers at once), C{cancelsReceived} (CANCELs that found their
            request running), C{goawaysSent} and C{drainAborted}
            (connections aborted by C{drainTimeout}), C{inFlight} (requests in
            their handlers now) and C{unanswered} (requests whose connection
            was lost or dropped before their answer was written).  At every
            moment C{requests == responses + errors + inFlight + unanswered}.
            Wire version 3: C{deadlineExceeded} (requests answered with an
            ERROR because their caller's deadline passed: among C{errors}),
            C{deadlineExceededOnArrival} (of those, the ones whose handler
            was never called), and C{refused} (requests answered with
            REFUSED, never handed to the handler, not in C{requests}).
        """
        return {
            "connections": self._connections,
            "connectionsOpened": self.counters.connectionsOpened,
            "requests": self.counters.requests,
            "responses": self.counters.responses,
            "errors": self.counters.errors,
            "violations": self.counters.violations,
            "idleClosed": self.counters.idleClosed,
            "refusedConnections": self.counters.refusedConnections,
            "pausedConnections": self.counters.pausedConnections,
            "pauses": self.counters.pauses,
            "handlerTimeouts": self.counters.handlerTimeouts,
            "frameTimeouts": self.counters.frameTimeouts,
            "peakInFlight": self.counters.peakInFlight,
            "cancelsReceived": self.counters.cancelsReceived,
            "goawaysSent": self.counters.goawaysSent,
            "drainAborted": self.counters.drainAborted,
            "inFlight": sum(protocol.inFlight for protocol in self._protocols),
            "unanswered": self.counters.unanswered,
            "deadlineExceeded": self.counters.deadlineOnArrival + self.counters.deadlineRunning,
            "deadlineExceededOnArrival": self.counters.deadlineOnArrival,
            "refused": self.counters.refused,
        }


__all__ = [
    "SockShareServerFactory",
    "SockShareServerProtocol",
    "describeError",
    "defaultMaxConnections",
    "Handler",
    "HandlerResult",
]
