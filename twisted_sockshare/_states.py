"""
The states of a shared client (L{twisted_sockshare.SockShareClientFactory}),
each a small class holding what is true only in that state, and its timers.
The client is in exactly one of them at a time, and moves between them by
the rows of L{twisted_sockshare._lifecycle.CLIENT}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime, IStreamClientEndpoint

from ._request import _Request
from .connection import SockShareClientProtocol


class _Idle:
    """No usable connection: the next request connects."""

    #: Its name in the lifecycle table (L{twisted_sockshare._lifecycle.CLIENT}).
    name = "idle"
    __slots__ = ()
    #: Whether the client takes new requests in this state.
    accepting = True
    #: The connection new requests are written to, if there is one.
    connection: SockShareClientProtocol | None = None


class _Connecting:
    """
    One connection attempt is under way.

    @ivar waiting: the requests to write once connected, in order.
    @ivar attempt: the endpoint's Deferred.
    @ivar timeoutCall: abandons the attempt after C{connectTimeout}.
    @ivar abandoned: why the client cancelled the attempt, if it did.
    """

    #: Its name in the lifecycle table (L{twisted_sockshare._lifecycle.CLIENT}).
    name = "connecting"
    __slots__ = ("waiting", "attempt", "timeoutCall", "abandoned")
    accepting = True
    connection = None

    def __init__(self, first: _Request) -> None:
        self.waiting = [first]
        self.attempt: Deferred[Any] | None = None
        self.timeoutCall: IDelayedCall | None = None
        self.abandoned: str | None = None

    def start(
        self,
        endpoint: IStreamClientEndpoint,
        factory: IProtocolFactory,
        clock: IReactorTime,
        timeout: float | None,
    ) -> Deferred[Any]:
        """
        Connect, and abandon the attempt after C{timeout} seconds.
        """
        self.attempt = attempt = maybeDeferred(endpoint.connect, factory)
        if timeout is not None and not attempt.called:
            self.timeoutCall = clock.callLater(timeout, self.abandon, f"connectTimeout={timeout} seconds exceeded")
        return attempt

    def abandon(self, why: str) -> None:
        """
        Cancel the attempt (its Deferred fails at once), remembering why.
        """
        if self.abandoned is None and self.attempt is not None:
            self.abandoned = why
            self.attempt.cancel()

    def end(self) -> list[_Request]:
        """
        The attempt ended: stop its timer, and take the requests that still
        wait on it.
        """
        if self.timeoutCall is not None and self.timeoutCall.active():
            self.timeoutCall.cancel()
        self.timeoutCall = None
        waiting, self.waiting = self.waiting, []
        return [request for request in waiting if not request.called]


class _Connected:
    """
    A usable connection: requests are written to it at once.

    @ivar idleCall: closes the connection once no request has been pending
        for C{idleTimeout}; set when the pending count first falls to zero,
        and not moved by the requests that come and go before it fires.
    @ivar quietSince: when the pending count last fell to zero.
    """

    #: Its name in the lifecycle table (L{twisted_sockshare._lifecycle.CLIENT}).
    name = "connected"
    __slots__ = ("connection", "idleCall", "quietSince")
    accepting = True

    def __init__(self, connection: SockShareClientProtocol) -> None:
        self.connection = connection
        self.idleCall: IDelayedCall | None = None
        self.quietSince = 0.0

    def cancelIdle(self) -> None:
        if self.idleCall is not None:
            if self.idleCall.active():
                self.idleCall.cancel()
            self.idleCall = None


class _Closing:
    """
    C{close()} was called: requests are refused; the pending ones may finish
    until C{deadlineCall} fails them and aborts what is left.

    @ivar waiters: the Deferreds C{close()} returned.
    @ivar connecting: the attempt under way when C{close()} was called, while
        requests wait on it: they are sent, then that connection retires.
    """

    #: Its name in the lifecycle table (L{twisted_sockshare._lifecycle.CLIENT}).
    name = "closing"
    __slots__ = ("waiters", "connecting", "deadlineCall")
    accepting = False
    connection = None

    def __init__(
        self, connecting: _Connecting | None, clock: IReactorTime, timeout: float, onTimeout: Callable
    ) -> None:
        self.waiters: list[Deferred[None]] = []
        self.connecting = connecting
        self.deadlineCall: IDelayedCall | None = clock.callLater(timeout, onTimeout, self)

    def finish(self) -> None:
        """
        Closed: stop the deadline and fire the waiters.
        """
        if self.deadlineCall is not None and self.deadlineCall.active():
            self.deadlineCall.cancel()
        self.deadlineCall = None
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(None)


class _Closed:
    """Closed: every request is refused; nothing is left open."""

    #: Its name in the lifecycle table (L{twisted_sockshare._lifecycle.CLIENT}).
    name = "closed"
    __slots__ = ()
    accepting = False
    connection = None


_IDLE = _Idle()
_CLOSED = _Closed()

#: Any state of the client.
_State = _Idle | _Connecting | _Connected | _Closing | _Closed
