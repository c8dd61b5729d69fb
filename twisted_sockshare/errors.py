"""
The errors a request can fail with.

Every error is a subclass of L{SockShareError}, so an application can catch
them all with one C{except} clause or one C{Failure.trap}.
"""

from __future__ import annotations


class SockShareError(Exception):
    """
    Base class of every error raised or failed with by twisted_sockshare.
    """


class ConnectFailed(SockShareError):
    """
    The connection to the backend could not be opened (refused, unreachable,
    TLS handshake refused, or C{connectTimeout} exceeded).  Every request
    waiting on that attempt fails with this; the next request tries again.
    """


class ConnectionDropped(SockShareError):
    """
    The connection was lost, or reset by the client, while the request was
    outstanding on it.  The request may or may not have reached the backend.
    """


class RequestTimeout(SockShareError):
    """
    No response arrived within C{requestTimeout} seconds.
    """


class RemoteError(SockShareError):
    """
    The backend answered the request with an ERROR frame.  The connection is
    healthy; only this request failed.  The backend's message is the
    exception's text and is also kept as L{RemoteError.remoteMessage}.
    """

    def __init__(self, remoteMessage: str) -> None:
        super().__init__(remoteMessage)
        self.remoteMessage = remoteMessage


class TooManyPending(SockShareError):
    """
    The client already has C{maxPending} outstanding requests; nothing is
    queued beyond that bound.
    """


class PayloadTooLarge(SockShareError):
    """
    A payload exceeds C{maxPayload}.  Nothing was sent.
    """


class ProtocolViolation(SockShareError):
    """
    The peer sent bytes that are not a valid frame (see the wire format); the
    connection was closed and the requests outstanding on it failed.
    """


class InvalidRequest(SockShareError, ValueError):
    """
    The client's codec cannot encode this payload (for example, it contains
    the delimiter of a line-based protocol); it was not sent.
    """


def _codecRefusal(error: Exception) -> InvalidRequest:
    """
    What a request fails with when the codec's C{encodeRequest} raised
    C{error}: the codec's own L{InvalidRequest}, or one naming the error.
    """
    if isinstance(error, InvalidRequest):
        return error
    refusal = InvalidRequest(f"the codec could not encode the request: {type(error).__name__}: {error}")
    refusal.__cause__ = error
    return refusal


class ClientClosed(SockShareError):
    """
    The client was closed with C{close()}; it takes no new requests.
    """


class RequestRefused(SockShareError):
    """
    The server refused the request (REFUSED, wire version 3): its handler
    was never called, so it is safe to send again, anywhere; the client
    already did so once, within its retry budget.
    """


class DeadlineExceeded(SockShareError, TimeoutError):
    """
    On a server: the caller's deadline passed before or while the request's
    handler ran; the request is answered with an ERROR saying so.
    """


__all__ = [
    "SockShareError",
    "ConnectFailed",
    "ConnectionDropped",
    "RequestTimeout",
    "RemoteError",
    "TooManyPending",
    "PayloadTooLarge",
    "ProtocolViolation",
    "ClientClosed",
    "InvalidRequest",
    "RequestRefused",
    "DeadlineExceeded",
]
