# -*- test-case-name: tests.test_client -*-
"""
The shared client: one lazily opened, counted connection per backend.

A L{SockShareClientFactory} has at most one I{usable} connection.  The first
request opens it through an endpoint; every concurrent request is
multiplexed over it; when the number of pending requests returns to zero the
connection is closed (after C{idleTimeout} seconds).  Failures never leave the
client stuck: the requests they touch fail, the client returns to idle and the
next request connects again.

The client is always in exactly one of these states, each a class below:

    - L{_Idle}: no usable connection.  A request starts a connection attempt.
    - L{_Connecting}: one attempt is under way; requests wait for it, in order.
    - L{_Connected}: requests are written at once; at zero pending the
      connection is closed, now or after C{idleTimeout}.
    - L{_Closing}: C{close()} was called; new requests are refused, the
      pending ones get up to C{closeTimeout} seconds to finish.
    - L{_Closed}: nothing pending, no connection left; C{close()} has fired.

Each connection has a life of its own (L{ConnectionState}): a connection the
client stops using (idle, retired, reset, lost) is no longer its usable one
from that moment, and is remembered only until its C{connectionLost}, so that
C{close()} can wait for the socket to be gone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._options import ClientOptions, parseEndpoint
from ._reactor import maybeGlobalReactor
from ._request import _Request, cancelRequest
from .codecs import NEXT, Codec
from .connection import CLOSING, LOST, ConnectionState, SockShareClientProtocol
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    InvalidRequest,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
    TooManyPending,
)
from .interfaces import ISockShareClient
from .stats import STAT_KEYS
from .wire import RESPONSE

_log = Logger(namespace="twisted_sockshare.client")


class _Idle:
    """No usable connection: the next request connects."""

    __slots__ = ()


class _Connecting:
    """
    One connection attempt is under way.

    @ivar waiting: the requests to write once connected, in order.
    @ivar attempt: the endpoint's Deferred.
    @ivar timeoutCall: cancels the attempt after C{connectTimeout}.
    @ivar abandoned: why we cancelled the attempt, if we did.
    """

    __slots__ = ("waiting", "attempt", "timeoutCall", "abandoned")

    def __init__(self, waiting: list[_Request]) -> None:
        self.waiting = waiting
        self.attempt: Deferred[Any] | None = None
        self.timeoutCall: IDelayedCall | None = None
        self.abandoned: str | None = None


class _Connected:
    """
    A usable connection: requests are written to it at once.

    @ivar idleCall: closes the connection after C{idleTimeout}, while no
        request is pending.
    """

    __slots__ = ("connection", "idleCall")

    def __init__(self, connection: SockShareClientProtocol) -> None:
        self.connection = connection
        self.idleCall: IDelayedCall | None = None


class _Closing:
    """
    C{close()} was called: requests are refused; the pending ones may finish
    until C{deadlineCall} fails them and aborts what is left.

    @ivar waiters: the Deferreds C{close()} returned.
    @ivar connecting: the attempt under way when C{close()} was called, if
        requests wait on it: they are sent, then that connection retires.
    """

    __slots__ = ("waiters", "connecting", "deadlineCall")

    def __init__(self, connecting: _Connecting | None) -> None:
        self.waiters: list[Deferred[None]] = []
        self.connecting = connecting
        self.deadlineCall: IDelayedCall | None = None


class _Closed:
    """Closed: every request is refused; nothing is left open."""

    __slots__ = ()


_IDLE = _Idle()
_CLOSED = _Closed()


@implementer(ISockShareClient)
class SockShareClientFactory(Factory):
    """
    A client that shares one lazily opened connection among all concurrent
    requests to one backend, counting them, and closes it when none is left.

    It is a Twisted C{Factory}: its endpoint builds one
    L{SockShareClientProtocol} per connection.

    @ivar endpointDescription: the endpoint, as messages name it: the
        endpoint string, or the endpoint's C{repr()}.
    @ivar options: the options, checked (L{ClientOptions}); each is also an
        attribute of the client (C{client.requestTimeout}...).
    """

    noisy = False
    protocol = SockShareClientProtocol

    #: The keys of L{stats}, in order.
    statKeys = STAT_KEYS

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | str,
        reactor: IReactorTime | None = None,
        *,
        idleTimeout: float | None = 0.0,
        connectTimeout: float | None = 10.0,
        requestTimeout: float | None = 30.0,
        maxPending: int = 10_000,
        maxPayload: int = 1_048_576,
        resetOnTimeout: bool = True,
        closeTimeout: float = 10.0,
        keepAlive: float | None = None,
        codec: Codec | None = None,
        maxLifetime: float | None = None,
        maxOrphans: int | None = None,
    ) -> None:
        """
        @param endpoint: where the backend is: any C{IStreamClientEndpoint}
            (TCP, TLS, UNIX, C{HostnameEndpoint}...), or an endpoint string
            for C{clientFromString} such as C{"tcp:127.0.0.1:9000"}.
        @param reactor: supplies the time and timers (and parses an endpoint
            string); the global reactor if L{None}.
        @param idleTimeout: seconds to keep the connection open once no
            request is pending; C{0} closes it as soon as the callbacks of the
            last response have run; L{None} keeps it open until L{close} (or
            until it fails).
        @param connectTimeout: seconds a connection attempt may take before
            the requests waiting on it fail with L{ConnectFailed}; L{None}
            leaves it to the endpoint.
        @param requestTimeout: seconds from L{request} to its response before
            it fails with L{RequestTimeout}; L{None} disables the timeout.
        @param maxPending: the most requests outstanding at once; one more
            fails at once with L{TooManyPending}.
        @param maxPayload: the largest payload, in bytes, sent (a larger one
            fails with L{PayloadTooLarge}) or received (a larger one is a
            L{ProtocolViolation}).
        @param resetOnTimeout: drop the connection when a request times out
            (the other requests on it fail with L{ConnectionDropped}); if
            false only the late request fails and its response is discarded.
        @param closeTimeout: seconds L{close} waits for pending requests
            (then they fail with L{ClientClosed} and the connections are
            aborted), and seconds a connection's graceful close may take
            before it is aborted.
        @param keepAlive: if not L{None}, TCP keepalive probes start after
            this many seconds of silence, so a backend that vanished without
            closing is found in about twice that long.
        @param codec: how requests and replies are written and matched
            (L{twisted_sockshare.codecs}); this project's multiplexed frames
            if L{None}.  An ordered (FIFO) codec needs C{resetOnTimeout}.
        @param maxLifetime: seconds after which a connection takes no new
            requests: the next request opens a fresh connection while the
            old one finishes the requests it has and closes.  L{None}: no
            limit.
        @param maxOrphans: with C{resetOnTimeout=False}, retire a connection
            (as for C{maxLifetime}) once more than this many of its requests
            timed out with no reply seen yet.  L{None}: no limit.
        @raise TypeError: if an option has the wrong type.
        @raise ValueError: if an option is out of range.
        """
        options = ClientOptions(
            idleTimeout=idleTimeout,
            connectTimeout=connectTimeout,
            requestTimeout=requestTimeout,
            maxPending=maxPending,
            maxPayload=maxPayload,
            resetOnTimeout=resetOnTimeout,
            closeTimeout=closeTimeout,
            keepAlive=keepAlive,
            codec=codec,
            maxLifetime=maxLifetime,
            maxOrphans=maxOrphans,
        )
        reactor = maybeGlobalReactor(reactor)
        self._endpoint, self.endpointDescription = parseEndpoint(reactor, endpoint)
        self.options = options
        self._clock: IReactorTime = reactor
        self._seconds = reactor.seconds
        self.idleTimeout = idleTimeout
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.maxPending = maxPending
        self.maxPayload = maxPayload
        self.resetOnTimeout = resetOnTimeout
        self.closeTimeout = closeTimeout
        self.keepAlive = keepAlive
        self.codec: Codec = options.codec  # type: ignore[assignment]
        self.maxLifetime = maxLifetime
        self.maxOrphans = maxOrphans
        # An ordered codec's requests are encoded by request(), in advance.
        self._encodeEarly = self.codec.ordered

        self._state: _Idle | _Connecting | _Connected | _Closing | _Closed = _IDLE
        # Pending requests in submission order, which is also deadline order.
        self._pending: dict[_Request, None] = {}
        # Connections not lost yet, usable or not.
        self._connections: set[SockShareClientProtocol] = set()
        self._deadlineCall: IDelayedCall | None = None

        self._peakPending = 0
        self._connectionsOpened = 0
        self._connectionsClosed = 0
        self._connectFailures = 0
        self._responses = 0
        self._remoteErrors = 0
        self._failures = 0
        self._timeouts = 0
        self._cancelled = 0
        self._rejected = 0
        self._lateResponses = 0
        self._retired = 0

    def __repr__(self) -> str:
        state = type(self._state).__name__[1:].lower()
        return f"<SockShareClientFactory {self.endpointDescription} {state} pending={len(self._pending)}>"

    def buildProtocol(self, addr: IAddress | None) -> SockShareClientProtocol:
        return SockShareClientProtocol(self, self.options, self._clock)

    @property
    def pending(self) -> int:
        """How many requests have been accepted and whose Deferred has not fired."""
        return len(self._pending)

    @property
    def connected(self) -> bool:
        """Whether a usable connection exists (connected, not closing or retired)."""
        return type(self._state) is _Connected

    @property
    def closed(self) -> bool:
        """Whether L{close} has been called."""
        return type(self._state) is _Closing or self._state is _CLOSED

    @property
    def openConnections(self) -> int:
        """How many connections are open, usable or not (retiring, closing)."""
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        """
        Counters since the client was made, keyed by L{statKeys}.

        C{requests} counts accepted requests, so C{requests == responses +
        remoteErrors + failures + pending} at every moment; C{rejected} counts
        requests refused at once (L{TooManyPending}, L{PayloadTooLarge},
        L{ClientClosed}, C{TypeError}, L{InvalidRequest}); C{timeouts} and
        C{cancelled} are among C{failures}.

        @return: a new dict of counter names to values.
        """
        pending = len(self._pending)
        return {
            "pending": pending,
            "peakPending": self._peakPending,
            "connected": int(type(self._state) is _Connected),
            "connectionsOpened": self._connectionsOpened,
            "connectionsClosed": self._connectionsClosed,
            "connectFailures": self._connectFailures,
            "requests": self._responses + self._remoteErrors + self._failures + pending,
            "responses": self._responses,
            "remoteErrors": self._remoteErrors,
            "failures": self._failures,
            "timeouts": self._timeouts,
            "cancelled": self._cancelled,
            "rejected": self._rejected,
            "lateResponses": self._lateResponses,
            "connectionsRetired": self._retired,
        }

    # -- Requests ------------------------------------------------------------

    def request(self, payload: bytes) -> Deferred[bytes]:
        """
        Send C{payload} to the backend and wait for its response.

        Connects first if no connection is usable; otherwise reuses the shared
        connection.  Never raises: every problem is a failed Deferred.

        @param payload: the request's bytes.
        @return: a Deferred that fires with the response's payload, or fails
            with L{RemoteError} (the backend answered with an error),
            L{ConnectFailed}, L{ConnectionDropped}, L{RequestTimeout},
            L{ProtocolViolation}, C{CancelledError} (the caller cancelled it),
            L{ClientClosed} (still pending C{closeTimeout} after L{close}), or
            at once with C{TypeError} (not bytes), L{TooManyPending},
            L{PayloadTooLarge}, L{InvalidRequest} or L{ClientClosed}.  It
            fires exactly once.
        """
        pending = self._pending
        count = len(pending)
        if (
            (type(payload) is not bytes and not isinstance(payload, bytes))
            or count >= self.maxPending
            or len(payload) > self.maxPayload
        ):
            return self._reject(payload)
        state = self._state
        if type(state) is _Closing or state is _CLOSED:
            return self._reject(payload)
        if self._encodeEarly:
            try:
                payload = self.codec.encodeRequest(NEXT, payload)
            except InvalidRequest as error:
                self._rejected += 1
                return fail(error)
        request = _Request(cancelRequest)
        request.client = self
        timeout = self.requestTimeout
        if timeout is None:
            request.deadline = None
        else:
            request.deadline = self._seconds() + timeout
            if self._deadlineCall is None:
                self._deadlineCall = self._clock.callLater(timeout, self._checkDeadlines)
        pending[request] = None
        if count >= self._peakPending:
            self._peakPending = count + 1
        if type(state) is _Connected:
            connection = state.connection
            if self.maxLifetime is None or self._seconds() - connection.openedAt < self.maxLifetime:
                if state.idleCall is not None:
                    state.idleCall.cancel()
                    state.idleCall = None
                connection.send(request, payload)
                return request
            self._retire(connection, f"older than maxLifetime={self.maxLifetime} seconds")
            state = self._state
        request.connection = None
        request.requestId = -1
        request.payload = payload
        if type(state) is _Connecting:
            state.waiting.append(request)
        else:
            self._connect(request)
        return request

    def _reject(self, payload: object) -> Deferred[bytes]:
        self._rejected += 1
        error: Exception
        if not isinstance(payload, bytes):
            error = TypeError(
                f"request() takes bytes, not {type(payload).__name__}; encode text first, e.g. text.encode('utf-8')"
            )
        elif self.closed:
            error = ClientClosed(f"the client for {self.endpointDescription} is closed; make a new one")
        elif len(payload) > self.maxPayload:
            error = PayloadTooLarge(
                f"payload of {len(payload)} bytes exceeds maxPayload={self.maxPayload}; "
                "raise maxPayload on both client and server to send it"
            )
        else:
            error = TooManyPending(
                f"{len(self._pending)} requests already pending to {self.endpointDescription} "
                f"(maxPending={self.maxPending}); retry later or raise maxPending"
            )
        return fail(error)

    # -- What connections tell the client (ConnectionOwner) ----------------------

    def _settle(self, request: _Request, kind: int, payload: bytes) -> None:
        pending = self._pending
        del pending[request]
        if kind == RESPONSE:
            self._responses += 1
            request.callback(payload)
        else:
            self._remoteErrors += 1
            request.errback(Failure(RemoteError(payload.decode("utf-8", "replace"))))
        if not pending:
            self._quiet()

    def _fail(self, request: _Request, error: BaseException) -> None:
        pending = self._pending
        del pending[request]
        self._failures += 1
        request.errback(Failure(error))
        if not pending:
            self._quiet()

    def _lateReply(self) -> None:
        self._lateResponses += 1

    def _connectionUnusable(self, connection: SockShareClientProtocol) -> None:
        state = self._state
        if type(state) is _Connected and state.connection is connection:
            if state.idleCall is not None:
                state.idleCall.cancel()
            self._state = _IDLE

    def _connectionGone(self, connection: SockShareClientProtocol, tlsFailed: bool) -> None:
        self._connectionsClosed += 1
        if tlsFailed:
            self._connectFailures += 1
        self._connections.discard(connection)
        self._connectionUnusable(connection)
        if not self._pending:
            self._quiet()

    def _cancelRequest(self, request: _Request) -> None:
        if request.called:
            return
        if request.connection is not None:
            request.connection.forget(request)
        self._cancelled += 1
        self._fail(request, CancelledError("request cancelled by the caller"))

    # -- Request timeouts ----------------------------------------------------

    def _checkDeadlines(self) -> None:
        """
        Time out the requests past their deadline.  One timer serves every
        request: it is set for the oldest pending request's deadline, and
        moved forward when that request has already been answered.
        """
        self._deadlineCall = None
        now = self._seconds()
        expired = []
        for request in self._pending:
            if request.deadline > now:  # type: ignore[operator]
                break
            expired.append(request)
        for request in expired:
            if not request.called:
                self._timedOut(request)
        if self._pending:
            # A request made by an errback above may have set a later timer.
            self._cancelDeadlines()
            deadline = next(iter(self._pending)).deadline
            assert deadline is not None
            self._deadlineCall = self._clock.callLater(max(0.0, deadline - now), self._checkDeadlines)

    def _timedOut(self, request: _Request) -> None:
        self._timeouts += 1
        error = RequestTimeout(
            f"no response from {self.endpointDescription} within requestTimeout={self.requestTimeout} seconds"
        )
        connection = request.connection
        if connection is None or connection.state is CLOSING or connection.state is LOST:
            self._fail(request, error)
            return
        if self.resetOnTimeout:
            _log.warn(
                "Request to {endpoint} timed out; resetting its connection ({others} other requests on it fail)",
                endpoint=self.endpointDescription,
                others=connection.outstanding - 1,
            )
            connection.forget(request)
            connection.abort(
                ConnectionDropped(
                    f"connection to {self.endpointDescription} was reset because another "
                    "request on it timed out (resetOnTimeout=True)"
                )
            )
            self._fail(request, error)
            return
        connection.forget(request, orphan=True)
        self._fail(request, error)
        if self.maxOrphans is not None and connection.orphans > self.maxOrphans:
            self._retire(connection, f"more than maxOrphans={self.maxOrphans} timed-out requests")

    def _cancelDeadlines(self) -> None:
        if self._deadlineCall is not None:
            self._deadlineCall.cancel()
            self._deadlineCall = None

    # -- The client's life ------------------------------------------------------

    def _connect(self, first: _Request) -> None:
        connecting = _Connecting([first])
        self._state = connecting
        _log.debug("Connecting to {endpoint}", endpoint=self.endpointDescription)
        attempt = maybeDeferred(self._endpoint.connect, self)
        connecting.attempt = attempt
        if self.connectTimeout is not None and not attempt.called:
            connecting.timeoutCall = self._clock.callLater(self.connectTimeout, self._connectTimedOut, connecting)
        attempt.addCallbacks(
            self._connectSucceeded, self._connectFailed, callbackArgs=(connecting,), errbackArgs=(connecting,)
        )

    def _connectTimedOut(self, connecting: _Connecting) -> None:
        connecting.timeoutCall = None
        self._abandon(connecting, f"connectTimeout={self.connectTimeout} seconds exceeded")

    def _abandon(self, connecting: _Connecting, why: str) -> None:
        if connecting.abandoned is None and connecting.attempt is not None:
            connecting.abandoned = why
            connecting.attempt.cancel()

    def _attemptEnded(self, connecting: _Connecting) -> list[_Request]:
        """
        The attempt succeeded or failed: forget it, and return the requests
        that still wait on it.
        """
        if connecting.timeoutCall is not None:
            connecting.timeoutCall.cancel()
            connecting.timeoutCall = None
        state = self._state
        if state is connecting:
            self._state = _IDLE
        elif type(state) is _Closing and state.connecting is connecting:
            state.connecting = None
        waiting, connecting.waiting = connecting.waiting, []
        return [request for request in waiting if not request.called]

    def _connectSucceeded(self, connection: SockShareClientProtocol, connecting: _Connecting) -> None:
        current = self._state is connecting
        waiting = self._attemptEnded(connecting)
        self._connectionsOpened += 1
        if connection.state is LOST:
            # connectionLost ran before the endpoint reported the connection.
            self._connectFailed(
                Failure(ConnectionDropped("connection lost as soon as it was made")), connecting, waiting
            )
            return
        _log.debug("Connected to {endpoint}", endpoint=self.endpointDescription)
        self._connections.add(connection)
        if current:
            self._state = _Connected(connection)
        for request in waiting:
            payload, request.payload = request.payload, None
            connection.send(request, payload)  # type: ignore[arg-type]
        if not current:
            connection.retire()
        if not self._pending:
            self._quiet()

    def _connectFailed(self, reason: Failure, connecting: _Connecting, waiting: list[_Request] | None = None) -> None:
        if waiting is None:
            waiting = self._attemptEnded(connecting)
        why = connecting.abandoned or reason.getErrorMessage()
        if connecting.abandoned != "closing":
            self._connectFailures += 1
            _log.warn("Could not connect to {endpoint}: {why}", endpoint=self.endpointDescription, why=why)
        error = ConnectFailed(f"could not connect to {self.endpointDescription}: {why}")
        for request in waiting:
            if not request.called:
                self._fail(request, error)
        if not self._pending:
            self._quiet()

    def _quiet(self) -> None:
        """
        The pending count is zero: close what is no longer needed.
        """
        state = self._state
        if type(state) is _Connected:
            if self.idleTimeout == 0:
                self._closeIdle(state)
            elif state.idleCall is None and self.idleTimeout is not None:
                state.idleCall = self._clock.callLater(self.idleTimeout, self._closeIdle, state)
        elif state is _IDLE:
            self._cancelDeadlines()
        elif type(state) is _Closing:
            if state.connecting is not None:
                self._abandon(state.connecting, "closing")
            self._maybeClosed(state)

    def _closeIdle(self, state: _Connected) -> None:
        state.idleCall = None
        if self._state is not state or self._pending:
            return
        _log.debug("Closing idle connection to {endpoint}", endpoint=self.endpointDescription)
        self._state = _IDLE
        self._cancelDeadlines()
        state.connection.close()

    def _retire(self, connection: SockShareClientProtocol, why: str) -> None:
        """
        Stop sending new requests to C{connection} (the next one connects
        afresh); let the requests on it be answered, then close it.
        """
        _log.info("Retiring the connection to {endpoint}: {why}", endpoint=self.endpointDescription, why=why)
        self._retired += 1
        connection.retire()

    # -- Closing ---------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Close the client: new requests fail with L{ClientClosed}; the pending
        ones get up to C{closeTimeout} seconds to finish, then fail with
        L{ClientClosed} while every connection is aborted.

        @return: a Deferred that fires with L{None} once nothing is pending
            and no connection of this client is left.  Calling it again is
            harmless.
        """
        state = self._state
        if state is _CLOSED:
            return succeed(None)
        if type(state) is not _Closing:
            _log.debug(
                "Closing the client for {endpoint} ({pending} requests pending)",
                endpoint=self.endpointDescription,
                pending=len(self._pending),
            )
            closing = _Closing(state if type(state) is _Connecting else None)
            closing.deadlineCall = self._clock.callLater(self.closeTimeout, self._closeTimedOut, closing)
            self._state = closing
            if type(state) is _Connected and state.idleCall is not None:
                state.idleCall.cancel()
            for connection in list(self._connections):
                connection.retire()
            state = closing
        assert type(state) is _Closing
        waiter: Deferred[None] = Deferred()
        state.waiters.append(waiter)
        if not self._pending:
            self._quiet()
        return waiter

    def _closeTimedOut(self, closing: _Closing) -> None:
        """
        C{closeTimeout} passed since L{close}: fail what is still pending and
        abort every connection.
        """
        closing.deadlineCall = None
        error = ClientClosed(
            f"the client for {self.endpointDescription} was closed and the request was still pending "
            f"closeTimeout={self.closeTimeout} seconds later"
        )
        for request in list(self._pending):
            if not request.called:
                if request.connection is not None:
                    request.connection.forget(request)
                self._fail(request, error)
        if closing.connecting is not None:
            self._abandon(closing.connecting, "closing")
        for connection in list(self._connections):
            connection.abort()
        self._maybeClosed(closing)

    def _maybeClosed(self, closing: _Closing) -> None:
        if self._state is not closing or self._pending or self._connections or closing.connecting is not None:
            return
        if closing.deadlineCall is not None:
            closing.deadlineCall.cancel()
            closing.deadlineCall = None
        self._cancelDeadlines()
        self._state = _CLOSED
        waiters, closing.waiters = closing.waiters, []
        for waiter in waiters:
            waiter.callback(None)


__all__ = ["SockShareClientFactory", "SockShareClientProtocol", "ConnectionState"]
