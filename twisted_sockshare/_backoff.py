# -*- test-case-name: tests.test_lifecycle -*-
"""
The connect backoff of a shared client: after a failed connect attempt the
next one waits C{connectBackoff}; requests made meanwhile fail at once with
C{ConnectFailed}, but those made with C{waitForReady} wait for the end of the
wait (until their own timeout, or C{connectTimeout}).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._request import _Request
from .errors import ConnectFailed

_log = Logger(namespace="twisted_sockshare.client")

#: The default connect backoff: 0.1 s after the first failure in a row,
#: doubling, up to 5 s, plus up to 0.1 s of jitter.
defaultBackoff = backoffPolicy(initialDelay=0.1, maxDelay=5.0, factor=2.0, jitter=lambda: random.random() * 0.1)


class BackoffOwner(Protocol):
    """
    What the backoff needs of its client.
    """

    endpointDescription: str
    connectTimeout: float | None

    def requestFailed(self, request: _Request, error: BaseException) -> None:
        """C{request} failed with C{error}."""

    def requestUnsent(self, request: _Request, payload: bytes) -> None:
        """Send C{request} (its wait is over)."""


class ConnectBackoff:
    """
    Connect failures in a row and the wait they impose.

    @ivar failuresInRow: connect failures since the last success.
    @ivar retryAt: when the next attempt may start.
    @ivar lastError: why the last attempt failed.
    """

    def __init__(self, owner: BackoffOwner, clock: IReactorTime, policy: Callable[[int], float] | None) -> None:
        self._owner = owner
        self._clock = clock
        self._policy = policy or defaultBackoff
        self.failuresInRow = 0
        # The failures in a row before the last connection was made: a TLS
        # handshake that then fails continues that streak.
        self._failuresBeforeConnect = 0
        self.retryAt = 0.0
        self.lastError = ""
        # The requests waiting for the end of the wait (waitForReady), and
        # the timer that sends them.
        self._waiters: list[_Request] | None = None
        self._readyCall: IDelayedCall | None = None

    def holding(self, now: float) -> bool:
        """
        Whether attempts are held back at C{now}.
        """
        return self.retryAt > now

    def connected(self) -> None:
        """
        An attempt succeeded: the streak ends.
        """
        self._failuresBeforeConnect, self.failuresInRow = self.failuresInRow, 0

    def failed(self, why: str) -> None:
        """
        An attempt failed (C{why}): the next one waits.
        """
        self._backOff(self.failuresInRow, why)

    def handshakeFailed(self) -> None:
        """
        The TLS handshake of the connection just made failed: a failed
        connect, as a refused one is.
        """
        self._backOff(self._failuresBeforeConnect, "the TLS handshake failed")

    def _backOff(self, failuresBefore: int, why: str) -> None:
        delay = self._policy(failuresBefore)
        self.failuresInRow = failuresBefore + 1
        self.retryAt = self._clock.seconds() + delay
        self.lastError = why
        _log.warn(
            "Could not connect to {endpoint}: {why}; next attempt in {delay:.2f} s at the earliest",
            endpoint=self._owner.endpointDescription,
            why=why,
            delay=delay,
        )

    def refusal(self) -> ConnectFailed:
        """
        What a request made while attempts are held back fails with.
        """
        wait = self.retryAt - self._clock.seconds()
        return ConnectFailed(
            f"could not connect to {self._owner.endpointDescription}: {self.lastError} "
            f"({self.failuresInRow} attempts failed in a row; the next in {wait:.2f} s)"
        )

    def waitForReady(self, request: _Request) -> None:
        """
        C{request} (made with C{waitForReady}) waits for the end of the wait
        rather than failing now.
        """
        extra = request.extra
        assert extra is not None
        clock = self._clock
        connectTimeout = self._owner.connectTimeout
        if extra.timer is None and extra.timeout is None and connectTimeout is not None:
            # Its own timeout bounds its wait if it has one; else connectTimeout.
            left = request.sentAt + connectTimeout - clock.seconds()
            extra.timer = clock.callLater(max(0.0, left), self._readyTimedOut, request)
            request.addBoth(extra.stop)
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(request)
        if self._readyCall is None:
            self._readyCall = clock.callLater(max(0.0, self.retryAt - clock.seconds()), self._readyAgain)

    def _readyAgain(self) -> None:
        """
        The wait is over: the requests that waited go out (the first starts
        the next attempt).
        """
        self._readyCall = None
        waiters, self._waiters = self._waiters or [], None
        for request in waiters:
            if not request.called:
                payload, request.payload = request.payload, None
                self._owner.requestUnsent(request, payload)  # type: ignore[arg-type]

    def _readyTimedOut(self, request: _Request) -> None:
        """
        A request made with C{waitForReady} and no timeout of its own waited
        C{connectTimeout} seconds: if it is still not written, it fails.
        """
        assert request.extra is not None
        request.extra.timer = None
        if not request.called and request.connection is None:
            owner = self._owner
            self._owner.requestFailed(
                request,
                ConnectFailed(
                    f"could not connect to {owner.endpointDescription} within connectTimeout={owner.connectTimeout} "
                    f"seconds (waitForReady): {self.lastError or 'the attempt did not complete'}"
                ),
            )

    def stopWaiting(self, error: BaseException) -> None:
        """
        Fail every request waiting for the end of the wait with C{error}
        (the client is closing: there is no next attempt).
        """
        if self._readyCall is not None:
            self._readyCall.cancel()
            self._readyCall = None
        waiters, self._waiters = self._waiters or [], None
        for request in waiters:
            if not request.called:
                self._owner.requestFailed(request, error)
