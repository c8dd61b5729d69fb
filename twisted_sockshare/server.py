# -*- test-case-name: tests.test_server -*-
"""
The server side: answer request frames with a handler, concurrently.

Each request is handed to the handler as soon as its frame is complete;
responses are written as the handler's results come in, so they may leave in
another order than the requests came.  A handler's exception becomes an ERROR
frame for that request only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Union

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .wire import ERROR, MIN_LENGTH, RESPONSE, SERVER_RECEIVES, FrameDecoder, encodeFrame

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


class SockShareServerProtocol(Protocol):
    """
    One client connection of a L{SockShareServerFactory}.
    """

    def __init__(self, factory: SockShareServerFactory) -> None:
        self._factory = factory
        self._handler = factory.handler
        self._decoder = FrameDecoder(factory.maxPayload, SERVER_RECEIVES)
        self._inFlight: dict[int, Deferred[bytes]] = {}
        self._lost = False
        self._lastActive = 0.0
        self._idleCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._factory._connectionMade()
        if self._factory.idleTimeout is not None:
            self._lastActive = self._factory.clock.seconds()
            self._idleCall = self._factory.clock.callLater(self._factory.idleTimeout, self._checkIdle)
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if self._idleCall is not None:
            self._lastActive = self._factory.clock.seconds()
        inFlight = self._inFlight
        for requestId, _kind, payload in self._decoder.feed(data):
            if self._lost:
                return
            if requestId in inFlight:
                self._violated(f"request id {requestId} is already in flight on this connection")
                return
            self._handle(requestId, payload)
        violation = self._decoder.violation
        if violation is not None and not self._lost:
            self._violated(violation)

    def _checkIdle(self) -> None:
        """
        Close the connection if the client sent nothing for C{idleTimeout}
        seconds, unless it is waiting for answers and has no frame left
        half-sent (a slow handler is not the client's fault).
        """
        factory = self._factory
        timeout = factory.idleTimeout
        assert timeout is not None
        quiet = factory.clock.seconds() - self._lastActive
        stalled = self._decoder.buffered > 0
        if quiet < timeout or (self._inFlight and not stalled):
            wait = timeout - quiet if quiet < timeout else timeout
            self._idleCall = factory.clock.callLater(wait, self._checkIdle)
            return
        self._idleCall = None
        factory._idleClosed += 1
        _log.info(
            "Closing the connection from {peer}: {what} for {timeout} seconds (idleTimeout)",
            peer=self.transport.getPeer() if self.transport is not None else None,
            what="a frame left incomplete" if stalled else "idle",
            timeout=timeout,
        )
        self._lost = True
        if stalled:
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _violated(self, violation: str) -> None:
        self._factory._violations += 1
        _log.warn(
            "Protocol violation from {peer}: {violation}; dropping the connection",
            peer=self.transport.getPeer() if self.transport is not None else None,
            violation=violation,
        )
        self._lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _handle(self, requestId: int, payload: bytes) -> None:
        self._factory._requests += 1
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
        self._inFlight[requestId] = deferred
        deferred.addCallbacks(self._cbHandled, self._ebHandled, callbackArgs=(requestId,), errbackArgs=(requestId,))

    def _cbHandled(self, result: bytes, requestId: int) -> None:
        if self._inFlight.pop(requestId, None) is not None and not self._lost:
            self._sendResponse(requestId, result)

    def _ebHandled(self, reason: Failure, requestId: int) -> None:
        if self._inFlight.pop(requestId, None) is not None and not self._lost:
            assert reason.value is not None
            self._sendError(requestId, reason.value, reason)

    def _sendResponse(self, requestId: int, result: object) -> None:
        if not isinstance(result, (bytes, bytearray)):
            error = TypeError(f"handler returned {type(result).__name__}, not bytes")
            self._sendError(requestId, error, None)
            return
        if len(result) > self._factory.maxPayload:
            self._sendError(
                requestId,
                ValueError(
                    f"response of {len(result)} bytes exceeds the server's maxPayload={self._factory.maxPayload}"
                ),
                None,
            )
            return
        self._factory._responses += 1
        self.transport.write(encodeFrame(requestId, RESPONSE, bytes(result)))  # type: ignore[union-attr]

    def _sendError(self, requestId: int, error: BaseException, reason: Failure | None) -> None:
        self._factory._errors += 1
        if reason is not None:
            _log.failure("Handler failed for request {requestId}", reason, requestId=requestId)
        else:
            _log.warn("Request {requestId} failed: {error}", requestId=requestId, error=error)
        message = describeError(error).encode("utf-8")[: self._factory.maxPayload]
        self.transport.write(encodeFrame(requestId, ERROR, message))  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._idleCall is not None:
            if self._idleCall.active():
                self._idleCall.cancel()
            self._idleCall = None
        self._factory._connectionLost()
        inFlight, self._inFlight = self._inFlight, {}
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

    def __init__(
        self,
        handler: Handler,
        *,
        maxPayload: int = 1_048_576,
        idleTimeout: float | None = None,
        clock: IReactorTime | None = None,
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
            half-sent; a frame left incomplete that long (a slow-loris
            client) aborts the connection.  L{None}: never.
        @param clock: schedules the idle timeouts; the global reactor if
            L{None}.
        @raise ValueError: if an option is out of range.
        """
        if not 0 <= maxPayload <= 0xFFFFFFFF - MIN_LENGTH:
            raise ValueError(f"maxPayload must be between 0 and {0xFFFFFFFF - MIN_LENGTH}, not {maxPayload!r}")
        if idleTimeout is not None and idleTimeout <= 0:
            raise ValueError(f"idleTimeout must be > 0 or None, not {idleTimeout!r}")
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.handler = handler
        self.maxPayload = maxPayload
        self.idleTimeout = idleTimeout
        self.clock: IReactorTime = clock
        self._connections = 0
        self._connectionsOpened = 0
        self._requests = 0
        self._responses = 0
        self._errors = 0
        self._violations = 0
        self._idleClosed = 0

    def buildProtocol(self, addr: IAddress | None) -> SockShareServerProtocol:
        return SockShareServerProtocol(self)

    def _connectionMade(self) -> None:
        self._connections += 1
        self._connectionsOpened += 1

    def _connectionLost(self) -> None:
        self._connections -= 1

    def stats(self) -> dict[str, int]:
        """
        Counters since the factory was made.

        @return: a new dict with C{connections} (open now),
            C{connectionsOpened}, C{requests}, C{responses}, C{errors} (ERROR
            frames sent), C{violations} (connections dropped for breaking
            the protocol) and C{idleClosed} (connections closed by
            C{idleTimeout}).
        """
        return {
            "connections": self._connections,
            "connectionsOpened": self._connectionsOpened,
            "requests": self._requests,
            "responses": self._responses,
            "errors": self._errors,
            "violations": self._violations,
            "idleClosed": self._idleClosed,
        }


__all__ = ["SockShareServerFactory", "SockShareServerProtocol", "describeError", "Handler", "HandlerResult"]
