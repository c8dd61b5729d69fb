"""
What every way of reaching a backend offers: the shared client, the pool's
clients, the balancer, the comparison strategies and the test doubles.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class ISockShareClient(Interface):
    """
    Something that sends a request to a backend and gives its reply.
    """

    pending = Attribute("How many requests were accepted and have not been answered or failed yet (an int).")

    def request(
        payload: bytes, idempotent: bool = False, timeout: float | None = None, waitForReady: bool = False
    ) -> Deferred[bytes]:
        """
        Send C{payload} and wait for the reply.  Never raises.

        @param idempotent: the request may be sent again if its connection
            is lost without its reply.
        @param timeout: this request's own timeout in seconds (L{None}: the
            client's C{requestTimeout}).
        @param waitForReady: wait for the backend through the connect
            backoff rather than failing at once.
        @return: a Deferred that fires once, with the reply's bytes or with
            a failure (a L{twisted_sockshare.SockShareError} subclass, or
            C{CancelledError} if the caller cancelled it).
        """

    def close() -> Deferred[None]:
        """
        Refuse new requests, let (or make) the pending ones end, and release
        every connection.

        @return: a Deferred that fires with L{None} once that is done.
        """

    def stats() -> dict[str, int]:
        """
        Counters since the client was made (see
        L{twisted_sockshare.stats.ClientStats} for the keys).
        """


__all__ = ["ISockShareClient"]
