"""
How a shared client gets its connection: one attempt at a time through its
endpoint, the requests made meanwhile waiting for it in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._request import _Request
from ._states import _IDLE, _Closing, _Connected, _Connecting, _Idle, _State
from .connection import LIVE, LOST, SockShareClientProtocol
from .errors import ConnectFailed, ConnectionDropped
from .stats import _Events

_log = Logger(namespace="twisted_sockshare.client")


class _Connector:
    """
    The connection attempts of L{twisted_sockshare.SockShareClientFactory},
    mixed into it: from C{_Idle} to C{_Connecting}, and from there to
    C{_Connected} or back to C{_Idle} (or, once C{close()} was called, the
    attempt's requests are sent and its connection retires at once).  After
    a failed attempt the next one waits C{connectBackoff}: requests made
    meanwhile fail at once with C{ConnectFailed}, but those made with
    C{waitForReady} wait for the next attempt (until their own timeout, or
    C{connectTimeout}).
    """

    # Connect failures in a row, and when the next attempt may start.
    _failuresInRow = 0
    # The failures in a row before the last connection was made: a TLS
    # handshake that then fails continues that streak.
    _failuresBeforeConnect = 0
    _retryAt = 0.0
    _lastConnectError = ""
    # The requests waiting for the next attempt (waitForReady), and the
    # timer that starts it.
    _readyWaiters: list[_Request] | None = None
    _readyCall: IDelayedCall | None = None

    # What the client provides.
    _connectBackoff: Callable[[int], float]
    _state: _State
    _endpoint: IStreamClientEndpoint
    _clock: IReactorTime
    _pending: dict[_Request, None]
    _connections: set[SockShareClientProtocol]
    endpointDescription: str
    noisy: bool
    connectTimeout: float | None
    _events: _Events
    requestFailed: Callable[[_Request, BaseException], None]
    _quiet: Callable[[], None]
    _on: Callable[..., Any]
    _moveTo: Callable[[str, _State], None]
    _dispatch: Callable[[_Request, bytes], None]

    # Actions of the lifecycle table (_lifecycle.CLIENT): each takes the
    # state it runs in.

    def _startAttempt(self, idle: _Idle, first: _Request) -> None:
        self._moveTo("send", connecting := _Connecting(first))
        if self.noisy:
            _log.debug("Connecting to {endpoint}", endpoint=self.endpointDescription)
        attempt = connecting.start(self._endpoint, self, self._clock, self.connectTimeout)  # type: ignore[arg-type]
        attempt.addCallbacks(
            self._connectSucceeded, self._connectFailed, callbackArgs=(connecting,), errbackArgs=(connecting,)
        )

    def _failFast(self, idle: _Idle, first: _Request) -> None:
        if first.extra is not None and first.extra.waitForReady:
            self._waitForReady(first)
            return
        # Backing off after failed attempts: fail fast, do not queue.
        wait = self._retryAt - self._clock.seconds()
        self.requestFailed(
            first,
            ConnectFailed(
                f"could not connect to {self.endpointDescription}: {self._lastConnectError} "
                f"({self._failuresInRow} attempts failed in a row; the next in {wait:.2f} s)"
            ),
        )

    def _queue(self, connecting: _Connecting, request: _Request) -> None:
        connecting.waiting.append(request)

    def _keepConnecting(self, connecting: _Connecting) -> None:
        pass

    def _connectSucceeded(self, connection: SockShareClientProtocol, connecting: _Connecting) -> None:
        self._events.connectionsOpened += 1
        self._failuresBeforeConnect, self._failuresInRow = self._failuresInRow, 0
        if connection.state is LOST:
            # connectionLost ran before the endpoint reported the connection.
            reason = Failure(ConnectionDropped("connection lost as soon as it was made"))
            self._on("connectFailed", reason, connecting)
        else:
            self._on("connected", connection, connecting)

    def _connectFailed(self, reason: Failure, connecting: _Connecting) -> None:
        self._on("connectFailed", reason, connecting)

    def _useConnection(
        self, connecting: _Connecting, connection: SockShareClientProtocol, attempt: _Connecting
    ) -> None:
        self._moveTo("connected", _Connected(connection))
        if self.noisy:
            _log.debug("Connected to {endpoint}", endpoint=self.endpointDescription)
        self._writeWaiting(connection, attempt.end())
        if not self._pending:
            self._quiet()

    def _sendLast(self, closing: _Closing, connection: SockShareClientProtocol, attempt: _Connecting) -> None:
        # The client is closing: the requests that waited are the last.
        closing.connecting = None
        self._writeWaiting(connection, attempt.end())
        connection.retire()
        if not self._pending:
            self._quiet()

    def _writeWaiting(self, connection: SockShareClientProtocol, waiting: list[_Request]) -> None:
        self._connections.add(connection)
        for request in waiting:
            payload, request.payload = request.payload, None
            if connection.state is LIVE:
                connection.send(request, payload)  # type: ignore[arg-type]
            else:  # it took its last request (maxRequestsPerConnection, ids)
                self._dispatch(request, payload)  # type: ignore[arg-type]

    def _failWaiting(self, state: _Connecting | _Closing, reason: Failure, attempt: _Connecting) -> None:
        if state is attempt:
            self._moveTo("connectFailed", _IDLE)
            closing = attempt.abandoned == "closing"
        else:
            state.connecting = None  # type: ignore[union-attr]
            closing = True
        waiting = attempt.end()
        why = attempt.abandoned or reason.getErrorMessage()
        if attempt.abandoned != "closing":
            self._events.connectFailures += 1
            self._backOff(self._failuresInRow, why)
        error = ConnectFailed(f"could not connect to {self.endpointDescription}: {why}")
        for request in waiting:
            if not request.called:
                if request.extra is not None and request.extra.waitForReady and not closing:
                    self._waitForReady(request)
                else:
                    self.requestFailed(request, error)
        if not self._pending:
            self._quiet()

    def _waitForReady(self, request: _Request) -> None:
        """
        C{request} (made with C{waitForReady}) waits for the next connect
        attempt, at the end of the backoff, rather than failing now.
        """
        extra = request.extra
        assert extra is not None
        if extra.timer is None and extra.timeout is None and self.connectTimeout is not None:
            # Its own timeout bounds its wait if it has one; else connectTimeout.
            left = request.sentAt + self.connectTimeout - self._clock.seconds()
            extra.timer = self._clock.callLater(max(0.0, left), self._readyTimedOut, request)
            request.addBoth(extra.stop)
        if self._readyWaiters is None:
            self._readyWaiters = []
        self._readyWaiters.append(request)
        if self._readyCall is None:
            wait = max(0.0, self._retryAt - self._clock.seconds())
            self._readyCall = self._clock.callLater(wait, self._readyAgain)

    def _readyAgain(self) -> None:
        """
        The backoff is over: the requests that waited for it go out (the
        first starts the next attempt).
        """
        self._readyCall = None
        waiters, self._readyWaiters = self._readyWaiters or [], None
        for request in waiters:
            if not request.called:
                payload, request.payload = request.payload, None
                self._dispatch(request, payload)  # type: ignore[arg-type]

    def _readyTimedOut(self, request: _Request) -> None:
        """
        A request made with C{waitForReady} and no timeout of its own waited
        C{connectTimeout} seconds: if it is still not written, it fails.
        """
        assert request.extra is not None
        request.extra.timer = None
        if not request.called and request.connection is None:
            self.requestFailed(
                request,
                ConnectFailed(
                    f"could not connect to {self.endpointDescription} within connectTimeout={self.connectTimeout} "
                    f"seconds (waitForReady): {self._lastConnectError or 'the attempt did not complete'}"
                ),
            )

    def _stopWaitingForReady(self, error: BaseException) -> None:
        """
        Fail every request waiting for the next attempt with C{error} (the
        client is closing: there is none).
        """
        if self._readyCall is not None:
            self._readyCall.cancel()
            self._readyCall = None
        waiters, self._readyWaiters = self._readyWaiters or [], None
        for request in waiters:
            if not request.called:
                self.requestFailed(request, error)

    def _backOff(self, failuresBefore: int, why: str) -> None:
        """
        A connect failed (C{why}) after C{failuresBefore} in a row: the next
        attempt waits C{connectBackoff}, and requests meanwhile fail at once.
        """
        delay = self._connectBackoff(failuresBefore)
        self._failuresInRow = failuresBefore + 1
        self._retryAt = self._clock.seconds() + delay
        self._lastConnectError = why
        _log.warn(
            "Could not connect to {endpoint}: {why}; next attempt in {delay:.2f} s at the earliest",
            endpoint=self.endpointDescription,
            why=why,
            delay=delay,
        )

    def _handshakeFailed(self) -> None:
        """
        The TLS handshake of the connection just made failed: a failed
        connect, for the backoff and L{reachable}, as a refused one is.
        """
        self._backOff(self._failuresBeforeConnect, "the TLS handshake failed")

    @property
    def backingOff(self) -> bool:
        """
        Whether connect attempts are being held back after failures: a
        request now fails at once with C{ConnectFailed}.
        """
        return self._retryAt > self._clock.seconds()
