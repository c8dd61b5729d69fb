# -*- test-case-name: tests.test_wire_v3 -*-
"""
What a server's handler may know about the request it serves besides its
bytes: the caller's deadline (L{RequestContext}).
"""

from __future__ import annotations

from contextvars import ContextVar

from twisted.internet.interfaces import IReactorTime


class RequestContext:
    """
    The request a handler is serving, as its caller sent it.

    A handler reads it with L{RequestContext.current}: in its own body (a
    plain function, an C{async def}, an C{inlineCallbacks} generator), so
    that it can give its own backends only what is left of its caller's
    budget::

        async def handler(payload: bytes) -> bytes:
            left = RequestContext.current().remaining()
            return await backend.request(payload, timeout=left)

    @ivar deadline: when the caller stops waiting, in the server reactor's
        seconds (C{reactor.seconds()}), or L{None}: the caller sent no
        budget (it has no timeout, or speaks wire version 2).
    """

    __slots__ = ("deadline", "_clock")

    def __init__(self, deadline: float | None, clock: IReactorTime | None = None) -> None:
        """
        @param deadline: see L{deadline}.
        @param clock: the server's clock, which L{remaining} reads; needed
            with a deadline.
        """
        if deadline is not None and clock is None:
            raise ValueError("a RequestContext with a deadline needs the clock it is on")
        self.deadline = deadline
        self._clock = clock

    def __repr__(self) -> str:
        return f"<RequestContext deadline={self.deadline!r}>"

    def remaining(self) -> float | None:
        """
        Seconds left before the caller's deadline (0.0 once it passed), or
        L{None} if the caller sent none.
        """
        if self.deadline is None or self._clock is None:
            return None
        return max(0.0, self.deadline - self._clock.seconds())

    @classmethod
    def current(cls) -> RequestContext:
        """
        The context of the request being served: in a handler's body, that
        request's; elsewhere, or for a request sent without a budget, one
        whose C{deadline} is L{None}.
        """
        return _current.get()


_NONE = RequestContext(None)
_current: ContextVar[RequestContext] = ContextVar("twisted_sockshare.RequestContext", default=_NONE)

__all__ = ["RequestContext"]
