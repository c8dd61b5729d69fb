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

from ._nodelay import setNoDelay
from ._reactor import maybeGlobalReactor
from ._servertimers import _ServerTimers
from .options import _count, _seconds
from .wire import (
    CANCEL,
    ERROR,
    MAX_PING_PAYLOAD,
    MIN_LENGTH,
    PING,
    PONG,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    FrameDecoder,
    encodeFrame,
)

#: What a handler may return: the response's bytes, or a Deferred or
#: awaitable (e.g. a coroutine) that gives them.
HandlerResult = Union[bytes, Deferred[bytes], Awaitable[bytes]]
#: A request handler: takes the request's payload.
Handler = Callable[[bytes], HandlerResult]

_log = Logger(namespace="twisted_sockshare.server")


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
        self._handler = factory.handler
        self._clock = factory.clock
        self._decoder = FrameDecoder(factory.maxPayload, SERVER_RECEIVES)
        self._inFlight: dict[int, Deferred[bytes]] = {}
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
        factory._connectionMade(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if factory.maxConnectionAge is not None:
            self._ageCall = self._clock.callLater(factory.maxConnectionAge, self.goAway, "maxConnectionAge reached")
        if factory.idleTimeout is not None:
            self._lastActive = self._clock.seconds()
            self._idleCall = self._clock.callLater(factory.idleTimeout, self._checkIdle)
        setNoDelay(self.transport)

    # -- Reading requests ------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._idleCall is not None:
            self._lastActive = self._clock.seconds()
        frames = self._decoder.feed(data)
        if frames:
            self._backlog.extend(frames)
            self._drain()
        violation = self._decoder.violation
        if violation is not None and not self._lost:
            self._violated(violation)
        elif self._decoder.buffered:
            if self._partialSince is None:
                self._partialSince = self._clock.seconds()
                if self._frameCall is None and self._factory.frameTimeout is not None:
                    self._frameCall = self._clock.callLater(self._factory.frameTimeout, self._checkFrame)
        else:
            self._partialSince = None

    def _drain(self) -> None:
        """
        Hand the frames of the backlog to the handler while reading is not
        paused; then make the transport's reading match.
        """
        if self._draining:
            return
        self._draining = True
        backlog = self._backlog
        inFlight = self._inFlight
        try:
            while backlog and not (self._busy or self._blocked or self._lost):
                requestId, kind, payload = backlog.popleft()
                if kind != REQUEST:
                    self._control(requestId, kind, payload)
                elif requestId in inFlight:
                    self._violated(f"request id {requestId} is already in flight on this connection")
                    return
                else:
                    self._handle(requestId, payload)
        finally:
            self._draining = False
        self._updateReading()

    def _control(self, requestId: int, kind: int, payload: bytes) -> None:
        """
        A CANCEL, PING or PONG from the client.
        """
        if kind == CANCEL:
            # The handler's Deferred fails with CancelledError (the request
            # is answered with an ERROR saying so), unless its canceller gives
            # it a result.  A CANCEL that crossed the answer finds nothing.
            deferred = self._inFlight.get(requestId)
            if deferred is not None:
                self._factory._cancels += 1
                deferred.cancel()
        elif kind == PING:
            if len(payload) > MAX_PING_PAYLOAD:
                self._violated(f"a PING carries {len(payload)} bytes, above {MAX_PING_PAYLOAD}")
            else:
                self.transport.write(encodeFrame(requestId, PONG, payload))  # type: ignore[union-attr]

    def _updateReading(self) -> None:
        paused = self._busy or self._blocked
        if paused == self._paused or self._lost:
            return
        self._paused = paused
        factory = self._factory
        if paused:
            factory._pausedConnections += 1
            factory._pauses += 1
            self.transport.pauseProducing()  # type: ignore[union-attr]
        else:
            factory._pausedConnections -= 1
            if self._partialSince is not None:
                # The client could not finish its frame while we did not read.
                self._partialSince = self._clock.seconds()
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # IPushProducer: the transport tells us about its write buffer.

    def pauseProducing(self) -> None:
        self._blocked = True
        self._updateReading()

    def resumeProducing(self) -> None:
        self._blocked = False
        self._drain()

    def stopProducing(self) -> None:
        self._lost = True

    # -- Handling --------------------------------------------------------------

    def _handle(self, requestId: int, payload: bytes) -> None:
        factory = self._factory
        factory._requests += 1
        try:
            result = self._handler(payload)
        except Exception as error:
            self._sendError(requestId, error, Failure(error))
            return
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
        inFlight = self._inFlight
        inFlight[requestId] = deferred
        count = len(inFlight)
        if count > factory._peakInFlight:
            factory._peakInFlight = count
        if count >= factory.maxInFlight:
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
        if self._lost:
            self._factory._unanswered += 1
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
        elif len(result) > factory.maxPayload:
            error = ValueError(f"response of {len(result)} bytes exceeds the server's maxPayload={factory.maxPayload}")
            self._sendError(requestId, error, None)
        else:
            factory._responses += 1
            self.transport.write(encodeFrame(requestId, RESPONSE, bytes(result)))  # type: ignore[union-attr]

    def _sendError(self, requestId: int, error: BaseException, reason: Failure | None) -> None:
        self._factory._errors += 1
        if reason is not None:
            if self._factory.logHandlerFailures:
                _log.failure("Handler failed for request {requestId}", reason, requestId=requestId)
        elif not isinstance(error, CancelledError):
            _log.warn("Request {requestId} failed: {error}", requestId=requestId, error=error)
        message = describeError(error).encode("utf-8")[: self._factory.maxPayload]
        self.transport.write(encodeFrame(requestId, ERROR, message))  # type: ignore[union-attr]

    def _violated(self, violation: str) -> None:
        self._factory._violations += 1
        _log.warn(
            "Protocol violation from {peer}: {violation}; dropping the connection",
            peer=self.transport.getPeer() if self.transport is not None else None,
            violation=violation,
        )
        self._lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        for call in (self._idleCall, self._frameCall, self._handlerCall, self._ageCall, self._drainCall):
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._frameCall = self._handlerCall = self._ageCall = self._drainCall = None
        if self._paused:
            self._paused = False
            self._factory._pausedConnections -= 1
        self._backlog.clear()
        self._deadlines.clear()
        inFlight, self._inFlight = self._inFlight, {}
        self._factory._unanswered += len(inFlight)
        self._factory._connectionLost(self)
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
            aborted.  L{None}: wait for the client.
        @raise TypeError: if an option has the wrong type.
        @raise ValueError: if an option is out of range.
        """
        _count("maxPayload", maxPayload, minimum=0, maximum=0xFFFFFFFF - MIN_LENGTH)
        _seconds("idleTimeout", idleTimeout, orNone=True)
        _count("maxInFlight", maxInFlight, minimum=1)
        _count("maxConnections", maxConnections, minimum=1, orNone=True)
        _seconds("handlerTimeout", handlerTimeout, orNone=True)
        _seconds("frameTimeout", frameTimeout, orNone=True)
        _seconds("maxConnectionAge", maxConnectionAge, orNone=True)
        _seconds("drainTimeout", drainTimeout, orNone=True)
        self.handler = handler
        self.maxPayload = maxPayload
        self.idleTimeout = idleTimeout
        self.clock: IReactorTime = maybeGlobalReactor(clock)
        self.maxInFlight = maxInFlight
        self.maxConnections = defaultMaxConnections() if maxConnections is None else maxConnections
        self.handlerTimeout = handlerTimeout
        self.frameTimeout = frameTimeout
        self.maxConnectionAge = maxConnectionAge
        self.drainTimeout = drainTimeout
        self._protocols: set[SockShareServerProtocol] = set()
        # While draining: the reason, and the Deferreds drain() returned.
        self._drainReason: str | None = None
        self._drainWaiters: list[Deferred[int]] = []
        self._connections = 0
        self._connectionsOpened = 0
        self._refused = 0
        self._requests = 0
        self._responses = 0
        self._errors = 0
        self._violations = 0
        self._idleClosed = 0
        self._pausedConnections = 0
        self._pauses = 0
        self._handlerTimeouts = 0
        self._frameTimeouts = 0
        self._peakInFlight = 0
        self._cancels = 0
        self._unanswered = 0
        self._goaways = 0
        self._drainAborted = 0

    def buildProtocol(self, addr: IAddress | None) -> SockShareServerProtocol | None:
        if self._drainReason is not None:
            return None
        if self._connections >= self.maxConnections:
            self._refused += 1
            _log.warn(
                "Refusing a connection from {peer}: maxConnections={limit} are open",
                peer=addr,
                limit=self.maxConnections,
            )
            return None
        self._connections += 1
        return SockShareServerProtocol(self)

    def _connectionMade(self, protocol: SockShareServerProtocol) -> None:
        self._connectionsOpened += 1
        self._protocols.add(protocol)
        if self._drainReason is not None:
            protocol.goAway(self._drainReason)

    def _connectionLost(self, protocol: SockShareServerProtocol) -> None:
        self._connections -= 1
        self._protocols.discard(protocol)
        if not self._protocols and self._drainWaiters:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(self._drainAborted)

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
        if self._drainReason is None:
            self._drainReason = reason
            for protocol in list(self._protocols):
                protocol.goAway(reason)
        waiter: Deferred[int] = Deferred()
        if self._protocols:
            self._drainWaiters.append(waiter)
        else:
            waiter.callback(self._drainAborted)
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
        """
        return {
            "connections": self._connections,
            "connectionsOpened": self._connectionsOpened,
            "requests": self._requests,
            "responses": self._responses,
            "errors": self._errors,
            "violations": self._violations,
            "idleClosed": self._idleClosed,
            "refusedConnections": self._refused,
            "pausedConnections": self._pausedConnections,
            "pauses": self._pauses,
            "handlerTimeouts": self._handlerTimeouts,
            "frameTimeouts": self._frameTimeouts,
            "peakInFlight": self._peakInFlight,
            "cancelsReceived": self._cancels,
            "goawaysSent": self._goaways,
            "drainAborted": self._drainAborted,
            "inFlight": sum(protocol.inFlight for protocol in self._protocols),
            "unanswered": self._unanswered,
        }


__all__ = [
    "SockShareServerFactory",
    "SockShareServerProtocol",
    "describeError",
    "defaultMaxConnections",
    "Handler",
    "HandlerResult",
]
