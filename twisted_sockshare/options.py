# -*- test-case-name: tests.test_input_checks -*-
"""
A shared client's options, documented and checked once, in one place.

Every option is checked when the client is made, with a message naming the
option and the value it was given: a wrong type is a C{TypeError}, a value
out of range (NaN included) a C{ValueError}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from .codecs import Codec, Multiplexed
from .wire import MAX_REQUEST_ID, MIN_LENGTH

#: The largest payload a frame can carry.
MAX_PAYLOAD = MAX_REQUEST_ID - MIN_LENGTH
#: The smallest C{fragmentSize}, on clients and servers.
MIN_FRAGMENT_SIZE = 1_024

_MULTIPLEXED = Multiplexed()


def _seconds(name: str, value: object, *, orNone: bool, zero: bool = False, minimum: float = 0.0) -> None:
    """
    Check that C{value} is a finite number of seconds above C{minimum} (or
    equal to it if C{zero}), or L{None} if C{orNone}.
    """
    if value is None and orNone:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        noneText = " or None" if orNone else ""
        raise TypeError(f"{name} must be a number of seconds{noneText}, not {value!r}")
    if not math.isfinite(value) or value < minimum or (value == minimum and not zero):
        relation = ">=" if zero else ">"
        hint = "; use None for no limit" if orNone and not math.isnan(value) and value > 0 else ""
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}{hint}, not {value!r}")


def _count(name: str, value: object, *, minimum: int, maximum: int | None = None, orNone: bool = False) -> None:
    """
    Check that C{value} is a whole number in C{[minimum, maximum]}, or
    L{None} if C{orNone}.
    """
    if value is None and orNone:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number{' or None' if orNone else ''}, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


def checkTimeout(timeout: object) -> Exception | None:
    """
    Why C{timeout}, a request's own timeout, is refused, or L{None} if it
    is a finite number of seconds above 0 (or L{None}: the client's).
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        return TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not 0 < timeout < math.inf:
        return ValueError(f"timeout must be a finite number > 0, or None, not {timeout!r}")
    return None


def parseEndpoint(reactor: Any, endpoint: object) -> tuple[IStreamClientEndpoint, str]:
    """
    The endpoint a client connects through, and how messages name it.

    @param endpoint: an C{IStreamClientEndpoint}, or a string for
        C{clientFromString} such as C{"tcp:127.0.0.1:9000"}.
    @return: the endpoint and its description: the string itself, or the
        endpoint's C{repr()}.
    @raise TypeError: if C{endpoint} is neither.
    @raise ValueError: if the string is not a valid client endpoint string.
    """
    if isinstance(endpoint, str):
        try:
            return clientFromString(reactor, endpoint), endpoint
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(
                f"endpoint {endpoint!r} is not a valid client endpoint string "
                f"(e.g. 'tcp:127.0.0.1:9000', 'unix:/path'): {error}"
            ) from None
    if IStreamClientEndpoint.providedBy(endpoint):
        return endpoint, repr(endpoint)
    raise TypeError(f"endpoint must be an IStreamClientEndpoint or an endpoint string, not {endpoint!r}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """
    The keyword options of L{twisted_sockshare.SockShareClientFactory}, which
    checks them by making one of these (also its C{options} attribute).
    Seconds may be given as C{int} or C{float}; L{None} means no limit where
    it is allowed.
    """

    #: Seconds to keep the connection open once the pending count has
    #: returned to zero and stayed there (a linger): the client then
    #: reconnects at most C{1 / idleTimeout} times a second, whatever the
    #: load, and an idle client holds no socket after it.  C{0} closes it as
    #: soon as the callbacks of the last response have run (a socket per
    #: request at low concurrency); L{None} keeps it open until C{close()}.
    idleTimeout: float | None = 0.5
    #: Seconds a connection attempt may take before the requests waiting on
    #: it fail with C{ConnectFailed}; L{None} leaves it to the endpoint.
    connectTimeout: float | None = 10.0
    #: Seconds from C{request()} to the reply before the request fails with
    #: C{RequestTimeout}; L{None}: no timeout.
    requestTimeout: float | None = 30.0
    #: The most requests pending at once; one more fails at once with
    #: C{TooManyPending}.
    maxPending: int = 10_000
    #: The largest payload, in bytes, sent (a larger one fails at once with
    #: C{PayloadTooLarge}) or received (a larger reply is a
    #: C{ProtocolViolation}).
    maxPayload: int = 1_048_576
    #: What a request timeout does to its connection.  L{None} (the default):
    #: with request ids (the multiplexed codec) the request alone fails and a
    #: CANCEL is sent, the connection and its other requests untouched; with
    #: an ordered (FIFO) codec the connection is reset, since a reply cannot
    #: be skipped.  C{True}: reset the connection (its other requests fail
    #: with C{ConnectionDropped}).  C{False}: never reset (ids needed).
    resetOnTimeout: bool | None = None
    #: Seconds C{close()} lets pending requests finish (then they fail with
    #: C{ClientClosed} and the connections are aborted), and seconds a
    #: connection's graceful close may take before it is aborted.
    closeTimeout: float = 10.0
    #: If not L{None}, TCP keepalive probes start after this many seconds of
    #: silence (at least 1), so a backend that vanished without closing is
    #: found in about twice that long.
    keepAlive: float | None = None
    #: How requests and replies are written and matched
    #: (L{twisted_sockshare.codecs}); this project's multiplexed frames if
    #: L{None}.  An ordered (FIFO) codec needs C{resetOnTimeout}.
    codec: Codec | None = None
    #: Seconds after which a connection takes no new requests: the next
    #: request opens a fresh connection while the old one finishes what it
    #: has, then closes.  L{None}: no limit.
    maxLifetime: float | None = None
    #: Retire a connection (as for C{maxLifetime}) once more than this many
    #: of its ids are held by requests that timed out or were cancelled and
    #: whose reply has not come yet (an id is not reused before its reply).
    #: L{None}: no limit.
    maxOrphans: int | None = 100
    #: Seconds without receiving anything on an open connection (whether
    #: requests are outstanding on it or not), after which a PING is sent;
    #: regular PINGs stop once its close has begun.  L{None}: no PING
    #: but the one sent when a request times out on a connection silent
    #: since it was written.
    pingInterval: float | None = None
    #: Seconds a PING waits for any byte before the connection is presumed
    #: dead or stuck and reset (its requests fail with C{ConnectionDropped}).
    pingTimeout: float = 10.0
    #: Seconds to wait, after the C{n}-th connect failure in a row (C{n}
    #: from 0), before the next attempt; requests meanwhile fail at once with
    #: C{ConnectFailed}.  L{None}: capped exponential with jitter (Twisted's
    #: C{backoffPolicy}: 0.1 s, doubling, up to 5 s, plus up to 0.1 s).
    connectBackoff: Callable[[int], float] | None = None
    #: Count the replies' latency in a histogram (C{latency()}, and the
    #: Prometheus collector's C{sockshare_request_duration_seconds}).  Off by
    #: default: it costs about 2,200 instructions per reply, 7% of the
    #: request path (docs/benchmarks.rst).
    latencyHistogram: bool = False
    #: Once a connection has written this many requests it takes no new
    #: ones (as for C{maxLifetime}: the next request opens a fresh
    #: connection while the old one finishes, then closes), so a server
    #: that closes a connection after a number of requests (dnsmasq after
    #: 100, nginx's C{keepalive_requests}) never drops one.  L{None}: no
    #: limit.
    maxRequestsPerConnection: int | None = None
    #: A request payload above this many bytes is sent in fragments of this
    #: size to a server that takes them (wire version 3, FRAGMENTS), so the
    #: small requests written meanwhile go out between them instead of
    #: behind the whole message; at least 1,024.  L{None}: no fragments on
    #: its connections, either way (it does not announce FRAGMENTS).
    fragmentSize: int | None = 16_384

    def __post_init__(self) -> None:
        _seconds("idleTimeout", self.idleTimeout, orNone=True, zero=True)
        _seconds("connectTimeout", self.connectTimeout, orNone=True)
        _seconds("requestTimeout", self.requestTimeout, orNone=True)
        _seconds("closeTimeout", self.closeTimeout, orNone=False)
        _seconds("keepAlive", self.keepAlive, orNone=True, zero=True, minimum=1.0)
        _seconds("maxLifetime", self.maxLifetime, orNone=True)
        _seconds("pingInterval", self.pingInterval, orNone=True)
        _seconds("pingTimeout", self.pingTimeout, orNone=False)
        if self.connectBackoff is not None and not callable(self.connectBackoff):
            raise TypeError(
                f"connectBackoff must be a function of the failure count, or None, not {self.connectBackoff!r}"
            )
        if not isinstance(self.latencyHistogram, bool):
            raise TypeError(f"latencyHistogram must be True or False, not {self.latencyHistogram!r}")
        _count("maxPending", self.maxPending, minimum=1)
        _count("maxPayload", self.maxPayload, minimum=0, maximum=MAX_PAYLOAD)
        _count("maxOrphans", self.maxOrphans, minimum=0, orNone=True)
        _count("maxRequestsPerConnection", self.maxRequestsPerConnection, minimum=1, orNone=True)
        _count("fragmentSize", self.fragmentSize, minimum=MIN_FRAGMENT_SIZE, maximum=MAX_PAYLOAD, orNone=True)
        if self.resetOnTimeout is not None and not isinstance(self.resetOnTimeout, bool):
            raise TypeError(f"resetOnTimeout must be True, False or None, not {self.resetOnTimeout!r}")
        if self.codec is None:
            object.__setattr__(self, "codec", _MULTIPLEXED)
        codec = self.codec
        assert codec is not None
        if not all(hasattr(codec, name) for name in ("ordered", "encodeRequest", "decoder")):
            raise TypeError(f"codec must have ordered, encodeRequest and decoder (see codecs.Codec), not {codec!r}")
        maxRequestId = getattr(codec, "maxRequestId", MAX_REQUEST_ID)
        if isinstance(maxRequestId, bool) or not isinstance(maxRequestId, int):
            raise TypeError(f"the codec's maxRequestId must be a whole number, not {maxRequestId!r}")
        if not 0 <= maxRequestId <= MAX_REQUEST_ID:
            raise ValueError(f"the codec's maxRequestId must be between 0 and {MAX_REQUEST_ID}, not {maxRequestId!r}")
        if codec.ordered and self.resetOnTimeout is False:
            raise ValueError(
                "resetOnTimeout=False needs a codec with request ids: with an ordered codec a reply that "
                "never comes would shift the later replies onto the wrong requests"
            )
