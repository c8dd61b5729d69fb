"""
The server's request path alone, without sockets or a reactor: a client
with C{N} callers sends a chunk of N request frames a round, and the server
answers them into a L{StringTransport}.

It prints CPU microseconds per request for the library's server with its
default options and an identity handler (C{server}) and for
C{minimal-server}, the simplest correct hand-written server, measured side
by side, best of C{--repeat} runs; the C{-1} cases get one request a chunk,
the C{-1000} cases a thousand.  For figures that do not depend on the
machine's load, C{benchmarks/instructions.py} runs it under callgrind.

    python benchmarks/server_path.py [--rounds 2000] [--repeat 5] [--profile server]
    python benchmarks/server_path.py --run server:250 --run minimal-server:50
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import request_path  # this directory's: the same command line
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.bench.backend import MinimalServerProtocol
from twisted_sockshare.wire import REQUEST, encodeFrame

#: A clock read as a real reactor's is, whose timers never run.
RealTimeClock = request_path.RealTimeClock


def _identity(payload: bytes) -> bytes:
    return payload


def drive(protocol: Protocol, rounds: int, callers: int) -> float:
    """
    CPU microseconds per request for C{rounds} chunks of C{callers} requests.
    """
    transport = StringTransport()
    protocol.makeConnection(transport)
    payload = b"x" * 64
    chunk = b"".join(encodeFrame(requestId, REQUEST, payload) for requestId in range(callers))
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        protocol.dataReceived(chunk)
        transport.clear()
    return (time.process_time() - start) / (rounds * callers) * 1e6


def server(rounds: int, callers: int = 100) -> float:
    """
    The library's server, default options, an identity handler.
    """
    factory = SockShareServerFactory(_identity, clock=RealTimeClock())
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    return drive(protocol, rounds, callers)


def minimal(rounds: int, callers: int = 100) -> float:
    return drive(MinimalServerProtocol(RealTimeClock(), 0.0), rounds, callers)


CASES: dict[str, Callable[[int], float]] = {
    "minimal-server": minimal,
    "server": server,
    "minimal-server-1": lambda rounds: minimal(rounds * 100, callers=1),
    "server-1": lambda rounds: server(rounds * 100, callers=1),
    "minimal-server-1000": lambda rounds: minimal(max(1, rounds // 10), callers=1000),
    "server-1000": lambda rounds: server(max(1, rounds // 10), callers=1000),
}

#: The floor each case is compared with: minimal-server, with the same callers.
FLOORS = {name: "minimal-server" + name.removeprefix("minimal-").removeprefix("server") for name in CASES}


if __name__ == "__main__":
    request_path.main(CASES, FLOORS)
