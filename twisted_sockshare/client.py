# -*- test-case-name: tests.test_client,tests.test_lifecycle,tests.test_timeouts,tests.test_cancel -*-
"""
The shared client: one lazily opened, counted connection per backend.

A L{SockShareClientFactory} has at most one I{usable} connection.  The first
request opens it through an endpoint; every concurrent request is
multiplexed over it; when the number of pending requests returns to zero the
connection is closed (after C{idleTimeout} seconds).  Failures never leave the
client stuck: the requests they touch fail, the client returns to idle and the
next request connects again.

The client is always in exactly one of these states (the classes of
C{twisted_sockshare._states}), and moves between them only by the rows of
the declared table C{twisted_sockshare._lifecycle.CLIENT}:

    - C{_Idle}: no usable connection.  A request starts a connection attempt.
    - C{_Connecting}: one attempt is under way; requests wait for it, in order.
    - C{_Connected}: requests are written at once; at zero pending the
      connection is closed, now or after C{idleTimeout}.
    - C{_Closing}: C{close()} was called; new requests are refused, the
      pending ones get up to C{closeTimeout} seconds to finish.
    - C{_Closed}: nothing pending, no connection left; C{close()} has fired.

The connect backoff (C{twisted_sockshare._backoff.ConnectBackoff}) and the
request timeouts (C{twisted_sockshare._timeouts.RequestTimeouts}) are
objects the client owns.

Each connection has a life of its own (L{ConnectionState}, by the rows of
C{twisted_sockshare._lifecycle.CONNECTION}): a connection that
leaves C{LIVE} (idle, retired, reset, lost) is no longer the usable one from
that moment, and is remembered only until its C{connectionLost}, so that
C{close()} can wait for the socket to be gone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IAddress, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._backoff import ConnectBackoff
from ._lifecycle import CLIENT
from ._reactor import maybeGlobalReactor
from ._request import _Extra, _Request
from ._retrybudget import _RetryBudget
from ._states import _CLOSED, _IDLE, _Closed, _Closing, _Connected, _Connecting, _Idle, _State
from ._timeouts import RequestTimeouts
from .codecs import NEXT, Codec
from .connection import LIVE, LOST, ConnectionState, SockShareClientProtocol
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    PayloadTooLarge,
    RemoteError,
    RequestRefused,
    TooManyPending,
    _codecRefusal,
)
from .interfaces import ISockShareClient
from .options import ClientOptions, checkTimeout, parseEndpoint
from .stats import LATENCY_BUCKETS, STAT_KEYS, LatencyHistogram, _Events
from .wire import RESPONSE

_log = Logger(namespace="twisted_sockshare.client")


def _refusal(client: SockShareClientFactory, payload: object) -> Exception:
    """
    Why C{client} refuses C{payload} at once, with what to do about it.
    """
    where = client.endpointDescription
    if not isinstance(payload, bytes):
        kind = type(payload).__name__
        return TypeError(f"request() takes bytes, not {kind}; encode text first, e.g. text.encode('utf-8')")
    if client.closed:
        return ClientClosed(f"the client for {where} is closed; make a new one")
    if len(payload) > client.maxPayload:
        return PayloadTooLarge(
            f"payload of {len(payload)} bytes exceeds maxPayload={client.maxPayload}; "
            "raise maxPayload on both client and server to send it"
        )
    return TooManyPending(
        f"{client.pending} requests already pending to {where} "
        f"(maxPending={client.maxPending}); retry later or raise maxPending"
    )


def _option(name: str) -> Any:
    """
    The client's attribute C{name}, read from its options: the options that
    are not read on the request path (those that are are the client's own
    attributes, set once).
    """
    return property(lambda client: getattr(client.options, name), doc=f"The C{{{name}}} option (L{{ClientOptions}}).")


@implementer(ISockShareClient)
class SockShareClientFactory(Factory):
    """
    A client that shares one lazily opened connection among all concurrent
    requests to one backend, counting them, and closes it when none is left.

    It is a Twisted C{Factory}: its endpoint builds one
    L{SockShareClientProtocol} per connection.

    @ivar endpointDescription: the endpoint, as messages name it: the
        endpoint string, or the endpoint's C{repr()}.
    @ivar options: the checked options (L{ClientOptions}); each is also an
        attribute of the client (C{client.requestTimeout}...).
    """

    #: Whether each connection's life (connecting, connected, closed when
    #: idle) is logged, at debug level; as for Twisted's factories, off by
    #: default: with C{idleTimeout=0} that is four lines per request.
    #: Failures and retirements are logged either way.
    noisy = False
    protocol = SockShareClientProtocol

    #: The keys of L{stats}, in order.
    statKeys = STAT_KEYS
    #: Whether an idempotent request lost other than by a graceful close is
    #: sent again here, once, within the retry budget (a balancer's
    #: endpoint clients leave that to the balancer, which sends it to
    #: another endpoint).
    _retriesAfterReset = True
    #: Whether a request the server refused (REFUSED: its handler was not
    #: called) is sent again here, once, within the retry budget, on the
    #: usable connection or a fresh one (a balancer's endpoint clients leave
    #: that to the balancer, which sends it to another endpoint).
    _refusalsRetried = True

    # The two counters the request path touches (the others are in _events).
    _peakPending = 0
    _responses = 0

    connectTimeout: float | None = _option("connectTimeout")
    closeTimeout: float = _option("closeTimeout")
    keepAlive: float | None = _option("keepAlive")
    maxOrphans: int | None = _option("maxOrphans")
    pingInterval: float | None = _option("pingInterval")
    pingTimeout: float = _option("pingTimeout")
    resetOnTimeout: bool | None = _option("resetOnTimeout")
    latencyHistogram: bool = _option("latencyHistogram")
    maxRequestsPerConnection: int | None = _option("maxRequestsPerConnection")
    fragmentSize: int | None = _option("fragmentSize")

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | str,
        reactor: IReactorTime | None = None,
        *,
        idleTimeout: float | None = 0.5,
        connectTimeout: float | None = 10.0,
        requestTimeout: float | None = 30.0,
        maxPending: int = 10_000,
        maxPayload: int = 1_048_576,
        resetOnTimeout: bool | None = None,
        closeTimeout: float = 10.0,
        keepAlive: float | None = None,
        codec: Codec | None = None,
        maxLifetime: float | None = None,
        maxOrphans: int | None = 100,
        pingInterval: float | None = None,
        pingTimeout: float = 10.0,
        connectBackoff: Callable[[int], float] | None = None,
        latencyHistogram: bool = False,
        maxRequestsPerConnection: int | None = None,
        fragmentSize: int | None = 16_384,
    ) -> None:
        """
        Each keyword option is documented on L{ClientOptions}.

        @param endpoint: where the backend is: any C{IStreamClientEndpoint}
            (TCP, TLS, UNIX, C{HostnameEndpoint}...), or an endpoint string
            for C{clientFromString} such as C{"tcp:127.0.0.1:9000"}.
        @param reactor: supplies the time and timers (and parses an endpoint
            string); the global reactor if L{None}.
        @raise TypeError: if an option has the wrong type.
        @raise ValueError: if an option is out of range.
        """
        self.options = options = ClientOptions(
            idleTimeout=idleTimeout, connectTimeout=connectTimeout, requestTimeout=requestTimeout,
            maxPending=maxPending, maxPayload=maxPayload, resetOnTimeout=resetOnTimeout, closeTimeout=closeTimeout,
            keepAlive=keepAlive, codec=codec, maxLifetime=maxLifetime, maxOrphans=maxOrphans,
            pingInterval=pingInterval, pingTimeout=pingTimeout, connectBackoff=connectBackoff,
            latencyHistogram=latencyHistogram, maxRequestsPerConnection=maxRequestsPerConnection,
            fragmentSize=fragmentSize,
        )  # fmt: skip
        reactor = maybeGlobalReactor(reactor)
        self._endpoint, self.endpointDescription = parseEndpoint(reactor, endpoint)
        self._clock: IReactorTime = reactor
        self._seconds = reactor.seconds
        # The options the request path reads are attributes of their own; the
        # others are read from the options (see _option).
        self.idleTimeout, self.requestTimeout, self.maxLifetime = idleTimeout, requestTimeout, maxLifetime
        self.maxPending, self.maxPayload = maxPending, maxPayload
        self.codec: Codec = options.codec  # type: ignore[assignment]
        # Whether a timeout resets its connection (None: only where replies
        # cannot be skipped, with an ordered codec).
        resets = self.codec.ordered if resetOnTimeout is None else resetOnTimeout
        self._backoff = ConnectBackoff(self, reactor, connectBackoff)
        # An ordered codec's requests are encoded by request(), in advance.
        self._encodeEarly = self.codec.ordered
        self._state: _State = _IDLE
        # Pending requests in submission order, which is also deadline order.
        self._pending: dict[_Request, None] = {}
        self._events = _Events()
        self._timeouts = RequestTimeouts(self, self._pending, reactor, resets, self._events)
        if latencyHistogram:
            # Connections call requestAnswered once per reply: only a client that
            # counts latency pays for it.
            self.requestAnswered = self._settleTimed  # type: ignore[method-assign]
        # Every request's canceller, made once.
        self._canceller: Callable[[Deferred[bytes]], None] = self._cancelRequest  # type: ignore[assignment]
        # Connections not lost yet, usable or not.
        self._connections: set[SockShareClientProtocol] = set()
        # How many idempotent requests lost with their connection may be
        # sent again.
        self._retryBudget = _RetryBudget(reactor)

    def __repr__(self) -> str:
        state = self._state.name
        return f"<SockShareClientFactory {self.endpointDescription} {state} pending={len(self._pending)}>"

    def buildProtocol(self, addr: IAddress | None) -> SockShareClientProtocol:
        return SockShareClientProtocol(self, self.options, self._clock)

    @property
    def pending(self) -> int:
        """How many requests have been accepted and whose Deferred has not fired."""
        return len(self._pending)

    @property
    def reachable(self) -> bool:
        """
        Whether the backend is believed reachable: C{False} from a failed
        connection attempt until one succeeds (C{True} before the first).
        """
        return self._backoff.failuresInRow == 0

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
        Counters since the client was made, keyed by L{statKeys} (see
        L{twisted_sockshare.stats.ClientStats}): C{requests == responses +
        remoteErrors + failures + pending} at every moment; C{rejected} counts
        requests refused at once, never counted in C{requests}.

        @return: a new dict of counter names to values.
        """
        return self._events.stats(len(self._pending), self._peakPending, self._responses, self.connected).asDict()

    def latency(self) -> LatencyHistogram:
        """
        The reply latency histogram since the client was made (counted with
        C{latencyHistogram} only).
        """
        return self._events.latency()

    @property
    def backingOff(self) -> bool:
        """
        Whether connect attempts are being held back after failures: a
        request now fails at once with C{ConnectFailed}.
        """
        return self._backoff.holding(self._clock.seconds())

    # -- Requests ------------------------------------------------------------

    def request(
        self, payload: bytes, idempotent: bool = False, timeout: float | None = None, waitForReady: bool = False
    ) -> Deferred[bytes]:
        """
        Send C{payload} to the backend and wait for its response.

        Connects first if no connection is usable; otherwise reuses the shared
        connection.  Never raises: every problem is a failed Deferred.

        @param payload: the request's bytes.
        @param idempotent: whether the request may be sent twice: if the
            server closes its connection (cleanly or not) without answering
            it, it is sent once more on a fresh connection rather than
            failing with L{ConnectionDropped}; again after each clean close
            of a connection on which the server sent something (it meant to
            close: a cap on requests per connection, a restart), otherwise
            once, within the retry budget (10% of the last 10 s's idempotent
            requests plus 10 a second).  Counted in C{retries}.
        @param timeout: this request's own timeout in seconds, instead of
            C{requestTimeout}; on expiry it fails alone with
            L{RequestTimeout}, as with C{requestTimeout}.
        @param waitForReady: rather than failing at once with
            L{ConnectFailed} while connect attempts back off after failures,
            wait for the next attempt; fail only when C{timeout} (or, without
            one, C{connectTimeout}) runs out before it is written.
        @return: a Deferred that fires with the response's payload, or fails
            with L{RemoteError} (the backend answered with an error),
            L{ConnectFailed}, L{ConnectionDropped}, L{RequestTimeout},
            L{ProtocolViolation}, C{CancelledError} (the caller cancelled it),
            L{ClientClosed} (still pending C{closeTimeout} after L{close}), or
            at once with C{TypeError} (not bytes, or a C{timeout} that is not
            a number), C{ValueError} (a C{timeout} not above 0),
            L{TooManyPending}, L{PayloadTooLarge}, L{InvalidRequest} or
            L{ClientClosed}.  It fires exactly once.
        """
        pending = self._pending
        count = len(pending)
        state = self._state
        if (
            (type(payload) is not bytes and not isinstance(payload, bytes))
            or count >= self.maxPending
            or len(payload) > self.maxPayload
            or not state.accepting
        ):
            return self._reject(payload)
        if self._encodeEarly:
            try:
                payload = self.codec.encodeRequest(NEXT, payload)
            except Exception as error:
                self._events.rejected += 1
                return fail(_codecRefusal(error))
        request = _Request(self._canceller)
        request.sentAt = self._seconds()
        if idempotent or timeout is not None or waitForReady:
            problem = self._extend(request, payload, idempotent, timeout, waitForReady)
            if problem is not None:
                self._events.rejected += 1
                return fail(problem)
        elif self._timeouts.call is None:
            timeout = self.requestTimeout
            if timeout is not None:
                self._timeouts.start(timeout)
        pending[request] = None
        if count >= self._peakPending:
            self._peakPending = count + 1
        connection = state.connection
        if connection is not None and (
            self.maxLifetime is None or self._seconds() - connection.openedAt < self.maxLifetime
        ):
            connection.send(request, payload)
        else:
            self._dispatch(request, payload)
        return request

    def _extend(
        self, request: _Request, payload: bytes, idempotent: bool, timeout: float | None, waitForReady: bool
    ) -> Exception | None:
        """
        Give C{request} what its options need (L{_Extra}), and its timers.

        @return: why the options are refused, or L{None}.
        """
        problem = checkTimeout(timeout)
        if problem is not None:
            return problem
        extra = request.extra = _Extra(timeout, bool(waitForReady), payload if idempotent else None)
        if idempotent:
            self._retryBudget.request(request.sentAt)
        if timeout is not None:
            extra.timer = self._timeouts.own(request, timeout)
            request.addBoth(extra.stop)
        elif self._timeouts.call is None and self.requestTimeout is not None:
            self._timeouts.start(self.requestTimeout)
        return None

    def _dispatch(self, request: _Request, payload: bytes) -> None:
        """
        Send C{request}, already pending: on the usable connection (unless
        it is older than C{maxLifetime}: it retires), or once connected.
        L{request} calls it when it has no usable connection at hand; so do
        a resend (idempotent) and the end of a wait for the connect backoff
        (C{waitForReady}).
        """
        state = self._state
        connection = state.connection
        now = self._seconds()
        if connection is not None and (self.maxLifetime is None or now - connection.openedAt < self.maxLifetime):
            connection.now = now  # the request may have waited: its budget is less
            connection.send(request, payload)
            return
        if connection is not None:
            self._retire(connection, f"older than maxLifetime={self.maxLifetime} seconds")
        request.connection = None
        request.requestId = -1
        request.payload = payload
        self._on("sendBackingOff" if self._backoff.holding(now) else "send", request)

    def _refuse(self, state: _Closing | _Closed, request: _Request) -> None:
        closed = ClientClosed(f"the client for {self.endpointDescription} closed before it was sent")
        self.requestFailed(request, closed)

    def _reject(self, payload: object) -> Deferred[bytes]:
        self._events.rejected += 1
        return fail(_refusal(self, payload))

    # -- Connecting ------------------------------------------------------------
    #
    # One attempt at a time through the endpoint, the requests made meanwhile
    # waiting for it in order; after a failed attempt the next one waits
    # (ConnectBackoff).

    def _startAttempt(self, idle: _Idle, first: _Request) -> None:
        self._moveTo("send", connecting := _Connecting(first))
        if self.noisy:
            _log.debug("Connecting to {endpoint}", endpoint=self.endpointDescription)
        attempt = connecting.start(self._endpoint, self, self._clock, self.connectTimeout)
        attempt.addCallbacks(
            self._connectSucceeded, self._connectFailed, callbackArgs=(connecting,), errbackArgs=(connecting,)
        )

    def _failFast(self, idle: _Idle, first: _Request) -> None:
        if first.extra is not None and first.extra.waitForReady:
            self._backoff.waitForReady(first)
        else:  # backing off after failed attempts: fail fast, do not queue
            self.requestFailed(first, self._backoff.refusal())

    def _queue(self, connecting: _Connecting, request: _Request) -> None:
        connecting.waiting.append(request)

    def _keepConnecting(self, connecting: _Connecting) -> None:
        pass

    def _connectSucceeded(self, connection: SockShareClientProtocol, connecting: _Connecting) -> None:
        self._events.connectionsOpened += 1
        self._backoff.connected()
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
            self._backoff.failed(why)
        error = ConnectFailed(f"could not connect to {self.endpointDescription}: {why}")
        for request in waiting:
            if not request.called:
                if request.extra is not None and request.extra.waitForReady and not closing:
                    self._backoff.waitForReady(request)
                else:
                    self.requestFailed(request, error)
        if not self._pending:
            self._quiet()

    # -- What connections tell the client (connection.ConnectionOwner) ----------
    #
    # Public inside the package: its connections call them, and each is
    # documented there.  Applications do not.

    def _settleTimed(self, request: _Request, kind: int, payload: bytes, now: float) -> None:
        elapsed = now - request.sentAt
        events = self._events
        events.latencySum += elapsed
        events.latencyCounts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        SockShareClientFactory.requestAnswered(self, request, kind, payload, now)

    def requestAnswered(self, request: _Request, kind: int, payload: bytes, now: float) -> None:
        pending = self._pending
        del pending[request]
        if kind == RESPONSE:
            self._responses += 1
            request.callback(payload)
        else:
            self._events.remoteErrors += 1
            request.errback(Failure(RemoteError(payload.decode("utf-8", "replace"))))
        if not pending:
            self._quiet()

    def requestFailed(self, request: _Request, error: BaseException) -> None:
        pending = self._pending
        del pending[request]
        self._events.failures += 1
        request.errback(Failure(error))
        if not pending:
            self._quiet()

    def requestLost(self, request: _Request, error: BaseException, graceful: bool) -> None:
        extra = request.extra
        if (
            extra is not None
            and extra.payload is not None
            and self._state.accepting
            and (graceful or (self._retriesAfterReset and not extra.retried and self._retryBudget.withdraw()))
        ):
            if not graceful:
                extra.retried = True
            self._events.retries += 1
            self._dispatch(request, extra.payload)
            return
        self.requestFailed(request, error)

    def requestRefused(self, request: _Request, reason: str) -> None:
        payload, request.payload = request.payload, None
        if payload is not None and self._refusalsRetried and self._state.accepting and self._retryBudget.withdraw():
            if request.extra is None:
                request.extra = _Extra(None, False, None)
            if not request.extra.retried:
                request.extra.retried = True
                self._events.refusedRetried += 1
                self._dispatch(request, payload)
                return
        where = self.endpointDescription
        refused = RequestRefused(f"{where} refused the request (its handler was not called): {reason}")
        self.requestFailed(request, refused)

    def requestUnsent(self, request: _Request, payload: bytes) -> None:
        self._dispatch(request, payload)

    def connectionFull(self, connection: SockShareClientProtocol, why: str) -> None:
        events = self._events
        events.retired += 1
        if why == "requests":
            events.retiredAtRequestLimit += 1
            text = f"it wrote maxRequestsPerConnection={self.maxRequestsPerConnection} requests"
        else:
            events.retiredOutOfIds += 1
            text = "every request id of the codec (maxRequestId) is held"
        if self.noisy:
            _log.debug("Retiring the connection to {endpoint}: {why}", endpoint=self.endpointDescription, why=text)
        connection.retire()

    def lateReply(self) -> None:
        self._events.lateResponses += 1

    def connectionUnusable(self, connection: SockShareClientProtocol) -> None:
        if self._state.connection is connection:
            self._on("unusable")

    def connectionGone(self, connection: SockShareClientProtocol, tlsFailed: bool) -> None:
        self._events.connectionsClosed += 1
        self._connections.discard(connection)
        if tlsFailed:
            self._events.connectFailures += 1
            self._backoff.handshakeFailed()
        self.connectionUnusable(connection)
        if not self._pending:
            self._quiet()

    def _cancelRequest(self, request: _Request) -> None:
        if request.called:
            return
        self._events.cancelled += 1
        self.abandonRequest(request, CancelledError("request cancelled by the caller"))

    def abandonRequest(self, request: _Request, error: BaseException) -> None:
        """
        Fail C{request} with C{error} without its reply: its connection sends
        CANCEL (where the codec has ids) and holds its id until the reply
        comes; a connection holding more than C{maxOrphans} such ids retires.
        """
        connection = request.connection
        if connection is not None:
            self._events.cancelsSent += connection.forget(request)
        self.requestFailed(request, error)
        if connection is not None and self.maxOrphans is not None and connection.orphans > self.maxOrphans:
            self._retire(connection, f"more than maxOrphans={self.maxOrphans} requests left without their reply")

    def goawayReceived(self, connection: SockShareClientProtocol, reason: str) -> None:
        self._events.goawaysReceived += 1
        _log.info("{endpoint} sent GOAWAY: {reason}", endpoint=self.endpointDescription, reason=reason)

    # -- The client's life ------------------------------------------------------
    #
    # Each input is looked up in the declared table _lifecycle.CLIENT, which
    # names the action (the method "_" + its name, given the state it runs
    # in) and the state that follows; an input a state does not declare
    # raises.  Only _moveTo changes the state, and only as a row says.

    def _on(self, input: str, *args: Any) -> Any:
        state = self._state
        return getattr(self, "_" + CLIENT.step(state.name, input).action)(state, *args)

    def _moveTo(self, input: str, state: _State) -> None:
        CLIENT.check(self._state.name, input, state.name)
        self._state = state

    def _quiet(self) -> None:
        """
        The pending count is zero: close what is no longer needed.
        """
        self._on("quiet")

    def _stopDeadlines(self, idle: _Idle) -> None:
        self._timeouts.cancel()

    def _linger(self, connected: _Connected) -> None:
        idleTimeout = self.idleTimeout
        if idleTimeout == 0:
            self._on("idle")
        elif idleTimeout is not None:
            # The timer is not moved when requests come and go: it checks,
            # when it fires, how long the count has been zero.
            connected.quietSince = self._seconds()
            if connected.idleCall is None:
                connected.idleCall = self._clock.callLater(idleTimeout, self._closeIdle, connected)

    def _closeIdle(self, connected: _Connected) -> None:
        """
        The idle timer fired: the C{idle} input, if the count has been zero
        for C{idleTimeout}.
        """
        connected.idleCall = None
        if self._state is not connected or self._pending:
            return  # the next time the count falls to zero sets the timer
        idleTimeout = self.idleTimeout
        left = connected.quietSince + idleTimeout - self._seconds() if idleTimeout else 0.0
        if left > 0:
            connected.idleCall = self._clock.callLater(left, self._closeIdle, connected)
        else:
            self._on("idle")

    def _closeConnection(self, connected: _Connected) -> None:
        if self.noisy:
            _log.debug("Closing idle connection to {endpoint}", endpoint=self.endpointDescription)
        self._moveTo("idle", _IDLE)
        self._timeouts.cancel()
        connected.connection.close()

    def _forgetConnection(self, connected: _Connected) -> None:
        connected.cancelIdle()
        self._moveTo("unusable", _IDLE)

    def _retire(self, connection: SockShareClientProtocol, why: str) -> None:
        """
        Stop sending new requests to C{connection} (the next one connects
        afresh); let the requests on it be answered, then close it.
        """
        _log.info("Retiring the connection to {endpoint}: {why}", endpoint=self.endpointDescription, why=why)
        self._events.retired += 1
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
        waiter: Deferred[None] = self._on("close")
        return waiter

    def _startClosing(self, state: _Idle | _Connecting | _Connected) -> Deferred[None]:
        _log.debug("Closing the client for {endpoint}", endpoint=self.endpointDescription)
        connecting = state if type(state) is _Connecting else None
        closing = _Closing(connecting, self._clock, self.closeTimeout, self._closeTimedOut)
        # The waiter is in place before any connection is told to close: a
        # transport may report the loss at once, and the client be closed
        # before this returns.
        waiter: Deferred[None] = Deferred()
        closing.waiters.append(waiter)
        self._moveTo("close", closing)
        if type(state) is _Connected:
            state.cancelIdle()
        for connection in list(self._connections):
            connection.retire()
        where = self.endpointDescription
        self._backoff.stopWaiting(ClientClosed(f"the client for {where} was closed while the request waited"))
        if not self._pending:
            self._quiet()
        return waiter

    def _addWaiter(self, closing: _Closing) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        closing.waiters.append(waiter)
        if not self._pending:
            self._quiet()
        return waiter

    def _stayClosed(self, closed: _Closed) -> None:
        pass

    def _alreadyClosed(self, closed: _Closed) -> Deferred[None]:
        return succeed(None)

    def _abandonAttempt(self, closing: _Closing) -> None:
        if closing.connecting is not None:
            closing.connecting.abandon("closing")
        self._maybeClosed(closing)

    def _closeTimedOut(self, closing: _Closing) -> None:
        """
        C{closeTimeout} passed since L{close}.
        """
        closing.deadlineCall = None
        self._on("closeTimeout")

    def _failPending(self, closing: _Closing) -> None:
        error = ClientClosed(
            f"the client for {self.endpointDescription} was closed and the request was still pending "
            f"closeTimeout={self.closeTimeout} seconds later"
        )
        for request in list(self._pending):
            if not request.called:
                if request.connection is not None:
                    request.connection.forget(request, cancel=False)  # it is aborted next
                self.requestFailed(request, error)
        if closing.connecting is not None:
            closing.connecting.abandon("closing")
        for connection in list(self._connections):
            connection.abort()
        self._maybeClosed(closing)

    def _maybeClosed(self, closing: _Closing) -> None:
        if self._state is closing and not (self._pending or self._connections or closing.connecting):
            self._on("drained")

    def _finishClosing(self, closing: _Closing) -> None:
        self._timeouts.cancel()
        self._moveTo("drained", _CLOSED)
        closing.finish()


__all__ = ["SockShareClientFactory", "SockShareClientProtocol", "ConnectionState"]
