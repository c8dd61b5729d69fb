"""
One request of a shared client, from C{request()} until its Deferred fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

if TYPE_CHECKING:
    from .connection import SockShareClientProtocol


class _Extra:
    """
    What a request given C{timeout}, C{waitForReady} or C{idempotent} needs
    beyond the common case; a request given none has none, and pays nothing.

    @ivar timeout: its own timeout in seconds, or L{None} (the client's).
    @ivar waitForReady: whether it waits through the connect backoff.
    @ivar payload: its payload, kept to send it again (idempotent), or
        L{None}.
    @ivar retried: whether it was sent again after a connection lost without
        a reply from the server (once, within the retry budget).
    @ivar timer: its own timeout, or the end of its wait for a connection.
    """

    __slots__ = ("timeout", "waitForReady", "payload", "retried", "timer")

    def __init__(self, timeout: float | None, waitForReady: bool, payload: bytes | None) -> None:
        self.timeout = timeout
        self.waitForReady = waitForReady
        self.payload = payload
        self.retried = False
        self.timer: IDelayedCall | None = None

    def stop(self, result: object = None) -> object:
        """
        The request fired: stop its timer.  A callback: returns C{result}.
        """
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
        return result


class _Request(Deferred[bytes]):
    """
    A request is the Deferred handed to the caller, so it costs one object.
    The client sets every attribute before handing it out.

    @ivar payload: what to send, while the request waits for a connection;
        once written, L{None}, or on a connection of wire version 3 what to
        send again if the server refuses it (REFUSED).
    @ivar sentAt: when C{request()} was called, on the client's clock (its
        timeout and its latency count from it).
    @ivar connection: the connection it was written to (L{None}: still
        waiting for one).
    @ivar requestId: its id on that connection (-1 until written).
    @ivar mark: how many chunks its connection had received when it was
        written (to tell, at its timeout, whether the connection was silent
        since).
    @ivar extra: its own timeout, wait and retry (L{_Extra}), if it was
        given any.
    """

    # No __slots__: on CPython 3.13 a subclass that adds slots to a class
    # without them gets a dict of its own per instance, and every attribute
    # of the Deferred is read through it.  Without slots, the attributes
    # below share the instance keys of the Deferred's (_shareInstanceKeys).

    payload: bytes | None = None
    sentAt: float
    connection: SockShareClientProtocol | None
    requestId: int
    mark: int
    extra: _Extra | None = None


def _shareInstanceKeys() -> None:
    """
    Fire one throw-away request, so that every attribute a L{_Request} ever
    gets (C{result} is set only when it fires, C{payload} only while it
    waits for a connection) is known to its class before many instances
    exist.  Otherwise CPython (3.11+) stops sharing instance
    dict keys for the class once many live instances get a new attribute,
    and every later request carries a dict of its own: about 3,000 more
    instructions per request.
    """
    request = _Request()
    request.sentAt = 0.0
    request.requestId = -1
    request.connection = None
    request.mark = 0
    request.payload = None
    request.extra = None
    request.addBoth(lambda result: None)
    request.callback(b"")


_shareInstanceKeys()
