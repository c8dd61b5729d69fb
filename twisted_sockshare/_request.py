"""
One request of a shared client, from C{request()} until its Deferred fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from .connection import SockShareClientProtocol


class _Request(Deferred[bytes]):
    """
    A request is the Deferred handed to the caller, so it costs one object.
    The client sets every attribute before handing it out.

    @ivar payload: what to send, while the request waits for a connection;
        L{None} once written.
    @ivar sentAt: when C{request()} was called, on the client's clock (its
        timeout and its latency count from it).
    @ivar connection: the connection it was written to (L{None}: still
        waiting for one).
    @ivar requestId: its id on that connection (-1 until written).
    @ivar mark: how many chunks its connection had received when it was
        written (to tell, at its timeout, whether the connection was silent
        since).
    """

    # No __slots__: on CPython 3.13 a subclass that adds slots to a class
    # without them gets a dict of its own per instance, and every attribute
    # of the Deferred is read through it.  Without slots, the attributes
    # below share the instance keys of the Deferred's (_shareInstanceKeys).

    payload: bytes | None
    sentAt: float
    connection: SockShareClientProtocol | None
    requestId: int
    mark: int


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
    request.addBoth(lambda result: None)
    request.callback(b"")


_shareInstanceKeys()
