"""
The limits in time of one server connection: how long a handler may run
(C{handlerTimeout}) or its caller is willing to wait (the budget a wire
version 3 client sends), a frame may take to arrive (C{frameTimeout}), a client
may stay quiet (C{idleTimeout}), and a connection may live (GOAWAY after
C{maxConnectionAge}, abort C{drainTimeout} after a GOAWAY).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger

from .errors import DeadlineExceeded
from .wire import GOAWAY, Hello, encodeFrame

if TYPE_CHECKING:
    from ._fragments import Outbox, Reassembly
    from .server import SockShareServerFactory
    from .stats import ServerCounters

_log = Logger(namespace="twisted_sockshare.server")


class _ServerTimers:
    """
    The timers of L{twisted_sockshare.server.SockShareServerProtocol}, mixed
    into it.
    """

    # What the protocol provides.
    transport: ITransport | None
    _factory: SockShareServerFactory
    _counters: ServerCounters
    _clock: IReactorTime
    _inFlight: dict[int, Deferred[bytes]]
    _deadlines: dict[int, float]
    _budgets: dict[int, float]
    _budgetCall: IDelayedCall | None
    _hello: Hello | None
    _handle: Callable[[int, bytes], None]
    _refuseDraining: Callable[[int, bytes], None]
    _decoder: Any
    _pieces: Reassembly | None
    _outbox: Outbox | None
    _lost: bool
    _paused: bool
    _goneAway: bool
    _partialSince: float | None
    _lastActive: float
    _ageCall: IDelayedCall | None
    _drainCall: IDelayedCall | None
    _handlerCall: IDelayedCall | None
    _frameCall: IDelayedCall | None
    _idleCall: IDelayedCall | None
    _settled: Callable[[int], bool]
    _makeRoom: Callable[[], None]
    _sendError: Callable[..., None]
    _write: Callable[[bytes], None]
    _reroute: Callable[[], None]

    def goAway(self, reason: str) -> None:
        """
        Send GOAWAY: the client sends no new request on this connection and
        closes it once its requests are answered.  The server keeps
        answering what it receives; if the client has not closed the
        connection C{drainTimeout} seconds later, it is aborted.
        """
        if self._goneAway or self._lost:
            return
        self._goneAway = True
        factory = self._factory
        self._counters.goawaysSent += 1
        if self._ageCall is not None and self._ageCall.active():
            self._ageCall.cancel()
        self._ageCall = None
        message = reason.encode("utf-8")[: factory.maxPayload]
        self._write(encodeFrame(0, GOAWAY, message))
        if factory.drainTimeout is not None:
            self._drainCall = self._clock.callLater(factory.drainTimeout, self._drainTimedOut)
        if factory.drainReason is not None and self._hello is not None and self._hello.refusals:
            # Stopping: what crosses the GOAWAY is refused, to go elsewhere.
            self._handle = self._refuseDraining
            self._reroute()

    def _drainTimedOut(self) -> None:
        self._drainCall = None
        self._counters.drainAborted += 1
        _log.warn(
            "Aborting the connection from {peer}: not closed by its client within drainTimeout={timeout} seconds "
            "of GOAWAY ({count} requests still in flight)",
            peer=self.transport.getPeer() if self.transport is not None else None,
            timeout=self._factory.drainTimeout,
            count=len(self._inFlight),
        )
        self._lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- Timers ------------------------------------------------------------------

    def _checkHandlers(self) -> None:
        """
        Answer the requests whose handler outran C{handlerTimeout} with an
        ERROR, then cancel their handlers.  One timer per connection, set
        for the oldest running handler.
        """
        self._handlerCall = None
        now = self._clock.seconds()
        timeout = self._factory.handlerTimeout
        while self._deadlines and not self._lost:
            requestId, deadline = next(iter(self._deadlines.items()))
            if deadline > now:
                # A frame handled below (_makeRoom) may have set the timer
                # already, for its own, later deadline: one timer, the oldest.
                if self._handlerCall is not None:
                    self._handlerCall.cancel()
                self._handlerCall = self._clock.callLater(deadline - now, self._checkHandlers)
                return
            deferred = self._inFlight[requestId]
            self._settled(requestId)
            self._counters.handlerTimeouts += 1
            error = TimeoutError(f"the handler did not finish within handlerTimeout={timeout} seconds")
            self._sendError(requestId, error, None)
            deferred.cancel()
            self._makeRoom()

    def _watchBudget(self, requestId: int, deadline: float) -> None:
        """
        Cancel C{requestId}'s handler if it still runs at its caller's
        C{deadline}.  One timer per connection, for the earliest deadline:
        callers' budgets differ, so the timer's checks scan them all
        (at most C{maxInFlight}), which is rare: only when a deadline may
        have passed.
        """
        self._budgets[requestId] = deadline
        call = self._budgetCall
        if call is None:
            self._budgetCall = self._clock.callLater(deadline - self._clock.seconds(), self._checkBudgets)
        elif deadline < call.getTime():
            call.reset(max(0.0, deadline - self._clock.seconds()))

    def _checkBudgets(self) -> None:
        """
        Answer the requests whose caller's deadline passed with an ERROR,
        and cancel their handlers; then wait for the next deadline.
        """
        self._budgetCall = None
        now = self._clock.seconds()
        expired = [requestId for requestId, deadline in self._budgets.items() if deadline <= now]
        for requestId in expired:
            if self._lost:
                return
            deferred = self._inFlight.get(requestId)
            if deferred is None or not self._settled(requestId):
                continue
            self._counters.deadlineRunning += 1
            self._sendError(requestId, DeadlineExceeded("the caller's deadline passed while the handler ran"), None)
            deferred.cancel()
            self._makeRoom()
        if self._budgets and self._budgetCall is None and not self._lost:
            earliest = min(self._budgets.values())
            self._budgetCall = self._clock.callLater(max(0.0, earliest - now), self._checkBudgets)

    def _checkFrame(self) -> None:
        """
        Abort the connection if a frame began C{frameTimeout} seconds ago and
        is still incomplete (a slow-loris client), unless we are the ones not
        reading.
        """
        self._frameCall = None
        timeout = self._factory.frameTimeout
        since = self._partialSince
        if since is None or self._lost or timeout is None:
            return
        waited = self._clock.seconds() - since
        if self._paused:  # we are the ones not reading: not the client's fault
            self._frameCall = self._clock.callLater(timeout, self._checkFrame)
            return
        if waited < timeout:
            self._frameCall = self._clock.callLater(timeout - waited, self._checkFrame)
            return
        self._counters.frameTimeouts += 1
        _log.info(
            "Aborting the connection from {peer}: a frame left incomplete for {timeout} seconds (frameTimeout)",
            peer=self.transport.getPeer() if self.transport is not None else None,
            timeout=timeout,
        )
        self._lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _checkIdle(self) -> None:
        """
        Close the connection if the client sent nothing for C{idleTimeout}
        seconds, unless it is waiting for answers and has no frame left
        half-sent (a slow handler is not the client's fault).
        """
        factory = self._factory
        timeout = factory.idleTimeout
        assert timeout is not None
        quiet = self._clock.seconds() - self._lastActive
        # A request left partly sent, in fragments, is a frame left incomplete.
        stalled = self._decoder.buffered > 0 or self._pieces is not None
        # Responses still being sent, in fragments, are answers waited for.
        sending = self._outbox is not None and self._outbox.queued > 0
        if quiet < timeout or ((self._inFlight or sending) and not stalled):
            wait = timeout - quiet if quiet < timeout else timeout
            self._idleCall = self._clock.callLater(wait, self._checkIdle)
            return
        self._idleCall = None
        self._counters.idleClosed += 1
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
