"""
Whether a connection's server is alive: the PINGs of one client connection
and their timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .wire import MAX_REQUEST_ID, PING, encodeFrame

if TYPE_CHECKING:
    from .connection import SockShareClientProtocol


class _Liveness:
    """
    PINGs a connection when asked (L{probe}), and every C{pingInterval} of
    silence if that is set; any byte received answers a PING.  No byte within
    C{pingTimeout} and C{presumedDead} is called.

    @ivar waiting: the timer of the PING waiting for a byte, if one is.
    """

    __slots__ = (
        "_connection", "_send", "_dead", "_clock", "_interval", "_timeout", "waiting", "_every", "_mark", "_token",
    )  # fmt: skip

    def __init__(
        self,
        connection: SockShareClientProtocol,
        clock: IReactorTime,
        interval: float | None,
        timeout: float,
        send: Callable[[bytes], None],
        presumedDead: Callable[[float], None],
    ) -> None:
        """
        @param connection: whose C{usable} and C{chunksReceived} it reads.
        @param send: writes a PING frame on the connection.
        @param presumedDead: called with C{timeout} when a PING got no byte.
        """
        self._connection = connection
        self._send = send
        self._dead = presumedDead
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self.waiting: IDelayedCall | None = None
        self._every: IDelayedCall | None = None
        self._mark = 0
        self._token = 0

    def start(self) -> None:
        """The connection is made: PING every C{pingInterval} of silence."""
        if self._interval is not None:
            self._every = self._clock.callLater(self._interval, self._regularly)

    def probe(self) -> None:
        """
        Send a PING, unless one is waiting already.
        """
        if self.waiting is None and self._connection.usable:
            self._token = (self._token + 1) & MAX_REQUEST_ID
            # Waiting before the write: a transport that delivers at once
            # may bring the answer before the write returns.
            self.waiting = self._clock.callLater(self._timeout, self._timedOut)
            self._send(encodeFrame(self._token, PING, b""))

    def heard(self) -> None:
        """A byte came: the waiting PING is answered."""
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None

    def stopRegular(self) -> None:
        """No more regular PINGs (the connection is closing)."""
        if self._every is not None and self._every.active():
            self._every.cancel()
        self._every = None

    def stop(self) -> None:
        """The connection is gone: no timer is left."""
        self.stopRegular()
        if self.waiting is not None and self.waiting.active():
            self.waiting.cancel()
        self.waiting = None

    def _regularly(self) -> None:
        self._every = None
        connection = self._connection
        if not connection.usable:
            return
        chunks = connection.chunksReceived
        if chunks == self._mark:
            self.probe()
        self._mark = chunks
        assert self._interval is not None
        self._every = self._clock.callLater(self._interval, self._regularly)

    def _timedOut(self) -> None:
        self.waiting = None
        self._dead(self._timeout)
