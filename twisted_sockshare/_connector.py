"""
How a shared client gets its connection: one attempt at a time through its
endpoint, the requests made meanwhile waiting for it in order.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._request import _Request
from ._states import _IDLE, _Closing, _Connected, _Connecting, _State
from .connection import LOST, SockShareClientProtocol
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
    meanwhile fail at once with C{ConnectFailed}.
    """

    # Connect failures in a row, and when the next attempt may start.
    _failuresInRow = 0
    # The failures in a row before the last connection was made: a TLS
    # handshake that then fails continues that streak.
    _failuresBeforeConnect = 0
    _retryAt = 0.0
    _lastConnectError = ""

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
    _fail: Callable[[_Request, BaseException], None]
    _quiet: Callable[[], None]

    def _connect(self, first: _Request) -> None:
        wait = self._retryAt - self._clock.seconds()
        if wait > 0:
            # Backing off after failed attempts: fail fast, do not queue.
            self._fail(
                first,
                ConnectFailed(
                    f"could not connect to {self.endpointDescription}: {self._lastConnectError} "
                    f"({self._failuresInRow} attempts failed in a row; the next in {wait:.2f} s)"
                ),
            )
            return
        self._state = connecting = _Connecting(first)
        if self.noisy:
            _log.debug("Connecting to {endpoint}", endpoint=self.endpointDescription)
        attempt = connecting.start(self._endpoint, self, self._clock, self.connectTimeout)  # type: ignore[arg-type]
        attempt.addCallbacks(
            self._connectSucceeded, self._connectFailed, callbackArgs=(connecting,), errbackArgs=(connecting,)
        )

    def _attemptEnded(self, connecting: _Connecting) -> list[_Request]:
        """
        Leave C{connecting} (the attempt succeeded or failed) and return the
        requests that still wait on it.
        """
        state = self._state
        if state is connecting:
            self._state = _IDLE
        elif type(state) is _Closing and state.connecting is connecting:
            state.connecting = None
        return connecting.end()

    def _connectSucceeded(self, connection: SockShareClientProtocol, connecting: _Connecting) -> None:
        current = self._state is connecting
        waiting = self._attemptEnded(connecting)
        self._events.connectionsOpened += 1
        self._failuresBeforeConnect, self._failuresInRow = self._failuresInRow, 0
        if connection.state is LOST:
            # connectionLost ran before the endpoint reported the connection.
            self._connectFailed(
                Failure(ConnectionDropped("connection lost as soon as it was made")), connecting, waiting
            )
            return
        if self.noisy:
            _log.debug("Connected to {endpoint}", endpoint=self.endpointDescription)
        self._connections.add(connection)
        if current:
            self._state = _Connected(connection)
        for request in waiting:
            payload, request.payload = request.payload, None
            connection.send(request, payload)  # type: ignore[arg-type]
        if not current:  # the client is closing: these requests are the last
            connection.retire()
        if not self._pending:
            self._quiet()

    def _connectFailed(self, reason: Failure, connecting: _Connecting, waiting: list[_Request] | None = None) -> None:
        if waiting is None:
            waiting = self._attemptEnded(connecting)
        why = connecting.abandoned or reason.getErrorMessage()
        if connecting.abandoned != "closing":
            self._events.connectFailures += 1
            self._backOff(self._failuresInRow, why)
        error = ConnectFailed(f"could not connect to {self.endpointDescription}: {why}")
        for request in waiting:
            if not request.called:
                self._fail(request, error)
        if not self._pending:
            self._quiet()

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
