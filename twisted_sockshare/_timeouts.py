# -*- test-case-name: tests.test_timeouts -*-
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

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._request import _Request
from .connection import CLOSING, LOST
from .errors import ConnectionDropped, RequestTimeout
from .stats import _Events

_log = Logger(namespace="twisted_sockshare.client")


class TimeoutsOwner(Protocol):
    """
    What the request timeouts need of their client.
    """

    endpointDescription: str
    requestTimeout: float | None

    def requestFailed(self, request: _Request, error: BaseException) -> None:
        """C{request} failed with C{error}."""

    def abandonRequest(self, request: _Request, error: BaseException) -> None:
        """Fail C{request} with C{error} without its reply (CANCEL)."""


class RequestTimeouts:
    """
    The request timeouts of a shared client.  A timed-out request fails
    alone and its connection sends CANCEL, unless the connection is reset
    (C{resetOnTimeout}, or an ordered codec); if nothing at all came on the
    connection since the request was written, a PING checks that it is
    alive (C{pingTimeout}).

    @ivar call: the one timer of every request timeout (C{requestTimeout}),
        or L{None} while none is set.
    """

    def __init__(
        self, owner: TimeoutsOwner, pending: dict[_Request, None], clock: IReactorTime, resets: bool, events: _Events
    ) -> None:
        """
        @param pending: the client's pending requests, in the order they
            were made (which is their deadlines' order).
        @param resets: whether a timeout resets its connection.
        """
        self._owner = owner
        self._pending = pending
        self._clock = clock
        self._resets = resets
        self._events = events
        self.call: IDelayedCall | None = None

    def start(self, timeout: float) -> None:
        """
        Set the timer for a request just made, the only one pending with
        C{requestTimeout}.
        """
        self.call = self._clock.callLater(timeout, self.checkDeadlines)

    def own(self, request: _Request, timeout: float) -> IDelayedCall:
        """
        The timer of a request with a C{timeout} of its own.
        """
        return self._clock.callLater(timeout, self._ownTimeout, request)

    def checkDeadlines(self) -> None:
        """
        Time out the requests past their deadline.  One timer serves every
        request: it is set for the oldest pending request's deadline, and
        moved forward when that request has already been answered.
        """
        self.call = None
        timeout = self._owner.requestTimeout
        if timeout is None:  # turned off since the timer was set
            return
        now = self._clock.seconds()
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
        self.cancel()
        for request in self._pending:
            if request.extra is None or request.extra.timeout is None:
                deadline = request.sentAt + timeout
                self.call = self._clock.callLater(max(0.0, deadline - now), self.checkDeadlines)
                break

    def _ownTimeout(self, request: _Request) -> None:
        extra = request.extra
        assert extra is not None
        extra.timer = None
        if not request.called:
            self._timedOut(request, f"timeout={extra.timeout}")

    def _timedOut(self, request: _Request, limit: str) -> None:
        self._events.timeouts += 1
        owner = self._owner
        where = owner.endpointDescription
        error = RequestTimeout(f"no response from {where} within {limit} seconds")
        connection = request.connection
        if connection is None or connection.state is CLOSING or connection.state is LOST:
            owner.requestFailed(request, error)
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
            owner.requestFailed(request, error)
        else:
            # A slow request is not a dead connection, but a silent one may be.
            silent = connection.silentSince(request)
            owner.abandonRequest(request, error)
            if silent:
                connection.probe()

    def cancel(self) -> None:
        """
        Stop the shared timer (nothing is pending, or the client closed).
        """
        if self.call is not None:
            self.call.cancel()
            self.call = None
