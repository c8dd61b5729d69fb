"""
twisted_sockshare: one shared, lazily opened, counted connection per backend.

A Twisted application that must exchange request/response messages with a
backend server over a socket makes one L{SockShareClientFactory} per backend
and calls its C{request()}; every concurrent request shares one connection,
opened on the first request and closed when none is pending.
"""

from ._version import __version__
from .balancer import SockShareBalancer
from .client import SockShareClientFactory, SockShareClientProtocol
from .context import RequestContext
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionDropped,
    DeadlineExceeded,
    InvalidRequest,
    PayloadTooLarge,
    ProtocolViolation,
    RemoteError,
    RequestRefused,
    RequestTimeout,
    SockShareError,
    TooManyPending,
)
from .hedging import Hedge
from .interfaces import ISockShareClient
from .pool import SockSharePool
from .server import SockShareServerFactory, SockShareServerProtocol

__all__ = [
    "__version__",
    "SockShareClientFactory",
    "SockShareClientProtocol",
    "ISockShareClient",
    "SockShareServerFactory",
    "SockShareServerProtocol",
    "SockSharePool",
    "SockShareBalancer",
    "Hedge",
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
    "RequestContext",
]
