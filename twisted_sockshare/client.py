# -*- test-case-name: tests.test_client -*-
"""
The shared client: one lazily opened, counted connection per backend.

A L{SockShareClientFactory} owns at most one I{usable} connection.  The first
request opens it through an endpoint; every concurrent request is multiplexed
over it; when the number of pending requests returns to zero the connection is
closed (after C{idleTimeout} seconds).  Failures never leave the client stuck:
the requests they touch fail, the state returns to idle and the next request
connects again.

The factory is always in exactly one of these states:

    - L{_Idle}: no usable connection.  A request starts a connection attempt.
    - L{_Connecting}: one attempt is under way; requests wait for it, in order.
    - L{_Connected}: requests are written at once; when the pending count
      drops to zero the connection is closed, now or after C{idleTimeout}.

A connection whose close has begun is I{detached}: the factory forgets it as
soon as the close starts (moving back to L{_Idle}), so no request is ever
written to it; it is remembered only until its C{connectionLost}, so that
C{close()} can wait for the socket to be gone.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .codecs import NEXT, Codec, Multiplexed
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    InvalidRequest,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    TooManyPending,
)
from .wire import MAX_REQUEST_ID, MIN_LENGTH, REQUEST, RESPONSE, packHeader

_MAX_PAYLOAD = MAX_REQUEST_ID - MIN_LENGTH

_log = Logger(namespace="twisted_sockshare.client")


class _Request(Deferred[bytes]):
    """
    One request, from L{SockShareClientFactory.request} until it fires: it is
    the Deferred handed to the caller, so a request costs one object.  Its
    attributes are set by L{SockShareClientFactory.request}.

    @ivar factory: the client it belongs to.
    @ivar payload: what to send, while the request waits for a connection.
    @ivar deadline: when the request times out (L{None}: never).
    @ivar connection: the connection it was written to (L{None}: still queued).
    @ivar requestId: its id on that connection.
    """

    __slots__ = ("factory", "payload", "deadline", "connection", "requestId")

    factory: SockShareClientFactory
    payload: bytes | None
    deadline: float | None
    connection: SockShareClientProtocol | None
    requestId: int


def _cancelRequest(request: Deferred[bytes]) -> None:
    """
    The canceller of every L{_Request}.
    """
    assert isinstance(request, _Request)
    request.factory._cancelRequest(request)


class SockShareClientProtocol(Protocol):
    """
    One connection of a L{SockShareClientFactory}: writes request frames and
    matches response frames to the requests outstanding on it.

    @ivar closing: the factory detached this connection (its close has
        begun); nothing is written to it any more.
    @ivar lost: C{connectionLost} has run.
    """

    closing = False
    lost = False
    #: Some bytes came from the server on this connection.
    received = False
    #: Aborts the connection if its graceful close takes too long.
    abortCall: IDelayedCall | None = None
    #: Retired (too old, or too many orphans): it takes no new requests, and
    #: closes once the requests on it are answered.
    draining = False
    #: When the connection was made (the factory's clock).
    openedAt = 0.0
    #: Requests that timed out on it with their reply not yet seen.
    orphans = 0

    def __init__(self, factory: SockShareClientFactory) -> None:
        self._factory = factory
        self._decoder = factory.codec.decoder(factory.maxPayload)
        self._encode = factory._encodeAtSend
        self._ordered = factory.codec.ordered
        # Requests by id, in the order written.  With an ordered codec a
        # forgotten request keeps its slot (None) until its reply comes.
        self._outstanding: dict[int, _Request | None] = {}
        self._nextId = 0
        # While responses are being delivered, the requests their callbacks
        # send are collected here and written with one writeSequence.
        self._batch: list[bytes] | None = None

    def connectionMade(self) -> None:
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        if self._factory.keepAlive is not None:
            _enableKeepAlive(self.transport, self._factory.keepAlive)

    def sendRequest(self, request: _Request, payload: bytes) -> None:
        """
        Write C{request} on this connection with an id not outstanding on it.
        """
        outstanding = self._outstanding
        requestId = self._nextId
        while requestId in outstanding:
            requestId = (requestId + 1) & MAX_REQUEST_ID
        self._nextId = (requestId + 1) & MAX_REQUEST_ID
        request.requestId = requestId
        request.connection = self
        outstanding[requestId] = request
        encode = self._encode
        if encode is None:
            frame = packHeader(MIN_LENGTH + len(payload), requestId, REQUEST) + payload
        else:
            frame = encode(requestId, payload)
        if self._batch is not None:
            self._batch.append(frame)
        else:
            self.transport.write(frame)  # type: ignore[union-attr]

    def forget(self, request: _Request) -> None:
        """
        Stop waiting for C{request}'s response (it timed out or was
        cancelled); if the response comes, it is discarded as late.  With
        an ordered codec the request keeps its place in line, so its reply
        is not taken for the next request's.
        """
        if self._ordered and request.requestId in self._outstanding:
            self._outstanding[request.requestId] = None
        else:
            self._outstanding.pop(request.requestId, None)

    def takeOutstanding(self) -> list[_Request]:
        """
        Remove and return every request outstanding on this connection.
        """
        requests = [request for request in self._outstanding.values() if request is not None]
        # Cleared in place: responses still being delivered from the same
        # chunk then find nothing, and count as late.
        self._outstanding.clear()
        return requests

    @property
    def outstanding(self) -> int:
        """
        How many requests wait for a response on this connection.
        """
        return len(self._outstanding)

    def dataReceived(self, data: bytes) -> None:
        self.received = True
        frames = self._decoder.feed(data)
        if frames:
            batch: list[bytes] = []
            self._batch = batch
            try:
                self._factory._answered(self, frames)
            finally:
                self._batch = None
                # If the connection was detached meanwhile, the requests in
                # the batch were failed with it: their frames are not written.
                if batch and not self.closing:
                    self.transport.writeSequence(batch)  # type: ignore[union-attr]
        violation = self._decoder.violation
        if violation is not None and not self.lost:
            self._factory._protocolViolation(self, violation)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._factory._connectionLost(self, reason)


class _Idle:
    """
    No usable connection: the next request connects.
    """

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

    __slots__ = ("protocol", "idleCall")

    def __init__(self, protocol: SockShareClientProtocol) -> None:
        self.protocol = protocol
        self.idleCall: IDelayedCall | None = None


_IDLE = _Idle()


def _enableKeepAlive(transport: object, idle: float) -> None:
    """
    Turn on TCP keepalive probes after C{idle} seconds of silence, every
    C{idle / 3} seconds, 3 of them: a peer that vanished without a FIN is
    found in about C{2 * idle} seconds.  Transports that are not TCP are left
    alone.
    """
    setKeepAlive = getattr(transport, "setTcpKeepAlive", None)
    if setKeepAlive is None:
        return
    setKeepAlive(True)
    handle = getattr(transport, "getHandle", lambda: None)()
    setsockopt = getattr(handle, "setsockopt", None)
    if setsockopt is None:
        return
    for option, value in [("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle / 3), ("TCP_KEEPCNT", 3)]:
        if hasattr(socket, option):
            try:
                setsockopt(socket.IPPROTO_TCP, getattr(socket, option), max(1, int(value)))
            except OSError:
                _log.debug("Could not set {option}", option=option)


def _asEncoded(requestId: int, frame: bytes) -> bytes:
    """
    The send-time encoder of ordered codecs: the request was encoded already.
    """
    return frame


_MULTIPLEXED = Multiplexed()


def _isTLSError(reason: Failure) -> bool:
    """
    Whether C{reason} is an error of the TLS layer (pyOpenSSL's).
    """
    try:
        from OpenSSL.SSL import Error
    except ImportError:  # no pyOpenSSL: no TLS either
        return False
    return reason.check(Error) is not None


def _describeEndpoint(endpoint: object) -> str:
    """
    A short human description of an endpoint, for messages.
    """
    for inner in ("_wrappedEndpoint", "_endpoint"):
        wrapped = getattr(endpoint, inner, None)
        if wrapped is not None and wrapped is not endpoint:
            return _describeEndpoint(wrapped)
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if host is not None and port is not None:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    path = getattr(endpoint, "_path", None)
    if path is not None:
        return f"unix:{path}"
    return repr(endpoint)


class SockShareClientFactory(Factory):
    """
    A client that shares one lazily opened connection among all concurrent
    requests to one backend, counting them, and closes it when none is left.

    @ivar maxPayload: the largest payload sent or accepted, in bytes.
    @ivar maxPending: the most requests outstanding at once.
    """

    noisy = False
    protocol = SockShareClientProtocol

    #: The keys of L{stats}, in order.
    statKeys = (
        "pending",
        "peakPending",
        "connected",
        "connectionsOpened",
        "connectionsClosed",
        "connectFailures",
        "requests",
        "responses",
        "remoteErrors",
        "failures",
        "timeouts",
        "cancelled",
        "rejected",
        "lateResponses",
        "connectionsRetired",
    )

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
        @param closeTimeout: seconds a connection's graceful close may take
            (the peer reading what is left and acknowledging it) before the
            connection is aborted, so L{close} always finishes.
        @param keepAlive: if not L{None}, TCP keepalive probes start after
            this many seconds of silence on the connection, so a backend
            that vanished without closing (a half-open connection) is found
            in about twice that long and its requests fail with
            L{ConnectionDropped}, even with no C{requestTimeout}.
        @param codec: how requests and replies are written and matched
            (L{twisted_sockshare.codecs}); this project's multiplexed frames
            if L{None}.  With an ordered (FIFO) codec a request that timed
            out or was cancelled keeps its place in line, and
            C{resetOnTimeout} must stay true: a reply that never comes would
            shift every later reply onto the wrong request.
        @param maxLifetime: seconds after which a connection takes no new
            requests: the next request opens a fresh connection while the
            old one finishes the requests it has and closes.  L{None}: no
            limit.
        @param maxOrphans: with C{resetOnTimeout=False}, retire a connection
            (as for C{maxLifetime}) once more than this many of its requests
            timed out with no reply seen yet.  L{None}: no limit.
        @raise ValueError: if an option is out of range.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        assert reactor is not None
        if idleTimeout is not None and idleTimeout < 0:
            raise ValueError(f"idleTimeout must be >= 0 or None, not {idleTimeout!r}")
        if connectTimeout is not None and connectTimeout <= 0:
            raise ValueError(f"connectTimeout must be > 0 or None, not {connectTimeout!r}")
        if requestTimeout is not None and requestTimeout <= 0:
            raise ValueError(f"requestTimeout must be > 0 or None, not {requestTimeout!r}")
        if closeTimeout <= 0:
            raise ValueError(f"closeTimeout must be > 0, not {closeTimeout!r}")
        if keepAlive is not None and keepAlive < 1:
            raise ValueError(f"keepAlive must be >= 1 second or None, not {keepAlive!r}")
        if maxLifetime is not None and maxLifetime <= 0:
            raise ValueError(f"maxLifetime must be > 0 or None, not {maxLifetime!r}")
        if maxOrphans is not None and maxOrphans < 0:
            raise ValueError(f"maxOrphans must be >= 0 or None, not {maxOrphans!r}")
        if codec is None:
            codec = _MULTIPLEXED
        if codec.ordered and not resetOnTimeout:
            raise ValueError(
                "resetOnTimeout=False needs a codec with request ids: with an ordered codec a reply that "
                "never comes would shift the later replies onto the wrong requests"
            )
        if maxPending < 1:
            raise ValueError(f"maxPending must be >= 1, not {maxPending!r}")
        if not 0 <= maxPayload <= _MAX_PAYLOAD:
            raise ValueError(f"maxPayload must be between 0 and {_MAX_PAYLOAD}, not {maxPayload!r}")
        self._endpoint: IStreamClientEndpoint
        if isinstance(endpoint, str):
            self.endpointDescription = endpoint
            self._endpoint = clientFromString(reactor, endpoint)
        else:
            self.endpointDescription = _describeEndpoint(endpoint)
            self._endpoint = endpoint
        self._clock = reactor
        self._seconds = reactor.seconds
        self.idleTimeout = idleTimeout
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.maxPending = maxPending
        self.maxPayload = maxPayload
        self.resetOnTimeout = resetOnTimeout
        self.closeTimeout = closeTimeout
        self.keepAlive = keepAlive
        self.codec = codec
        self.maxLifetime = maxLifetime
        self.maxOrphans = maxOrphans
        # None: the default frames, encoded inline on the hot path; an
        # ordered codec's requests are encoded by request(), in advance.
        self._encodeAtSend: Callable[[int, bytes], bytes] | None
        if type(codec) is Multiplexed:
            self._encodeAtSend = None
        elif codec.ordered:
            self._encodeAtSend = _asEncoded
        else:
            self._encodeAtSend = codec.encodeRequest

        self._state: _Idle | _Connecting | _Connected = _IDLE
        # Pending requests in submission order, which is also deadline order.
        self._pending: dict[_Request, None] = {}
        self._detached: set[SockShareClientProtocol] = set()
        self._deadlineCall: IDelayedCall | None = None
        # None while open; a list of close() Deferreds once closing.
        self._closeWaiters: list[Deferred[None]] | None = None
        self._closed = False

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
        return (
            f"<SockShareClientFactory {self.endpointDescription} "
            f"{type(self._state).__name__[1:].lower()} pending={len(self._pending)}>"
        )

    def buildProtocol(self, addr: IAddress | None) -> SockShareClientProtocol:
        return SockShareClientProtocol(self)

    @property
    def pending(self) -> int:
        """
        How many requests have been accepted and whose Deferred has not fired.
        """
        return len(self._pending)

    @property
    def connected(self) -> bool:
        """
        Whether a usable (connected and not closing) connection exists.
        """
        return type(self._state) is _Connected

    @property
    def closed(self) -> bool:
        """
        Whether L{close} has been called.
        """
        return self._closeWaiters is not None

    def stats(self) -> dict[str, int]:
        """
        Counters since the client was made.

        C{requests} counts accepted requests, so C{requests == responses +
        remoteErrors + failures + pending} at every moment; C{rejected} counts
        requests refused at once (L{TooManyPending}, L{PayloadTooLarge},
        L{ClientClosed}); C{timeouts} and C{cancelled} are among C{failures}.

        @return: a new dict of counter names to values.
        """
        return {
            "pending": len(self._pending),
            "peakPending": self._peakPending,
            "connected": int(type(self._state) is _Connected),
            "connectionsOpened": self._connectionsOpened,
            "connectionsClosed": self._connectionsClosed,
            "connectFailures": self._connectFailures,
            "requests": self._responses + self._remoteErrors + self._failures + len(self._pending),
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
            or at once with L{TooManyPending}, L{PayloadTooLarge} or
            L{ClientClosed}.  It fires exactly once.
        """
        pending = self._pending
        count = len(pending)
        if count >= self.maxPending or len(payload) > self.maxPayload or self._closeWaiters is not None:
            return self._reject(payload)
        if self._encodeAtSend is _asEncoded:
            try:
                payload = self.codec.encodeRequest(NEXT, payload)
            except InvalidRequest as error:
                self._rejected += 1
                return fail(error)
        request = _Request(_cancelRequest)
        request.factory = self
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
        state = self._state
        if type(state) is _Connected and self.maxLifetime is not None:
            if self._seconds() - state.protocol.openedAt >= self.maxLifetime:
                self._retire(state.protocol, f"older than maxLifetime={self.maxLifetime} seconds")
                state = self._state
        if type(state) is _Connected:
            if state.idleCall is not None:
                state.idleCall.cancel()
                state.idleCall = None
            state.protocol.sendRequest(request, payload)
            return request
        request.connection = None
        request.requestId = -1
        request.payload = payload
        if type(state) is _Connecting:
            state.waiting.append(request)
        else:
            self._connect(request)
        return request

    def _reject(self, payload: bytes) -> Deferred[bytes]:
        self._rejected += 1
        error: Exception
        if self._closeWaiters is not None:
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

    def _fail(self, request: _Request, error: BaseException) -> None:
        del self._pending[request]
        if type(error) is RemoteError:
            self._remoteErrors += 1
        else:
            self._failures += 1
        request.errback(Failure(error))

    def _failAll(self, requests: list[_Request], error: BaseException) -> None:
        """
        Fail every request of C{requests} whose Deferred has not fired yet.
        """
        for request in requests:
            if not request.called:
                self._fail(request, error)

    def _answered(self, connection: SockShareClientProtocol, frames: list[tuple[int, int, bytes]]) -> None:
        """
        Responses arrived on a connection: fire their requests' Deferreds,
        in order, checking after each whether none is left pending.

        @param connection: where they came from; each answered request is
            removed from its outstanding requests.
        @param frames: the RESPONSE and ERROR replies received, with their
            request ids (L{codecs.NEXT}: the oldest outstanding request's).
        """
        pending = self._pending
        outstanding = connection._outstanding
        pop = outstanding.pop
        for requestId, kind, payload in frames:
            if requestId == NEXT:
                if not outstanding:
                    if not connection.closing:
                        self._protocolViolation(connection, "a reply came with no request outstanding")
                    return
                requestId = next(iter(outstanding))
            request = pop(requestId, None)
            if request is None:
                self._lateResponses += 1
                if connection.orphans:
                    connection.orphans -= 1
                continue
            if kind == RESPONSE:
                del pending[request]
                self._responses += 1
                request.callback(payload)
            else:
                self._fail(request, RemoteError(payload.decode("utf-8", "replace")))
            if not pending:
                self._becameIdle()
        if connection.draining and not connection.outstanding:
            self._closeDrained(connection)

    def _cancelRequest(self, request: _Request) -> None:
        if request.called:
            return
        if request.connection is not None:
            request.connection.forget(request)
        self._cancelled += 1
        self._fail(request, CancelledError("request cancelled by the caller"))
        connection = request.connection
        if connection is not None and connection.draining and not connection.outstanding:
            self._closeDrained(connection)
        if not self._pending:
            self._becameIdle()

    # -- Request timeouts ----------------------------------------------------

    def _checkDeadlines(self) -> None:
        """
        Time out the requests past their deadline.  One timer serves every
        request: it is set for the oldest pending request's deadline, and
        moved forward when that request has already been answered.
        """
        self._deadlineCall = None
        now = self._clock.seconds()
        expired = []
        for request in self._pending:
            assert request.deadline is not None
            if request.deadline > now:
                break
            expired.append(request)
        for request in expired:
            if request.called:
                continue
            self._timeouts += 1
            connection = request.connection
            error = RequestTimeout(
                f"no response from {self.endpointDescription} within requestTimeout={self.requestTimeout} seconds"
            )
            if connection is None:
                self._fail(request, error)
                continue
            connection.forget(request)
            if self.resetOnTimeout and (not connection.closing or connection.draining) and not connection.lost:
                _log.warn(
                    "Request to {endpoint} timed out; resetting its connection ({others} other requests on it fail)",
                    endpoint=self.endpointDescription,
                    others=connection.outstanding,
                )
                others = self._detach(connection)
                connection.transport.abortConnection()  # type: ignore[union-attr]
                self._fail(request, error)
                self._failAll(
                    others,
                    ConnectionDropped(
                        f"connection to {self.endpointDescription} was reset because another "
                        "request on it timed out (resetOnTimeout=True)"
                    ),
                )
            else:
                self._fail(request, error)
                if not self.resetOnTimeout and not connection.closing:
                    connection.orphans += 1
                    if self.maxOrphans is not None and connection.orphans > self.maxOrphans:
                        self._retire(connection, f"more than maxOrphans={self.maxOrphans} timed-out requests")
                if connection.draining and not connection.outstanding:
                    self._closeDrained(connection)
        if self._pending:
            self._scheduleDeadlines()
        else:
            self._becameIdle()

    def _scheduleDeadlines(self) -> None:
        if self._deadlineCall is None and self._pending:
            deadline = next(iter(self._pending)).deadline
            assert deadline is not None
            delay = max(0.0, deadline - self._clock.seconds())
            self._deadlineCall = self._clock.callLater(delay, self._checkDeadlines)

    def _cancelDeadlines(self) -> None:
        if self._deadlineCall is not None:
            self._deadlineCall.cancel()
            self._deadlineCall = None

    # -- Connection life -----------------------------------------------------

    def _connect(self, first: _Request) -> None:
        state = _Connecting([first])
        self._state = state
        _log.debug("Connecting to {endpoint}", endpoint=self.endpointDescription)
        attempt = maybeDeferred(self._endpoint.connect, self)
        state.attempt = attempt
        if self.connectTimeout is not None:
            state.timeoutCall = self._clock.callLater(self.connectTimeout, self._connectTimedOut, state)
        attempt.addCallbacks(
            self._connectSucceeded,
            self._connectFailed,
            callbackArgs=(state,),
            errbackArgs=(state,),
        )

    def _connectTimedOut(self, state: _Connecting) -> None:
        state.timeoutCall = None
        state.abandoned = f"connectTimeout={self.connectTimeout} seconds exceeded"
        assert state.attempt is not None
        state.attempt.cancel()

    def _connectSucceeded(self, protocol: SockShareClientProtocol, state: _Connecting) -> None:
        if state.timeoutCall is not None:
            state.timeoutCall.cancel()
            state.timeoutCall = None
        self._connectionsOpened += 1
        if protocol.lost:
            # connectionLost ran before the endpoint reported the connection.
            self._connectFailed(Failure(ConnectionDropped("connection lost as soon as it was made")), state)
            return
        _log.debug("Connected to {endpoint}", endpoint=self.endpointDescription)
        protocol.openedAt = self._seconds()
        connected = _Connected(protocol)
        self._state = connected
        waiting, state.waiting = state.waiting, []
        for request in waiting:
            if not request.called:
                payload, request.payload = request.payload, None
                protocol.sendRequest(request, payload)  # type: ignore[arg-type]
        if not self._pending:
            self._becameIdle()

    def _connectFailed(self, reason: Failure, state: _Connecting) -> None:
        if state.timeoutCall is not None:
            state.timeoutCall.cancel()
            state.timeoutCall = None
        self._state = _IDLE
        waiting, state.waiting = state.waiting, []
        why = state.abandoned or reason.getErrorMessage()
        if state.abandoned != "closing":
            self._connectFailures += 1
            _log.warn(
                "Could not connect to {endpoint}: {why}",
                endpoint=self.endpointDescription,
                why=why,
            )
        self._failAll(waiting, ConnectFailed(f"could not connect to {self.endpointDescription}: {why}"))
        self._becameIdle()

    def _becameIdle(self) -> None:
        """
        Called whenever the pending count may have reached zero, or the
        client started closing: close what is no longer needed.
        """
        if self._pending:
            return
        state = self._state
        closing = self._closeWaiters is not None
        if type(state) is _Connected:
            if closing or self.idleTimeout == 0:
                self._closeIdle(state)
            elif state.idleCall is None and self.idleTimeout is not None:
                state.idleCall = self._clock.callLater(self.idleTimeout, self._closeIdle, state)
        elif type(state) is _Connecting:
            if closing and state.abandoned is None:
                state.abandoned = "closing"
                assert state.attempt is not None
                state.attempt.cancel()
        else:
            self._cancelDeadlines()
        if closing:
            self._maybeClosed()

    def _closeIdle(self, state: _Connected) -> None:
        if state.idleCall is not None and state.idleCall.active():
            state.idleCall.cancel()
        state.idleCall = None
        if self._state is not state or self._pending:
            return
        _log.debug("Closing idle connection to {endpoint}", endpoint=self.endpointDescription)
        self._cancelDeadlines()
        connection = state.protocol
        self._detach(connection)
        connection.transport.loseConnection()  # type: ignore[union-attr]
        if not connection.lost:
            connection.abortCall = self._clock.callLater(self.closeTimeout, self._abortClosing, connection)

    def _abortClosing(self, connection: SockShareClientProtocol) -> None:
        """
        A graceful close took longer than C{closeTimeout}: the peer neither
        acknowledged it nor read what was left to send.  Abort.
        """
        connection.abortCall = None
        _log.warn(
            "Connection to {endpoint} took more than closeTimeout={timeout} seconds to close; aborting it",
            endpoint=self.endpointDescription,
            timeout=self.closeTimeout,
        )
        connection.transport.abortConnection()  # type: ignore[union-attr]

    def _retire(self, connection: SockShareClientProtocol, why: str) -> None:
        """
        Stop sending new requests to C{connection} (the next one connects
        afresh); let the requests on it be answered, then close it.
        """
        _log.info("Retiring the connection to {endpoint}: {why}", endpoint=self.endpointDescription, why=why)
        self._retired += 1
        state = self._state
        if type(state) is _Connected and state.protocol is connection:
            if state.idleCall is not None:
                state.idleCall.cancel()
                state.idleCall = None
            self._state = _IDLE
        connection.closing = True
        connection.draining = True
        self._detached.add(connection)
        if not connection.outstanding:
            self._closeDrained(connection)

    def _closeDrained(self, connection: SockShareClientProtocol) -> None:
        connection.draining = False
        if connection.lost:
            return
        connection.transport.loseConnection()  # type: ignore[union-attr]
        connection.abortCall = self._clock.callLater(self.closeTimeout, self._abortClosing, connection)

    def _detach(self, connection: SockShareClientProtocol) -> list[_Request]:
        """
        Make C{connection} unusable for new requests (its close begins) and
        return the requests still outstanding on it.
        """
        state = self._state
        if type(state) is _Connected and state.protocol is connection:
            if state.idleCall is not None:
                state.idleCall.cancel()
                state.idleCall = None
            self._state = _IDLE
        connection.closing = True
        if not connection.lost:
            self._detached.add(connection)
        return connection.takeOutstanding()

    def _protocolViolation(self, connection: SockShareClientProtocol, violation: str) -> None:
        _log.warn(
            "Protocol violation from {endpoint}: {violation}; dropping the connection",
            endpoint=self.endpointDescription,
            violation=violation,
        )
        others = self._detach(connection)
        connection.transport.abortConnection()  # type: ignore[union-attr]
        self._failAll(
            others,
            ProtocolViolation(f"{self.endpointDescription} broke the wire protocol: {violation}"),
        )
        self._becameIdle()

    def _connectionLost(self, connection: SockShareClientProtocol, reason: Failure) -> None:
        self._connectionsClosed += 1
        if connection.abortCall is not None:
            connection.abortCall.cancel()
            connection.abortCall = None
        self._detached.discard(connection)
        state = self._state
        if connection.draining:
            connection.draining = False
            self._failAll(
                connection.takeOutstanding(),
                ConnectionDropped(
                    f"connection to {self.endpointDescription} lost while the request was outstanding "
                    f"(the connection was being retired): {reason.getErrorMessage()}"
                ),
            )
        elif connection.closing:
            _log.debug("Connection to {endpoint} closed", endpoint=self.endpointDescription)
        elif type(state) is not _Connected or state.protocol is not connection:
            # Lost before the endpoint reported it: _connectSucceeded sees
            # connection.lost.  Nothing was written to it.
            connection.closing = True
        else:
            others = self._detach(connection)
            if others:
                _log.warn(
                    "Connection to {endpoint} lost with {count} requests outstanding: {why}",
                    endpoint=self.endpointDescription,
                    count=len(others),
                    why=reason.getErrorMessage(),
                )
            else:
                _log.info(
                    "Connection to {endpoint} lost: {why}",
                    endpoint=self.endpointDescription,
                    why=reason.getErrorMessage(),
                )
            error: Exception
            if not connection.received and _isTLSError(reason):
                # The TLS handshake (or the server's check of our
                # certificate, which TLS 1.3 reports after it) failed.
                self._connectFailures += 1
                error = ConnectFailed(
                    f"TLS with {self.endpointDescription} failed (wrong, untrusted or expired certificate?): "
                    f"{reason.getErrorMessage()}"
                )
            else:
                error = ConnectionDropped(
                    f"connection to {self.endpointDescription} lost while the request was "
                    f"outstanding: {reason.getErrorMessage()}"
                )
            self._failAll(others, error)
        self._becameIdle()

    # -- Closing ---------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Close the client gracefully: new requests fail with L{ClientClosed},
        the outstanding ones finish (or fail), then the connection is closed.

        @return: a Deferred that fires with L{None} once no connection of
            this client is left.  Calling it again is harmless.
        """
        if self._closed:
            return succeed(None)
        if self._closeWaiters is None:
            self._closeWaiters = []
            _log.debug(
                "Closing the client for {endpoint} ({pending} requests pending)",
                endpoint=self.endpointDescription,
                pending=len(self._pending),
            )
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        self._becameIdle()
        return waiter

    def _maybeClosed(self) -> None:
        if self._closed or self._pending or type(self._state) is not _Idle or self._detached:
            return
        self._closed = True
        self._cancelDeadlines()
        waiters, self._closeWaiters = self._closeWaiters or [], []
        for waiter in waiters:
            waiter.callback(None)


__all__ = ["SockShareClientFactory", "SockShareClientProtocol"]
