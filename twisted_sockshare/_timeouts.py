"""
Request timeouts of a shared client: one timer for all of them.

The requests of a client that share its C{requestTimeout} have their
deadlines in the order the requests were made, which is the order of the
client's pending dict.  One timer is set for the oldest pending request's
deadline; answering a request does not touch it; when it fires it times out
what is due and moves itself to the next oldest deadline.  A request given
a C{timeout} of its own has a timer of its own, which the shared one skips.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._request import _Request
from .connection import CLOSING, LOST
from .errors import ConnectionDropped, RequestTimeout
from .stats import _Events

_log = Logger(namespace="twisted_sockshare.client")


class _RequestTimeouts:
    """
    The request timeouts of L{twisted_sockshare.SockShareClientFactory},
    mixed into it.  A timed-out request fails alone and its connection sends
    CANCEL, unless the connection is reset (C{resetOnTimeout}, or an ordered
    codec); if nothing at all came on the connection since the request was
    written, a PING checks that it is alive (C{pingTimeout}).
    """

    #: The one timer of every request timeout.
    _deadlineCall: IDelayedCall | None = None

    # What the client provides.
    _pending: dict[_Request, None]
    _clock: IReactorTime
    _seconds: Callable[[], float]
    endpointDescription: str
    requestTimeout: float | None
    _resets: bool
    _events: _Events
    requestFailed: Callable[[_Request, BaseException], None]
    _abandonRequest: Callable[[_Request, BaseException], None]

    def _checkDeadlines(self) -> None:
        """
        Time out the requests past their deadline.  One timer serves every
        request: it is set for the oldest pending request's deadline, and
        moved forward when that request has already been answered.
        """
        self._deadlineCall = None
        timeout = self.requestTimeout
        if timeout is None:  # turned off since the timer was set
            return
        now = self._seconds()
        expired = []
        for request in self._pending:
            if request.sentAt + timeout > now:
                break
            if request.extra is None or request.extra.timeout is None:
                expired.append(request)
        for request in expired:
            if not request.called:
                self._timedOut(request, f"requestTimeout={timeout}")
        # A request made by an errback above may have set a later timer.
        self._cancelDeadlines()
        for request in self._pending:
            if request.extra is None or request.extra.timeout is None:
                deadline = request.sentAt + timeout
                self._deadlineCall = self._clock.callLater(max(0.0, deadline - now), self._checkDeadlines)
                break

    def _ownTimeout(self, request: _Request) -> None:
        """
        The timer of a request with a C{timeout} of its own fired.
        """
        extra = request.extra
        assert extra is not None
        extra.timer = None
        if not request.called:
            self._timedOut(request, f"timeout={extra.timeout}")

    def _timedOut(self, request: _Request, limit: str) -> None:
        self._events.timeouts += 1
        where = self.endpointDescription
        error = RequestTimeout(f"no response from {where} within {limit} seconds")
        connection = request.connection
        if connection is None or connection.state is CLOSING or connection.state is LOST:
            self.requestFailed(request, error)
        elif self._resets:
            others = connection.outstanding - 1
            _log.warn(
                "Request to {where} timed out; resetting its connection ({others} others fail)",
                where=where,
                others=others,
            )
            connection.forget(request, cancel=False)
            connection.abort(
                ConnectionDropped(
                    f"connection to {where} was reset because another request on it timed out (resetOnTimeout)"
                )
            )
            self.requestFailed(request, error)
        else:
            # A slow request is not a dead connection, but a silent one may be.
            silent = connection.silentSince(request)
            self._abandonRequest(request, error)
            if silent:
                connection.probe()

    def _cancelDeadlines(self) -> None:
        if self._deadlineCall is not None:
            self._deadlineCall.cancel()
            self._deadlineCall = None
